"""segml's error and warning types; each error carries the CLI exit code a scheduler acts on."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_EMERGING = 4


class SegmlError(Exception):
    """Base class of every error segml raises on purpose; ``exit_code`` is what the CLI returns."""

    exit_code: int = EXIT_FAILURE


class SpecError(SegmlError):
    """The experiment spec is missing, malformed or inconsistent with the data."""

    exit_code = EXIT_BAD_INPUT


class DataError(SegmlError):
    """An input file cannot be read or fails validation."""

    exit_code = EXIT_BAD_INPUT


class RegistryError(SegmlError):
    """A model reference cannot be resolved or a registry action is not allowed."""

    exit_code = EXIT_BAD_INPUT


class ModelFormatError(RegistryError):
    """A segment model saved in another model format than this segml reads."""


class EngineError(SegmlError):
    """A scoring engine cannot start (``--engine spark`` without pyspark or Java)."""

    exit_code = EXIT_BAD_INPUT


class GateFailed(SegmlError):
    """A review gate failed, so the action (for example a promotion) was refused."""

    exit_code = EXIT_GATE_FAILED


class DriftAlert(SegmlError):
    """``score --fail-on-emerging``: emerging segments or drift above the spec's thresholds."""

    exit_code = EXIT_EMERGING


class SegmlWarning(UserWarning):
    """Something the user should know about that did not stop the run.

    Silence it with ``warnings.filterwarnings("ignore", category=segml.SegmlWarning)``.
    """
