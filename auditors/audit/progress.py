"""Progress on stderr for long audits: images done / total, rate and ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Prints one line per update (no carriage-return tricks: logs of nightly runs stay readable)."""

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None, label: str = "images"):
        self.total = total
        self.done = 0
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.label = label
        self.start = time.perf_counter()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta_s = format_duration(eta) if eta == eta else "?"
        return f"[camaudit] {self.done}/{self.total} {self.label} ({pct:.0f}%) {rate:.1f} img/s, ETA {eta_s}"

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            print(f"[camaudit] done: {self.done} {self.label} in {format_duration(elapsed)}", file=self.stream, flush=True)
