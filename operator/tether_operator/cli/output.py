"""Where the CLI writes: a rich console for stdout and one for stderr.

Tables are never wrapped or cut when the output is a pipe or a file, so scripts
and tests see whole lines; a terminal gets colours and its own width.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, RenderableType
from rich.text import Text

PIPE_WIDTH = 240
"""Line width used when stdout is not a terminal (rich would otherwise use 80)."""


def make_console(stream: TextIO) -> Console:
    """A console for `stream`: terminal width on a TTY, a wide plain one otherwise."""
    is_tty = stream.isatty()
    return Console(
        file=stream,
        width=None if is_tty else PIPE_WIDTH,
        no_color=not is_tty,
        highlight=False,
        soft_wrap=False,
        emoji=False,
    )


@dataclass
class Output:
    """The two consoles a command prints to."""

    out: Console = field(default_factory=lambda: make_console(sys.stdout))
    err: Console = field(default_factory=lambda: make_console(sys.stderr))

    def print(self, renderable: RenderableType) -> None:
        """Print to stdout; in a pipe, without the padding rich leaves at line ends.

        A plain string is printed as is (no rich markup): names may contain brackets.
        """
        if isinstance(renderable, str):
            renderable = Text(renderable)
        if self.out.is_terminal:
            self.out.print(renderable)
            return
        with self.out.capture() as captured:
            self.out.print(renderable)
        lines = captured.get().splitlines()
        self.out.file.write("".join(line.rstrip() + "\n" for line in lines))
        self.out.file.flush()

    def json(self, text: str) -> None:
        """Print JSON exactly as given (no markup, no highlighting, no wrapping)."""
        self.out.file.write(text + "\n")
        self.out.file.flush()
