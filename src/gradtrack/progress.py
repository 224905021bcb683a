"""A progress bar for long runs that stays silent when stderr is not a terminal."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, enabled: bool = True):
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="step", leave=False)
        return self

    def update(self, n: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix(loss=f"{loss:.6g}")

    def __exit__(self, *exc) -> bool:
        if self._bar is not None:
            self._bar.close()
        return False
