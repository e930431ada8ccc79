"""What a run prints, and where: stdout, the run's ``train.log``, and a live progress line.

* **Lines** -- the header, one summary per epoch, the final summary -- go to stdout
  and are appended to ``train.log`` in the run directory. So ``gmsop train > out.txt``,
  ``gmsop train | tee out.txt`` and the run folder itself all keep the whole record.
* **Notes** -- an interruption, a divergence -- go to stderr and to ``train.log``.
* **The progress line** (``epoch 2/5 [######......] 45/93 loss 0.377 err 0.101 | 121 img/s |
  epoch 0:12, run 1:34 left``) is redrawn in place on stderr, and only when stderr is a
  terminal: a pipe or a file never receives carriage-return frames. ``--no-progress``
  turns it off on a terminal too.

No third-party progress library is needed: the line is a few ANSI-free characters,
rewritten after a carriage return, at most ten times a second.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

__all__ = ["Console", "progress_bar", "format_duration"]


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``.

    >>> format_duration(75.4), format_duration(3725)
    ('1:15', '1:02:05')
    """
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_bar(done: int, total: int, width: int = 12) -> str:
    """``[#####.......]``: the fraction ``done / total`` in ``width`` cells.

    >>> progress_bar(1, 4, 8)
    '[##......]'
    """
    filled = 0 if total <= 0 else min(width, int(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class Console:
    """The output of one run (see the module docstring).

    log_path : the run's ``train.log`` (appended to; None: no log file)
    progress : draw the progress line (it is drawn only if stderr is a terminal, too)
    min_interval : seconds between two redraws of the progress line
    """

    def __init__(self, log_path=None, progress: bool = True, min_interval: float = 0.1):
        self.log_path, self.min_interval = log_path, float(min_interval)
        self.live = bool(progress) and _is_terminal(sys.stderr)
        self._shown, self._last_draw = False, -float("inf")

    # ----- lines -------------------------------------------------------------------------------
    def line(self, text: str) -> None:
        """A line for the record: stdout and train.log."""
        self.log(text)  # first: the record survives a closed stdout
        self.clear()
        print(text, file=sys.stdout, flush=True)

    def note(self, text: str) -> None:
        """A message about the run's course (interrupted, diverged): stderr and train.log."""
        self.log(text)
        self.clear()
        print(text, file=sys.stderr, flush=True)

    def log(self, text: str) -> None:
        """Append ``text`` to train.log only."""
        if self.log_path is None:
            return
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(text.rstrip("\n") + "\n")

    def log_start(self, what: str) -> None:
        """A dated separator in train.log: each ``fit`` (a start or a resume) begins with one."""
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        self.log(f"----- {stamp} {what}")

    # ----- the progress line ---------------------------------------------------------------------
    def show(self, text: str, force: bool = False) -> None:
        """Redraw the progress line (throttled; ``force`` draws now)."""
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.min_interval:
            return
        width = _columns() - 1
        sys.stderr.write("\r" + text[:width].ljust(width) + "\r")
        sys.stderr.flush()
        self._shown, self._last_draw = True, now

    def clear(self) -> None:
        """Erase the progress line (before a line is printed, and at the end)."""
        if self._shown:
            sys.stderr.write("\r" + " " * (_columns() - 1) + "\r")
            sys.stderr.flush()
            self._shown = False
            self._last_draw = -float("inf")


def _columns() -> int:
    """The width of the terminal the progress line is drawn on (stderr's; $COLUMNS wins; else 80)."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
