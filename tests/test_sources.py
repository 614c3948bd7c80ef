"""What an input is: listing folders (extensions, subfolders), archives and file lists (in the encodings
users' editors write), names that are not UTF-8, and the checks on in-memory image batches."""
from __future__ import annotations

import codecs
import os
import tarfile
import zipfile

import numpy as np
import pytest

import fidfast
from fidfast import FidfastError
from fidfast.sources import ImageFiles, list_archive, list_image_files, open_source, read_file_list

from .helpers import FAST, assert_one_line_error, fidfast_cli, write_images


@pytest.mark.parametrize("bad", [np.zeros((2, 5, 5), np.uint8), np.full((2, 3, 8, 8), 2.0, np.float32),
                                 np.ones((2, 4, 8, 8), np.int32), np.full((2, 3, 8, 8), np.nan, np.float32)])
def test_bad_arrays_are_clear_errors(bad):
    with pytest.raises(FidfastError):
        fidfast.compute_stats(bad, **FAST)


def test_extensions_are_case_insensitive_and_recursive_is_suggested(tmp_path, rng):
    write_images(tmp_path / "top", rng, [(30, 30)] * 2, ext="JPG")
    write_images(tmp_path / "top", rng, [(30, 30)] * 1, ext="Png")
    assert fidfast.compute_stats(tmp_path / "top", **FAST).n == 3  # pytorch-fid's lower-case glob finds none
    write_images(tmp_path / "nested" / "sub", rng, [(30, 30)] * 3)
    with pytest.raises(FidfastError, match="--recursive"):
        fidfast.compute_stats(tmp_path / "nested", **FAST)
    assert fidfast.compute_stats(tmp_path / "nested", recursive=True, **FAST).n == 3


def test_names_that_are_not_utf8_are_listed_as_the_os_gives_them(tmp_path, rng):
    folder = tmp_path / "d"
    write_images(folder, rng, [(20, 20)] * 2)
    odd = os.fsencode(folder) + b"/caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
    os.rename(folder / "img_0000.png", odd)
    files = list_image_files(folder)
    assert os.fsdecode(odd) in map(str, files) and len(files) == 2
    (tmp_path / "list.txt").write_bytes(b"d/caf\xe9.png\nd/img_0001.png\n")
    assert sorted(map(str, read_file_list(tmp_path / "list.txt"))) == sorted(map(str, files))


def test_archive_members_are_sorted_by_name(tmp_path, rng):
    paths = write_images(tmp_path / "d", rng, [(20, 20)] * 3)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for p in reversed(paths):
            z.write(p, f"x/{p.name}")
    with tarfile.open(tmp_path / "a.tar", "w") as t:
        for p in reversed(paths):
            t.add(p, p.name)
    assert [m for _, m in list_archive(tmp_path / "a.zip")] == [f"x/{p.name}" for p in paths]
    assert [m for _, m in list_archive(tmp_path / "a.tar")] == [p.name for p in paths]


def test_open_source_resolves_each_kind(tmp_path, rng):
    paths = write_images(tmp_path / "d", rng, [(20, 20)] * 2)
    assert isinstance(open_source(tmp_path / "d"), ImageFiles)
    assert open_source([str(p) for p in paths]).refs == paths
    with pytest.raises(FidfastError, match="empty list"):
        open_source([])
    with pytest.raises(FidfastError, match="no such file"):
        open_source(tmp_path / "nope")
    (tmp_path / "x.bin").write_bytes(b"?")
    with pytest.raises(FidfastError, match="expected a folder"):
        open_source(tmp_path / "x.bin")


def test_readme_names_every_input_suffix():
    from pathlib import Path

    from fidfast.sources import ARCHIVE_SUFFIXES, FILE_LIST_SUFFIXES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for suffix in (*ARCHIVE_SUFFIXES, *FILE_LIST_SUFFIXES):
        assert f"`{suffix}`" in readme, suffix


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_file_lists_from_other_editors_are_read(tmp_path, rng, encoding):
    # Notepad's UTF-8 with a byte-order mark, PowerShell 5's UTF-16 (with a mark), CRLF line ends
    paths = write_images(tmp_path / "d", rng, [(20, 20)] * 2)
    text = "\r\n".join(["# made on Windows", "d/img_0001.png", "d/img_0000.png", ""])
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    (tmp_path / "list.txt").write_bytes(data)
    assert read_file_list(tmp_path / "list.txt") == paths


def test_a_file_list_of_nul_bytes_is_refused_in_one_printable_line(tmp_path, image_dirs):
    (tmp_path / "list.txt").write_bytes("d/img_0000.png\n".encode("utf-16-le"))  # no byte-order mark
    with pytest.raises(FidfastError, match="UTF-16 without a byte-order mark") as caught:
        read_file_list(tmp_path / "list.txt")
    assert str(caught.value).isprintable()
    assert_one_line_error(fidfast_cli(tmp_path / "list.txt", image_dirs[1], "--dims", "64"), "UTF-16")
