"""Writes that a reader sees whole or not at all, the exclusive write that never replaces a file, and the
SHA-256 sidecar that catches a damaged cache file."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest

from fidfast import files


def test_atomic_write_replaces_whole_with_a_plain_files_permissions(tmp_path):
    dst = tmp_path / "sub" / "f.bin"
    old = os.umask(0o022)
    try:
        files.atomic_write(dst, lambda tmp: open(tmp, "wb").write(b"first"))
        files.atomic_write(dst, lambda tmp: open(tmp, "wb").write(b"second"))
    finally:
        os.umask(old)
    assert dst.read_bytes() == b"second" and stat.S_IMODE(dst.stat().st_mode) == 0o644
    assert sorted(p.name for p in dst.parent.iterdir()) == ["f.bin"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    dst = tmp_path / "f.bin"
    dst.write_bytes(b"old")

    def fails(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(dst, fails)
    assert dst.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_an_exclusive_write_never_replaces_a_file(tmp_path):
    dst = tmp_path / "f.npz"
    files.atomic_write(dst, lambda tmp: open(tmp, "wb").write(b"mine"), exclusive=True)
    with pytest.raises(FileExistsError):
        files.atomic_write(dst, lambda tmp: open(tmp, "wb").write(b"theirs"), exclusive=True)
    assert dst.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["f.npz"]


def test_the_sidecar_catches_a_damaged_file(tmp_path):
    dst = tmp_path / "w.pth"
    files.atomic_write(dst, lambda tmp: open(tmp, "wb").write(b"weights" * 100), sidecar=True)
    assert files.is_intact(dst)
    assert (tmp_path / "w.pth.sha256").read_text() == hashlib.sha256(b"weights" * 100).hexdigest()
    assert files.file_digest(dst) == hashlib.sha256(b"weights" * 100).hexdigest()
    dst.write_bytes(b"weights" * 99 + b"damaged")
    assert not files.is_intact(dst)
    (tmp_path / "w.pth.sha256").unlink()
    assert not files.is_intact(dst)


def test_the_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert files.cache_dir() == tmp_path / "fidfast"
