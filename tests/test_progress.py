"""The progress line: count, rate, elapsed time and time left, redrawn in place."""
from __future__ import annotations

import io

from fidfast.progress import Progress, clock


def test_clock():
    assert [clock(s) for s in (0, 59.6, 61, 3599, 3600, 90061)] == ["0:00", "1:00", "1:01", "59:59", "1:00:00",
                                                                     "25:01:01"]


def test_line_shows_rate_elapsed_and_time_left():
    bar = Progress("fidfast real/", 50_000, enabled=False)
    bar.update(1200)
    line = bar.line(bar._start + 3.0)
    assert line == "fidfast real/: 1200/50000 images, 400.0 img/s, 0:03 elapsed, 2:02 left"
    bar.update(48_800)
    assert bar.line(bar._start + 125.0) == "fidfast real/: 50000/50000 images, 400.0 img/s, 2:05 elapsed"
    unknown = Progress("fidfast image batches", None, enabled=False)
    unknown.update(10)
    assert unknown.line(unknown._start + 2.0) == "fidfast image batches: 10 images, 5.0 img/s, 0:02 elapsed"


def test_draws_only_when_enabled_and_ends_the_line():
    quiet, shown = io.StringIO(), io.StringIO()
    for stream, enabled in ((quiet, False), (shown, True)):
        bar = Progress("x", 3, enabled, stream)
        bar.update(3)
        bar.close()
    assert quiet.getvalue() == ""
    assert shown.getvalue().startswith("\rx: 3/3 images") and shown.getvalue().endswith("\n")
