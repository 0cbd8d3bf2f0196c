"""The CLI's usage errors (bad option values, unknown options or commands) as one line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
from typer._click.core import Context  # typer vendors click
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup


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
