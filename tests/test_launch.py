"""Joining a process group: torchrun's environment checked (one clear line when it is incomplete), a
no-op outside torchrun, and each rank's default device."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from fidfast import FidfastError, launch

from .helpers import TORCHRUN_VARS, clean_env


def test_outside_torchrun_joining_is_a_no_op(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    launch.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: one process, no group either
    launch.init_from_env()
    assert not dist.is_initialized()
    assert launch.default_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("env, fragment", [
    ({"WORLD_SIZE": "2"}, "RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT is not set"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "x"}, "MASTER_PORT"),
])
def test_incomplete_torchrun_environment_is_a_user_error(env, fragment, monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(FidfastError, match=fragment):
        launch.init_from_env()
    assert not dist.is_initialized()


def test_cli_reports_an_incomplete_torchrun_environment_in_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc = subprocess.run([sys.executable, "-m", "fidfast", tmp_path / "a", tmp_path / "b", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, env=clean_env(WORLD_SIZE="2", RANK="0"))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fidfast: error: WORLD_SIZE=2"), proc.stderr
    assert "torchrun" in lines[0] and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "fidfast", tmp_path / "a", tmp_path / "b", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, env=clean_env(WORLD_SIZE="2", RANK="1"))
    assert proc.returncode == 2 and proc.stderr.startswith("fidfast: error: WORLD_SIZE=2"), proc.stderr
