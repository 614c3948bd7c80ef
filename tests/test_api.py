"""The drop-in surface: pytorch-fid's public names, signatures and defaults exist in fidfast."""
import inspect

import pytest
import torch

import fidfast
from fidfast import fid_score, inception

pytest.importorskip("pytorch_fid")
import pytorch_fid.fid_score  # noqa: E402
import pytorch_fid.inception  # noqa: E402

FID_SCORE_NAMES = ["calculate_fid_given_paths", "calculate_frechet_distance", "calculate_activation_statistics",
                   "compute_statistics_of_path", "get_activations", "save_fid_stats", "ImagePathDataset",
                   "IMAGE_EXTENSIONS"]


def params(fn):
    """Names, kinds and defaults (annotations may differ: fidfast adds type hints)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", FID_SCORE_NAMES)
def test_fid_score_names_and_signatures(name):
    ours, theirs = getattr(fid_score, name), getattr(pytorch_fid.fid_score, name)
    if callable(theirs):
        assert params(ours) == params(theirs)
    else:
        assert ours == theirs


def test_inception_constants_and_signature():
    from pytorch_fid.inception import InceptionV3 as Theirs

    ours = inception.InceptionV3
    assert ours.BLOCK_INDEX_BY_DIM == Theirs.BLOCK_INDEX_BY_DIM
    assert ours.DEFAULT_BLOCK_INDEX == Theirs.DEFAULT_BLOCK_INDEX
    theirs_params = params(Theirs.__init__)
    assert params(ours.__init__)[: len(theirs_params)] == theirs_params
    assert inception.FID_WEIGHTS_URL == pytorch_fid.inception.FID_WEIGHTS_URL


def test_inception_forward_returns_feature_maps_for_any_size():
    model = inception.InceptionV3([0, 3]).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 67, 131))
    assert isinstance(out, list) and len(out) == 2
    assert out[0].shape == (2, 64, 73, 73)
    assert out[1].shape == (2, 2048, 1, 1)
    assert torch.isfinite(out[1]).all() and out[1].abs().mean() > 0.01
    assert not any(p.requires_grad for p in model.parameters())


def test_inception_scripts_without_warnings(recwarn):
    import warnings

    model = inception.InceptionV3([1], resize_input=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    x = torch.rand(1, 3, 299, 299)
    with torch.no_grad():
        assert torch.equal(scripted(x)[0], model(x)[0])


def test_pipeline_compiles_without_showing_future_warnings():
    import warnings

    from fidfast.features import build_feature_extractor

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_feature_extractor(64, torch.device("cpu"), compile=True)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    assert isinstance(model.module, torch.jit.ScriptModule)


def test_eager_fallback_gives_the_same_features():
    from fidfast.features import build_feature_extractor

    x = torch.rand(2, 3, 299, 299) * 2 - 1
    eager = build_feature_extractor(192, torch.device("cpu"), compile=False)
    compiled = build_feature_extractor(192, torch.device("cpu"), compile=True)
    assert not isinstance(eager.module, torch.jit.ScriptModule)
    with torch.no_grad():
        a, b = eager(x), compiled(x)
    assert a.shape == (2, 192)
    assert ((a - b).norm() / a.norm()) < 1e-5


def test_backend_info_keys():
    info = fidfast.backend_info()
    for key in ("native_cpu", "native_cuda", "cuda_available", "ops", "weights"):
        assert key in info
    assert info["cuda_available"] == torch.cuda.is_available()
    assert info["weights"] is not None


def test_cpu_micro_batches_give_the_whole_batchs_features():
    from fidfast.features import CPU_MICRO_BATCH, FeatureExtractor, build_feature_extractor

    extractor = build_feature_extractor(64, torch.device("cpu"))
    assert extractor.micro_batch == CPU_MICRO_BATCH
    x = torch.rand(7, 3, 299, 299) * 2 - 1  # 7 = 3 + 3 + 1: a short last micro-batch
    with torch.inference_mode():
        whole = extractor.module(x)
        split = FeatureExtractor(extractor.module, micro_batch=3)(x)
    assert split.shape == (7, 64) and torch.isfinite(split).all()
    assert ((split - whole).norm() / whole.norm()) < 1e-6


def test_compiled_cpu_module_is_cached_and_gives_the_same_features():
    from fidfast.features import build_feature_extractor, compiled_cache_path

    path = compiled_cache_path(192)
    for leftover in (path, path.with_name(path.name + ".sha256")):
        leftover.unlink(missing_ok=True)
    x = torch.rand(3, 3, 299, 299) * 2 - 1
    with torch.inference_mode():
        built = build_feature_extractor(192, torch.device("cpu"))(x)
        assert path.is_file()
        loaded = build_feature_extractor(192, torch.device("cpu"))(x)  # from the cache file
        path.write_bytes(path.read_bytes()[:-10])  # a damaged entry is rebuilt, not used
        rebuilt = build_feature_extractor(192, torch.device("cpu"))(x)
    assert torch.isfinite(built).all()
    assert torch.equal(built, loaded) and torch.equal(built, rebuilt)


def test_fp16_folds_batch_norm_in_fp32_before_rounding():
    from fidfast import inception
    from fidfast.features import PooledInception, _eager, fold_batch_norms

    half = _eager(64, torch.device("cpu"), "fp16", None)
    assert not [m for m in half.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    full = PooledInception(inception.fid_inception_v3(), 64).eval()
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.inference_mode():
        reference = full(x)
        folded = fold_batch_norms(full)(x)  # the same network in fp32
    assert ((folded - reference).norm() / reference.norm()) < 1e-5
    for a, b in zip(half.state_dict().values(), full.state_dict().values()):
        assert a.dtype == torch.float16 and torch.equal(a, b.half())  # rounded once, from fp32
