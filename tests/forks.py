"""A process that imports segml once and runs each ``segml`` command in a fork of itself, so
that a test can kill and rerun dozens of commands without paying Python's start-up for each.

Run as ``python -m tests.forks``. Each line on stdin is a JSON list of jobs to run at once;
for each line it writes back a JSON list of their exit statuses (negative: the signal that
ended the job). A job is a dict:

- ``argv``: the ``segml`` arguments; ``log``: the file for its stdout and stderr;
- ``die``: ``[target, n, "before" | "after"]``: the job SIGKILLs itself right before or after
  its n-th call of ``target`` (``module:Class.method`` or ``module:function``), a step
  boundary named by what the command calls, so the same job runs on any version of segml;
- ``kill_after``: seconds after its start at which this process SIGKILLs it (a random moment);
- ``start_at``: the ``time.time()`` at which it starts (jobs that race each other).

Nothing numeric runs here before a fork (a forked OpenMP runtime would hang), and each job
ends with ``os._exit``, so no job runs this process's clean-up.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import time
from typing import Any

PRELOADED = (
    "segml.cli",
    "segml.experiment",
    "segml.registry",
    "segml.scoring",
    "alembic.command",
    "alembic.config",
    "email.policy",
    "git",
    "jinja2",
    "matplotlib.backends.backend_agg",
    "matplotlib.pyplot",
    "mlflow.models.display_utils",
    "mlflow.pyfunc",
    "mlflow.pyfunc.scoring_server",
    "mlflow.store.model_registry.sqlalchemy_workspace_store",
    "mlflow.store.tracking.sqlalchemy_workspace_store",
    "mlflow.tracing.processor.otel",
    "narwhals",
    "optuna.storages._rdb.models",
    "pandas.io.formats.style",
    "PIL.PngImagePlugin",
    "sqlalchemy.dialects.sqlite",
)
"""What a command imports lazily, imported once here instead of in every job."""


def die_at(target: str, n: int, when: str) -> None:
    """Make this process SIGKILL itself right ``when`` (before/after) its n-th call of
    ``target``."""
    module, _, path = target.partition(":")
    owner: Any = importlib.import_module(module)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, name)
    calls = [0]

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls[0] == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, dying)


def _job(job: dict[str, Any]) -> None:
    """The forked child: run one segml command, then leave without any clean-up."""
    code = 1
    try:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if "die" in job:
            die_at(*job["die"])
        time.sleep(max(0.0, job.get("start_at", 0.0) - time.time()))
        from segml.cli import main

        sys.argv = ["segml", *job["argv"]]
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # reported in the job's log
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def run(jobs: list[dict[str, Any]]) -> list[int]:
    """Fork one child per job, kill those with ``kill_after`` on time, and wait for all."""
    started = time.monotonic()
    children = []
    for job in jobs:
        pid = os.fork()
        if pid == 0:
            _job(job)
        children.append(pid)
    deadlines = {
        pid: started + job["kill_after"]
        for pid, job in zip(children, jobs, strict=True)
        if "kill_after" in job
    }
    statuses: dict[int, int] = {}
    while len(statuses) < len(children):
        for pid in children:
            if pid in statuses:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[pid] = os.waitstatus_to_exitcode(status)
            elif pid in deadlines and time.monotonic() >= deadlines[pid]:
                os.kill(pid, signal.SIGKILL)
                del deadlines[pid]
        time.sleep(0.005)
    return [statuses[pid] for pid in children]


def main() -> None:
    """Preload, then run each line of jobs from stdin."""
    for module in PRELOADED:
        importlib.import_module(module)
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
