"""Terminal edge: Rich consoles, logging set-up, progress bars and exit-code mapping.

Only the CLI imports this module; the library logs through ``logging`` and never prints.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from enum import IntEnum

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from datacheck.errors import DatacheckError

# Not a terminal (a CI log, a pipe, a file): no line breaks inserted into text, so a path or a command
# printed on one line stays one line that can be copied; tables are still laid out to the width.
console = Console(soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())

_STAGE_LABELS = {
    "hash": "Reading files",
    "cache": "Reading the cache",
    "embed": "Embedding",
    "import": "Importing from Ray",
}


class ExitCode(IntEnum):
    """Documented process exit codes (see docs/cli.md)."""

    OK = 0
    GATE_FAILED = 1
    USAGE = 2
    DATASET_UNREADABLE = 3

    @staticmethod
    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        """Turn :class:`DatacheckError` into a one-line message on stderr and its exit code."""
        try:
            yield
        except DatacheckError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)  # [..] is text here
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: cached work is kept; run the same command again to resume")
            raise typer.Exit(130) from None


def setup_logging(*, quiet: bool = False, verbose: int = 0) -> None:
    """Route library logging to stderr through Rich; ``-v`` shows info, ``-vv`` debug."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = RichHandler(console=err_console, show_path=verbose >= 2, show_time=verbose >= 2)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    # TensorFlow's C++ logging is silenced unless the user asked for debug output.
    import os

    if verbose < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    else:
        os.environ["DATACHECK_NATIVE_LOGS"] = "1"


class _RichProgress:
    """Adapts the library's ``progress(stage, done, total)`` callback to Rich tasks."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(_STAGE_LABELS.get(stage, stage), total=total)
        self._progress.update(self._tasks[stage], completed=done, total=total)


@contextlib.contextmanager
def progress_reporter(*, quiet: bool = False) -> Iterator[_RichProgress | None]:
    """A progress callback showing rate and ETA, or ``None`` when quiet or not on a terminal."""
    if quiet or not err_console.is_terminal:  # a log gets no bars (and no stray blank line when they end)
        yield None
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as progress:
        yield _RichProgress(progress)


class _RateColumn(TextColumn):
    """Images per second, blank until Rich has a speed estimate."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} img/s", style="cyan")
