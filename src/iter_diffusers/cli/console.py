"""How ``iter-sr`` reports: its errors, one-line messages, and a console that does not break the progress bar."""

from __future__ import annotations

import sys

PROG = "iter-sr"


class UsageError(Exception):
    """Something wrong with the command line or the model: one line on stderr, exit status 2."""


class ImageError(Exception):
    """A problem with one image file: one line on stderr, the other files go on."""


def one_line(text: object, limit: int = 500) -> str:
    """``text`` on one line of at most ``limit`` characters: white space folded, the end cut off with "..."."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Console:
    """Messages that do not break the progress bar; errors and warnings on stderr."""

    def __init__(self, quiet: bool, show_info: bool = True):
        self.quiet = quiet
        self.show_info = show_info and not quiet

    @staticmethod
    def _write(message: str, stream) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=stream)

    def info(self, message: str) -> None:
        if self.show_info:
            self._write(message, sys.stdout)

    def warning(self, message: str) -> None:
        self._write(f"{PROG}: warning: {message}", sys.stderr)

    def error(self, message: str) -> None:
        self._write(f"{PROG}: error: {one_line(message, limit=2000)}", sys.stderr)
