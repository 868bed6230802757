"""Progress bars that suit where they are shown.

On a terminal this is a tqdm bar, redrawn in place. Anywhere else (a log file, a pipe, CI) a redrawn
bar is a stream of carriage returns, so the same calls print one plain line each time another
`every` share of the work is done, and one at the end:

    ops local-cpu: 120/480 op (25%), 14 s, 8.6 op/s, uploading
"""
from __future__ import annotations

import sys
import time
from typing import IO, Any


def progress_bar(total: int, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0,
                 position: int | None = None, file: IO[str] | None = None, every: float = 0.1):
    """A tqdm bar on a terminal, plain lines otherwise; nothing when not `enabled` or there is no work."""
    stream = file if file is not None else sys.stderr
    if not enabled or total <= 0:
        from tqdm import tqdm

        return tqdm(total=total, disable=True)
    if _isatty(stream):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, position=position, leave=True,
                    dynamic_ncols=True, file=stream)
    return LineProgress(total, desc, unit, initial=initial, file=stream, every=every)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """The part of tqdm's interface edgenas uses, printing whole lines (no carriage returns)."""

    def __init__(self, total: int, desc: str, unit: str = "it", *, initial: int = 0, file: IO[str] | None = None,
                 every: float = 0.1):
        self.total, self.desc, self.unit, self.n, self.initial = int(total), desc, unit, int(initial), int(initial)
        self.file = file if file is not None else sys.stderr
        self.step = max(1, int(self.total * every))
        self.next = (self.n // self.step + 1) * self.step
        self.postfix = ""
        self.start = time.perf_counter()
        self.closed = False
        self.printed_at = None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self.next or self.n >= self.total:
            self.next = (self.n // self.step + 1) * self.step
            self._line()

    def set_postfix(self, ordered: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered or {}), **kwargs}
        self.postfix = ", ".join(f"{k} {v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed and self.printed_at != self.n:
            self._line()
        self.closed = True

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self) -> None:
        seconds = time.perf_counter() - self.start
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        done = self.n - self.initial
        rate = f", {done / seconds:.1f} {self.unit}/s" if seconds > 0 and done else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {seconds:.0f} s{rate}{tail}",
              file=self.file, flush=True)
        self.printed_at = self.n
