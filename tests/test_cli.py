"""The command line, run as users run it (a subprocess): output format, JSON, help, and one-line errors."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from fidfast import FeatureStats, FidfastError

from .helpers import assert_one_line_error, fidfast_cli, make_rng, write_images


def test_prints_fid_like_pytorch_fid_and_json(image_dirs):
    proc = fidfast_cli(*image_dirs, "--device", "cpu", "--dims", "64", check_rc=0)
    assert proc.stdout.startswith("FID:  ")
    fid = float(proc.stdout.split()[-1])
    assert fid > 0
    proc = fidfast_cli(*image_dirs, "--device", "cpu", "--dims", "64", "--json", "--deterministic", check_rc=0)
    out = json.loads(proc.stdout)
    assert out["dims"] == 64 and out["n_images"] == [12, 12]
    assert abs(out["fid"] - fid) <= 1e-9 * fid
    assert "FutureWarning" not in proc.stderr


def test_save_stats_then_score_against_the_file(image_dirs, tmp_path):
    stats_path = tmp_path / "a.npz"
    fidfast_cli(image_dirs[0], stats_path, "--save-stats", "--dims", "64", "--device", "cpu", check_rc=0)
    stats = FeatureStats.load(stats_path)
    assert stats.n == 12 and stats.mu.shape == (64,)
    direct = json.loads(fidfast_cli(*image_dirs, "--dims", "64", "--json", check_rc=0).stdout)
    via_file = json.loads(fidfast_cli(stats_path, image_dirs[1], "--dims", "64", "--json", check_rc=0).stdout)
    assert via_file["n_images"] == [12, 12]
    assert abs(via_file["fid"] - direct["fid"]) <= 1e-9 * direct["fid"]
    # pytorch-fid's own .npz (mu and sigma only) is accepted; its count is unknown (null).
    np.savez_compressed(tmp_path / "pf.npz", mu=stats.mu, sigma=stats.sigma)
    out = json.loads(fidfast_cli(tmp_path / "pf.npz", stats_path, "--dims", "64", "--json", check_rc=0).stdout)
    assert out["n_images"] == [None, 12] and abs(out["fid"]) < 1e-9 * np.trace(stats.sigma)
    assert_one_line_error(fidfast_cli(image_dirs[0], stats_path, "--save-stats", "--dims", "64"), "exists")


def test_version_names_the_backends():
    proc = fidfast_cli("--version", check_rc=0)
    assert "fidfast 0.1.0" in proc.stdout
    for key in ("native_cpu", "native_cuda", "cuda_available", "ops", "weights"):
        assert key in proc.stdout


@pytest.mark.parametrize("case", ["missing", "cuda", "one_path", "bad_dims", "bad_batch", "empty", "single",
                                  "dims_mismatch", "bad_npz", "not_a_folder", "bad_weights"])
def test_user_errors_are_one_line_exit_2(case, image_dirs, tmp_path):
    a, b = image_dirs
    if case == "missing":
        assert_one_line_error(fidfast_cli(a, tmp_path / "nope"), "nope")
    elif case == "cuda":
        if not __import__("torch").cuda.is_available():
            assert_one_line_error(fidfast_cli(a, b, "--device", "cuda:0"), "CUDA")
    elif case == "one_path":
        assert_one_line_error(fidfast_cli(a), "2 paths")
    elif case == "bad_dims":
        assert_one_line_error(fidfast_cli(a, b, "--dims", "100"), "dims")
    elif case == "bad_batch":
        assert_one_line_error(fidfast_cli(a, b, "--batch-size", "0"), "batch")
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        assert_one_line_error(fidfast_cli(tmp_path / "empty", b, "--dims", "64"), "no images")
    elif case == "single":
        write_images(tmp_path / "one", make_rng("single"), [(40, 40)])
        assert_one_line_error(fidfast_cli(tmp_path / "one", b, "--dims", "64"), "at least 2")
    elif case == "dims_mismatch":
        np.savez(tmp_path / "s.npz", mu=np.ones(64), sigma=np.eye(64))
        assert_one_line_error(fidfast_cli(tmp_path / "s.npz", b, "--dims", "192"), "dims")
    elif case == "bad_npz":
        np.savez(tmp_path / "s.npz", mu=np.ones(64))
        assert_one_line_error(fidfast_cli(tmp_path / "s.npz", b, "--dims", "64"), "sigma")
    elif case == "not_a_folder":
        (tmp_path / "x.txt").write_text("hello")
        assert_one_line_error(fidfast_cli(tmp_path / "x.txt", b), "x.txt")
    elif case == "bad_weights":
        (tmp_path / "w.pth").write_bytes(b"junk")
        assert_one_line_error(fidfast_cli(a, b, "--dims", "64", "--weights", tmp_path / "w.pth"), "w.pth")


def test_statistics_files_keep_their_dims_and_save_stats_names_the_npz(image_dirs, tmp_path):
    a, b = image_dirs
    fidfast_cli(a, tmp_path / "a", "--save-stats", "--dims", "64", "--device", "cpu", check_rc=0)  # writes a.npz
    fidfast_cli(b, tmp_path / "b.npz", "--save-stats", "--dims", "64", "--device", "cpu", check_rc=0)
    # Two statistics files: their own dims, whatever --dims says (pytorch-fid does the same).
    out = json.loads(fidfast_cli(tmp_path / "a.npz", tmp_path / "b.npz", "--json", check_rc=0).stdout)
    assert out["dims"] == 64 and out["n_images"] == [12, 12] and out["fid"] > 0
    assert_one_line_error(fidfast_cli(b, tmp_path / "a", "--save-stats", "--dims", "64"), "a.npz", "exists")
    assert_one_line_error(fidfast_cli(a, b, "--metrics", "kid", "--kid-subset-size", "1"), "--kid-subset-size")


def test_help_shows_each_default_once():
    text = fidfast_cli("--help", check_rc=0).stdout
    assert "(default: 500 on CUDA, 50 on CPU)" in text
    for option in re.split(r"\n  (?=-)", text):
        assert option.count("(default") <= 1, option
        assert "(default: None)" not in option and "(default: False)" not in option


def test_a_name_that_is_not_utf8_is_named_with_the_bytes_the_os_gave(image_dirs, tmp_path):
    folder = tmp_path / "d"
    write_images(folder, make_rng("utf8"), [(30, 30)] * 3)
    with open(os.fsencode(folder) + b"/bad\xff.png", "wb") as f:
        f.write(b"not an image")
    proc = subprocess.run([sys.executable, "-m", "fidfast", folder, image_dirs[1], "--dims", "64", "--no-cache"],
                          capture_output=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(b"fidfast: error:") and b"bad\xff.png" in lines[0]


def test_save_stats_never_overwrites_a_file_that_appears_meanwhile(image_dirs, tmp_path, monkeypatch):
    """The output is created exclusively at the very end: a file another run wrote while these statistics
    were computed is kept, and this run says so (before: the last rename replaced it, exit 0)."""
    from fidfast import cli

    output = tmp_path / "out.npz"
    computed = cli.statistics

    def other_run_finishes_first(*args, **kwargs):
        stats = computed(*args, **kwargs)
        output.write_bytes(b"the other run's statistics")
        return stats

    monkeypatch.setattr(cli, "statistics", other_run_finishes_first)
    monkeypatch.setattr(cli.warnings, "showwarning", cli.warnings.showwarning)  # run() replaces it
    with pytest.raises(FidfastError, match="another run wrote this file meanwhile"):
        cli.run([str(image_dirs[0]), str(output), "--save-stats", "--dims", "64", "--device", "cpu", "--quiet",
                 "--num-workers", "0"])
    assert output.read_bytes() == b"the other run's statistics"


def test_two_runs_saving_to_one_name_at_once_one_wins_and_one_says_so(image_dirs, tmp_path):
    output = tmp_path / "out.npz"
    args = [sys.executable, "-m", "fidfast", image_dirs[0], output, "--save-stats", "--dims", "64", "--quiet"]
    runs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in runs)
    errors = [p.stderr.read() for p in runs]
    assert codes == [0, 2], errors
    assert any("not overwriting" in e for e in errors)
    assert FeatureStats.load(output).n == 12


def test_save_stats_into_an_existing_folder_is_refused_with_a_hint(image_dirs):
    a, b = image_dirs
    assert_one_line_error(fidfast_cli(a, b, "--save-stats", "--dims", "64"), "is a folder", "leave out --save-stats")
    assert not b.with_name(b.name + ".npz").exists()


def test_save_stats_refuses_an_existing_input_or_an_unwritable_place_before_computing(image_dirs, tmp_path):
    a, b = image_dirs
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
        z.write(next(b.iterdir()), "x.png")
    assert_one_line_error(fidfast_cli(a, tmp_path / "b.zip", "--save-stats", "--dims", "64"), "b.zip", "exists")
    (tmp_path / "file").write_text("a file, not a folder")
    proc = fidfast_cli(a, tmp_path / "file" / "out.npz", "--save-stats", "--dims", "64", "--no-cache")
    assert_one_line_error(proc, "cannot write there")
    assert not (tmp_path / "b.zip.npz").exists()


def test_paths_may_come_after_options(image_dirs):
    a, b = image_dirs
    mixed = json.loads(fidfast_cli(a, "--dims", "64", b, "--json", check_rc=0).stdout)
    plain = json.loads(fidfast_cli(a, b, "--dims", "64", "--json", check_rc=0).stdout)
    assert mixed["fid"] == plain["fid"] and mixed["n_images"] == [12, 12]


def test_double_dash_ends_the_options_so_a_path_may_start_with_one(image_dirs, tmp_path):
    # POSIX: `--` ends the options; `--opt=value` and `--opt value` alike
    dashed = tmp_path / "-neg"
    shutil.copytree(image_dirs[1], dashed)
    plain = json.loads(fidfast_cli(*image_dirs, "--dims", "64", "--json", check_rc=0).stdout)
    for args in [("--dims=64", "--json", image_dirs[0], "--", "-neg"), ("--dims", "64", "--json", "--", image_dirs[0],
                                                                        "-neg")]:
        proc = subprocess.run([sys.executable, "-m", "fidfast", *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["fid"] == plain["fid"]
    assert_one_line_error(fidfast_cli(image_dirs[0], dashed.name, "--dims", "64"), "-neg")  # without --: an option


def test_a_statistics_file_beside_images_gives_its_dims(image_dirs, tmp_path):
    a, b = image_dirs
    fidfast_cli(a, tmp_path / "a64.npz", "--save-stats", "--dims", "64", check_rc=0)
    out = json.loads(fidfast_cli(tmp_path / "a64.npz", b, "--json", check_rc=0).stdout)  # no --dims given
    direct = json.loads(fidfast_cli(a, b, "--dims", "64", "--json", check_rc=0).stdout)
    assert out["dims"] == 64 and abs(out["fid"] - direct["fid"]) <= 1e-9 * direct["fid"]
    assert_one_line_error(fidfast_cli(tmp_path / "a64.npz", b, "--dims", "192"), "dims 64", "dims=192")


def test_kid_alone_does_not_warn_about_the_fids_bias(image_dirs):
    a, b = image_dirs
    kid = fidfast_cli(a, b, "--dims", "64", "--metrics", "kid", "--kid-subset-size", "6", "--kid-subsets", "3",
                      check_rc=0)
    assert "fewer than dims" not in kid.stderr and kid.stdout.startswith("KID:")
    both = fidfast_cli(a, b, "--dims", "64", "--metrics", "fid,kid", "--kid-subset-size", "6", check_rc=0)
    assert both.stderr.count("fewer than dims=64") == 2


def test_help_names_every_input_kind():
    from fidfast.sources import ARCHIVE_SUFFIXES, FILE_LIST_SUFFIXES

    text = " ".join(fidfast_cli("--help", check_rc=0).stdout.split())
    for word in ("folder", ".npz", "archive", "file list", *ARCHIVE_SUFFIXES, *FILE_LIST_SUFFIXES):
        assert word in text, word


def test_cache_info_and_clear(image_dirs, tmp_path):
    from fidfast.weights import resolve_weights

    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "FIDFAST_WEIGHTS": resolve_weights().path}  # no conversion
    fidfast_cli(image_dirs[0], tmp_path / "s.npz", "--save-stats", "--dims", "64", env=env, check_rc=0)
    info = json.loads(fidfast_cli("--cache-info", "--json", env=env, check_rc=0).stdout)
    assert info["entries"] == 1 and info["bytes"] > 0 and info["path"].startswith(str(tmp_path))
    assert "1 entries" in fidfast_cli("--cache-info", env=env, check_rc=0).stdout
    cleared = json.loads(fidfast_cli("--clear-cache", "--json", env=env, check_rc=0).stdout)
    assert cleared["entries"] == 1
    assert json.loads(fidfast_cli("--cache-info", "--json", env=env, check_rc=0).stdout)["entries"] == 0



def test_every_metric_from_one_pass_equals_the_python_api(image_dirs):
    import fidfast

    a, b = image_dirs
    common = ("--dims", "64", "--prdc-k", "3", "--kid-subsets", "3", "--kid-subset-size", "6",
              "--fid-ci-resamples", "20")
    out = json.loads(fidfast_cli(a, b, "--metrics", "fid,kid,prdc,fid-inf,fid-ci", *common, "--json",
                                 check_rc=0).stdout)
    f1, f2 = (fidfast.compute_features(p, dims=64, device="cpu", cache=False) for p in image_dirs)
    expected_prdc = {**fidfast.prdc(f1, f2, 3), "k": 3}
    assert out["prdc"] == pytest.approx(expected_prdc, rel=1e-9, abs=1e-9) and out["prdc"]["k"] == 3
    with pytest.warns(UserWarning, match="fewer than d=64"):  # 12 images: FID∞ is computed, with a warning
        assert out["fid_inf"] == pytest.approx(fidfast.fid_infinity(f1, f2), rel=1e-9)
    assert out["fid_ci"] == pytest.approx(list(fidfast.fid_bootstrap(f1, f2, 20)), rel=1e-9)
    assert out["fid"] == pytest.approx(fidfast.calculate_fid(a, b, dims=64, device="cpu", cache=False), rel=1e-9)
    assert np.isfinite(out["kid"]) and np.isfinite(out["fid_inf"])
    # Plain output: one line per value, in a fixed order.
    plain = fidfast_cli(a, b, "--metrics", "prdc,fid-ci,fid-inf", *common, check_rc=0).stdout.splitlines()
    assert [line.split(":")[0] for line in plain] == ["Precision", "Recall", "Density", "Coverage", "FID-inf",
                                                      "FID 95% CI"]
    assert float(plain[0].split()[-1]) == pytest.approx(out["prdc"]["precision"], rel=1e-9)
    assert [float(v) for v in plain[-1].split()[-2:]] == pytest.approx(out["fid_ci"], rel=1e-9)


def test_bad_metric_options_are_one_line_errors(image_dirs, tmp_path):
    a, b = image_dirs
    assert_one_line_error(fidfast_cli(a, b, "--metrics", "fid,pdrc"), "unknown metric(s) pdrc", "fid-inf", "sfid")
    assert_one_line_error(fidfast_cli(a, b, "--metrics", "prdc", "--prdc-k", "0"), "--prdc-k must be ≥ 1")
    assert_one_line_error(fidfast_cli(a, b, "--metrics", "fid-ci", "--fid-ci-resamples", "1"), "--fid-ci-resamples")
    np.savez(tmp_path / "s.npz", mu=np.ones(64), sigma=np.eye(64))
    assert_one_line_error(fidfast_cli(tmp_path / "s.npz", b, "--metrics", "fid,prdc", "--dims", "64"),
                          "s.npz", "holds no features")
    assert_one_line_error(fidfast_cli(a, b, "--metrics", "prdc", "--prdc-k", "12", "--dims", "64"),
                          "12 rows; k=12 needs at least 13")
