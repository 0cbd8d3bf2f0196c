"""The CLI's usage errors (bad option values, unknown options or commands) and segml's warnings
as one line, as its errors are shown."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import typer
from typer._click.core import Context  # typer vendors click
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from segml.errors import SegmlWarning


class _UsageLine(UsageError):
    """A usage error shown as segml shows every error: one line, naming the command."""

    def show(self, file: Any = None) -> None:
        where = f"{self.ctx.command_path}: " if self.ctx else ""
        message = " ".join(self.format_message().split())
        typer.echo(f"segml: error: {where}{message} (see --help)", err=True)


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    try:
        yield
    except NoArgsIsHelpError:
        raise  # plain `segml` shows the help
    except UsageError as exc:
        raise _UsageLine(exc.format_message(), exc.ctx) from None


class OneLineUsage(TyperGroup):
    """The command group, its usage errors (bad option values, unknown options or commands)
    turned from click's usage block into one line; the exit code stays 2."""

    def make_context(self, *args: Any, **kwargs: Any) -> Context:
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Context) -> Any:
        with _one_line_usage():
            return super().invoke(ctx)


_python_warning = warnings.formatwarning


def one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    """A ``SegmlWarning`` as one line, as errors are shown; other warnings as Python shows them."""
    if issubclass(category, SegmlWarning):
        return f"segml: warning: {message}\n"
    return _python_warning(message, category, filename, lineno, line)
