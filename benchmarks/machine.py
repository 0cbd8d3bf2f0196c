"""What every benchmark states beside its figures: the machine and how busy it was."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def machine() -> str:
    """Cores, CPU model and Python version."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def load_average() -> str:
    """The 1-minute load average (other jobs on a shared machine)."""
    return f"{os.getloadavg()[0]:.1f}"


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB).

    Linux's ``ru_maxrss`` keeps the parent's peak across fork and exec, so a child started by a
    benchmark that has just written a large input would report the parent's memory; the
    address space's own high-water mark (``VmHWM``) starts afresh at exec.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    scale = 1024 if platform.system() == "Darwin" else 1  # bytes on macOS, kilobytes elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / scale
