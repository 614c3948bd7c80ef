"""The Inception stage: compiled and eager networks give the same features, CPU micro-batches, the cached
frozen module, fp16's batch-norm folding, and no TorchScript FutureWarning reaching users."""
from __future__ import annotations

import warnings

import torch

from fidfast.features import CPU_MICRO_BATCH, FeatureExtractor, compiled_cache_path, eager_network, feature_extractor
from fidfast.network import FIDInception3, PooledInception, fold_batch_norms
from fidfast.weights import resolve_weights

from .helpers import rel

CPU = torch.device("cpu")


def test_compiles_without_showing_future_warnings():
    feature_extractor.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = feature_extractor(resolve_weights(), 64, CPU, "fp32", compile=True)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert isinstance(model.module, torch.jit.ScriptModule)


def test_eager_fallback_gives_the_same_features():
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    eager = feature_extractor(resolve_weights(), 192, CPU, "fp32", compile=False)
    compiled = feature_extractor(resolve_weights(), 192, CPU, "fp32", compile=True)
    assert not isinstance(eager.module, torch.jit.ScriptModule)
    with torch.no_grad():
        a, b = eager(x), compiled(x)
    assert a.shape == (2, 192)
    assert rel(b, a) < 1e-5


def test_cpu_micro_batches_give_the_whole_batchs_features():
    extractor = feature_extractor(resolve_weights(), 64, CPU, "fp32")
    assert extractor.micro_batch == CPU_MICRO_BATCH
    x = torch.rand(7, 3, 299, 299) * 2 - 1  # 7 = 3 + 3 + 1: a short last micro-batch
    with torch.inference_mode():
        whole = extractor.module(x)
        split = FeatureExtractor(extractor.module, micro_batch=3)(x)
    assert split.shape == (7, 64)
    assert rel(split, whole) < 1e-6


def test_compiled_cpu_module_is_cached_and_gives_the_same_features():
    weights = resolve_weights()
    path = compiled_cache_path(weights, 192)
    for leftover in (path, path.with_name(path.name + ".sha256")):
        leftover.unlink(missing_ok=True)
    x = torch.rand(3, 3, 299, 299) * 2 - 1
    with torch.inference_mode():
        feature_extractor.cache_clear()
        built = feature_extractor(weights, 192, CPU, "fp32")(x)
        assert path.is_file()
        feature_extractor.cache_clear()
        loaded = feature_extractor(weights, 192, CPU, "fp32")(x)  # from the cache file
        path.write_bytes(path.read_bytes()[:-10])  # a damaged entry is rebuilt, not used
        feature_extractor.cache_clear()
        rebuilt = feature_extractor(weights, 192, CPU, "fp32")(x)
    assert torch.isfinite(built).all()
    assert torch.equal(built, loaded) and torch.equal(built, rebuilt)


def test_fp16_folds_batch_norm_in_fp32_before_rounding():
    weights = resolve_weights()
    half = eager_network(weights, 64, CPU, "fp16")
    assert not [m for m in half.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    trunk = FIDInception3()
    trunk.load_state_dict(weights.state_dict())
    full = PooledInception(trunk, 64).eval()
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.inference_mode():
        reference = full(x)
        folded = fold_batch_norms(full)(x)  # the same network in fp32
    assert rel(folded, reference) < 1e-5
    for a, b in zip(half.state_dict().values(), full.state_dict().values()):
        assert a.dtype == torch.float16 and torch.equal(a, b.half())  # rounded once, from fp32
