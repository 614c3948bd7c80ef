"""Warnings name the caller's own line (not fidfast's) and read as sentences about the input."""
from __future__ import annotations

import warnings

import fidfast

from .helpers import FAST, make_rng, write_images


def test_warnings_point_at_the_callers_line_and_read_well(tmp_path):
    paths = write_images(tmp_path / "d", make_rng("warnings"), [(30, 30)] * 3)
    (tmp_path / "d" / "bad.png").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fidfast.calculate_fid(tmp_path / "d", [str(p) for p in paths], skip_bad_images=True, **FAST)
    assert len(caught) == 3, [str(w.message) for w in caught]
    for w in caught:
        assert w.filename == __file__, (w.filename, str(w.message))
        assert " has " not in str(w.message)
    messages = [str(w.message) for w in caught]
    assert messages[0] == f"fidfast: {tmp_path / 'd'}: skipped 1 unreadable image(s)"
    assert messages[1].startswith(f"fidfast: {tmp_path / 'd'}: 3 images, fewer than dims=64: ")
    assert messages[2].startswith("fidfast: 3 files: 3 images, fewer than dims=64: ")
