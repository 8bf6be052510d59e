"""Where the command's output goes, so that it reads the same on a terminal, in a pipe and in a file.

rich sizes tables to the terminal it finds on any standard stream, and to 80 columns without one:
piped through `grep` or redirected to a file, a listing would lose the ends of its names. When the
stream a console writes to is not a terminal, the consoles here are as wide as the content needs
and do not wrap. `--json` output bypasses rich entirely (`print_json`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console, ConsoleDimensions

# Wide enough for any table this tool prints; rich sizes a table to its content, not to this.
UNBOUNDED_WIDTH = 10_000


class OutputConsole(Console):
    """A rich Console that sizes to its own stream: the terminal's width, or unbounded off one.

    The stream is looked up at each write (rich's default), so tests that swap sys.stdout see it."""

    @property
    def size(self) -> ConsoleDimensions:
        if self.is_terminal:  # off a terminal even COLUMNS does not cut a listing
            return super().size
        return ConsoleDimensions(UNBOUNDED_WIDTH, super().size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


def output_console(*, stderr: bool = False) -> OutputConsole:
    return OutputConsole(stderr=stderr, highlight=False)


console = output_console()
err_console = output_console(stderr=True)


def print_json(data: Any) -> None:
    """Machine-readable output for scripts: plain JSON on stdout and nothing else on it."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
