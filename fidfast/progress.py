"""A dependency-free progress line on stderr (images done, rate), redrawn at most twice a second."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    def __init__(self, label: str, total: Optional[int], enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.label, self.total, self.enabled, self.stream = label, total, enabled, stream
        self.done = 0
        self._start = self._last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and now - self._last >= 0.5:
            self._last = now
            self._draw(now)

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._start, 1e-9)
        total = f"/{self.total}" if self.total is not None else ""
        self.stream.write(f"\r{self.label}: {self.done}{total} images, {rate:.1f} img/s")
        self.stream.flush()
