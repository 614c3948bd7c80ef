"""A dependency-free progress line on stderr: images done, rate, elapsed time and time left."""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour on."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts images and redraws one line at most twice a second while ``enabled``.

    With a known ``total`` the line ends with the time left at the rate so far: ``fidfast real/:
    1200/50000 images, 350.2 img/s, 0:03 elapsed, 2:19 left``.
    """

    def __init__(self, label: str, total: Optional[int], enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.label, self.total, self.enabled, self.stream = label, total, enabled, stream
        self.done = 0
        self._start = self._last = time.perf_counter()
        self._width = 0  # of the longest line drawn: a shorter one is padded over it

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

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done}" + (f"/{self.total}" if self.total is not None else "")
        text += f" images, {rate:.1f} img/s, {clock(elapsed)} elapsed"
        if self.total is not None and self.done < self.total:
            text += f", {clock((self.total - self.done) / rate)} left" if rate > 0 else ", time left unknown"
        return text

    def _draw(self, now: float) -> None:
        text = self.line(now)
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
