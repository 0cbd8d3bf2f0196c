"""The contract every scoring engine keeps, so that the front drives them all alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from segml.model import Segmenter
from segml.monitoring import Emerging
from segml.registry import ModelRef
from segml.scoring._clean import Signature
from segml.scoring._collect import Collected
from segml.spec import Spec


@dataclass(frozen=True, slots=True)
class Job:
    """One scoring run's inputs, settled before any engine starts.

    ``spec`` is the spec in effect: the caller's, else the model's own. ``customers`` is the
    batch's attribute table, for a transaction model that needs one.
    """

    segmenter: Segmenter
    signature: Signature
    spec: Spec
    model: ModelRef
    input_path: Path
    files: tuple[Path, ...]
    output: Path
    previous: Path | None
    customers: Path | None = None

    @property
    def model_name(self) -> str:
        """The model name every output row carries."""
        return self.model.name or self.segmenter.spec.model_name


@dataclass(frozen=True, slots=True)
class Staged:
    """What an engine read, scored and set aside while staging the output."""

    rows_read: int
    rows_scored: int
    rows_quarantined: int
    quarantined: dict[str, int]
    excluded: dict[str, int]
    ignored_columns: tuple[str, ...]
    missing: dict[str, int]
    unseen: dict[str, int]


class Engine(Protocol):
    """A way to score: the front calls ``check``, then, in a staging folder beside the output,
    ``stage``, ``collect``, ``finish``, ``close`` (always) and ``publish``."""

    def check(self, job: Job) -> None:
        """Refuse, before any work, an input or output this engine cannot handle."""

    def stage(self, job: Job, folder: Path) -> Staged:
        """Read, check and score the input; stage the scores and bad rows in ``folder``."""

    def collect(self) -> Collected:
        """What the monitoring needs from the customers scored."""

    def finish(self, emerging: Emerging) -> None:
        """Give the staged output the novel customers' emerging ids."""

    def close(self) -> None:
        """Release what staging holds (threads, files); raise a failure to write."""

    def publish(self, output: Path) -> Path | None:
        """Move the staged output into place; return the quarantine file, if any."""
