"""The settings built at each API edge: bad values refused before any file is listed, defaults resolved."""
from __future__ import annotations

import pytest
import torch

import fidfast
from fidfast import FidfastError, Settings

from .helpers import HAS_CUDA, assert_one_line_error, fidfast_cli


@pytest.mark.parametrize("bad, fragment", [
    ({"dims": 100}, "--dims"), ({"dims": "2048"}, "--dims"), ({"batch_size": 0}, "--batch-size"),
    ({"batch_size": 2.5}, "--batch-size"), ({"num_workers": -1}, "--num-workers"),
    ({"precision": "bf16"}, "--precision"), ({"device": "tpu"}, "--device"), ({"weights": 3}, "weights"),
])
def test_bad_values_are_refused_before_any_file_is_listed(bad, fragment, tmp_path):
    missing = tmp_path / "not-there"  # listing it would fail with another message
    with pytest.raises(FidfastError, match=fragment):
        fidfast.compute_stats(missing, **bad)
    with pytest.raises(FidfastError, match=fragment):
        fidfast.calculate_fid(missing, missing, **bad)


def test_cli_refuses_dims_100_before_reading_anything(tmp_path):
    assert_one_line_error(fidfast_cli(tmp_path, tmp_path, "--dims", "100"), "--dims")


def test_defaults_are_resolved_when_built():
    s = Settings()
    assert s.dims == 2048 and s.device == torch.device("cuda" if HAS_CUDA else "cpu", 0 if HAS_CUDA else None)
    assert s.precision == ("fp16" if HAS_CUDA else "fp32") and s.batch_size == (500 if HAS_CUDA else 50)
    assert s.num_workers >= 1 and s.progress in (True, False)
    cpu = Settings(device="cpu", precision="auto", batch_size=7, num_workers=0)
    assert (cpu.precision, cpu.batch_size, cpu.num_workers, cpu.dtype) == ("fp32", 7, 0, torch.float32)
    with pytest.raises(TypeError):
        Settings(2048)  # keyword-only
    with pytest.raises(TypeError):
        Settings(dim=2048)  # a misspelt setting is not ignored


@pytest.mark.skipif(HAS_CUDA, reason="checks the message where CUDA is missing")
def test_fp16_and_cuda_need_a_gpu():
    with pytest.raises(FidfastError, match="CUDA"):
        Settings(device="cuda")
    with pytest.raises(FidfastError, match="fp16"):
        Settings(device="cpu", precision="fp16")


def test_weights_are_resolved_once_on_first_use(tmp_path):
    s = Settings(device="cpu")
    assert s.inception_weights is s.inception_weights
    with pytest.raises(FidfastError, match="no such weights file"):
        Settings(device="cpu", weights=str(tmp_path / "none.pth")).inception_weights
