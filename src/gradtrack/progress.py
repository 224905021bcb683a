"""Progress of a long run: a bar on a terminal; elsewhere (a batch job's log, nohup, CI)
a plain line every LINE_SECONDS, so that a run of minutes does not look hung."""

from __future__ import annotations

import sys
import time

# Without a terminal: seconds between progress lines (none for a run shorter than this).
LINE_SECONDS = 30.0


class Progress:
    def __init__(self, total: int, enabled: bool = True, label: str | None = None):
        self.total = total
        self.enabled = enabled
        self.label = label  # a sweep's job, e.g. "lr=0.1"
        self._bar = None
        self._lines = enabled and not sys.stderr.isatty()
        self._done = 0

    def __enter__(self) -> Progress:
        if self.enabled and not self._lines:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="epoch", leave=False)
        self._start = self._last = time.monotonic()
        return self

    def update(self, n: int, loss: float) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix(loss=f"{loss:.6g}")
        elif self._lines and time.monotonic() - self._last >= LINE_SECONDS:
            self._last = time.monotonic()
            print(self.line(loss, self._last - self._start), file=sys.stderr, flush=True)

    def line(self, loss: float, seconds: float) -> str:
        """``gradtrack: epoch 1,200,000 of 10,000,000 (12%), loss 10.85, 40,000 epochs/s,
        about 3 min 40 s left``."""
        rate = self._done / seconds if seconds > 0 else 0.0
        left = (self.total - self._done) / rate if rate > 0 else float("nan")
        job = f"job {self.label}: " if self.label else ""
        return (
            f"gradtrack: {job}epoch {self._done:,} of {self.total:,} "
            f"({100 * self._done / self.total:.0f}%), loss {loss:.6g}, "
            f"{rate:,.0f} epochs/s, about {_duration(left)} left"
        )

    def __exit__(self, *exc) -> bool:
        if self._bar is not None:
            self._bar.close()
        return False


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: no rate yet
        return "? s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
