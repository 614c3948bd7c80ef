"""Writes that a reader sees whole or not at all, the exclusive write that never replaces a file, the
SHA-256 sidecar that catches a damaged cache file, and writes that fail part-way on real file systems (a
tmpfs of a few KiB; a read-only one): no partial file is left, nothing aborts or prints a traceback, and
a cache that cannot be written costs one warning, not the result."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess

import pytest

from fidfast import files

from .helpers import assert_one_line_error, fidfast_cli


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


def _mount(path, *options: str):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=64k", *options]), "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    return path


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, nearly filled: a few KiB are left."""
    disk = _mount(tmp_path / "full")
    (disk / "filler").write_bytes(b"\0" * (60 << 10))
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def read_only(tmp_path):
    disk = _mount(tmp_path / "ro", "ro")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _leftovers(folder) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "filler")


def test_a_write_that_fills_the_disk_leaves_nothing(full_disk):
    with pytest.raises(OSError) as caught:
        files.atomic_write(full_disk / "big.bin", os.urandom(200 << 10), sidecar=True)
    assert caught.value.errno == 28  # ENOSPC
    assert _leftovers(full_disk) == []


@pytest.mark.parametrize("disk", ["full_disk", "read_only"])
def test_a_cache_that_cannot_be_written_costs_one_warning_not_the_result(disk, request, image_dirs, tmp_path):
    # weights converted into it (87 MB), the compiled network, the statistics: each write fails
    cache = request.getfixturevalue(disk)
    env = {"XDG_CACHE_HOME": str(cache), "TORCH_HOME": str(tmp_path / "torch")}
    proc = fidfast_cli(*image_dirs, "--dims", "64", "--device", "cpu", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["fid"] > 0
    about_cache = [line for line in proc.stderr.splitlines() if "cache" in line]
    assert len(about_cache) == 1 and "cannot write to the cache" in about_cache[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _leftovers(cache) == []
    expected = json.loads(fidfast_cli(*image_dirs, "--dims", "64", "--device", "cpu", "--json", check_rc=0).stdout)
    assert json.loads(proc.stdout)["fid"] == expected["fid"]


def test_save_stats_on_a_full_disk_is_one_error_and_no_file(full_disk, image_dirs):
    proc = fidfast_cli(image_dirs[0], full_disk / "out.npz", "--save-stats", "--dims", "2048", "--device", "cpu",
                       "--num-workers", "0")
    assert_one_line_error(proc, "No space left on device")
    assert _leftovers(full_disk) == []
