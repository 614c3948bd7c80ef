"""In the training loop: torchmetrics' ``FrechetInceptionDistance`` and ``KernelInceptionDistance``, same
constructor, same methods, same numbers, on fidfast's compiled network and exact float64 statistics.

Each metric is an ``nn.Module``: ``.to(device)`` (and Lightning's device moves) carry its running state,
which stays float64 whatever dtype the module is cast to; ``state_dict()`` holds that state (and a
custom feature module's weights, never the FID Inception's), so a resumed run continues it exactly.
``update`` never communicates; inside an initialised process group ``compute`` returns on every rank the
metric of every rank's images, merged exactly (:mod:`fidfast.distributed`).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn

from fidfast import distributed
from fidfast.errors import ArgumentTypeError, FidfastError, MetricError
from fidfast.frechet import frechet_distance
from fidfast.metrics import check_kid_options, kernel_inception_distance
from fidfast.network import DIMS
from fidfast.pipeline import batch_features, check_fid_input, extractor
from fidfast.preprocess import pack
from fidfast.settings import Settings
from fidfast.stats import FeatureStats

SIDES = ("real", "fake")


def protocol_of(antialias: Optional[bool], protocol: Optional[str]) -> str:
    """torchmetrics' ``antialias`` as a fidfast protocol: True (its default) → ``torchmetrics``, False →
    ``tf`` (TF1's bilinear, as torch-fidelity); ``protocol`` names any other, and must agree with it."""
    implied = None if antialias is None else ("torchmetrics" if antialias else "tf")
    if protocol is None:
        return implied or "torchmetrics"
    if implied is not None and implied != protocol:
        raise FidfastError(f"antialias={antialias} means protocol {implied!r}, but protocol={protocol!r} was given")
    return protocol


class _InceptionMetric(nn.Module):
    """What both metrics share: the feature network, the input checks, device moves and state on load.

    ``feature``: 64, 192, 768 or 2048 (the FID Inception's features at that block, computed as ``protocol``
    preprocesses) or an ``nn.Module`` that maps your batch, as you pass it, to N×D features (torchmetrics'
    contract for a custom extractor; it is registered as a submodule, so its weights are in the state).
    """

    def __init__(self, feature: Union[int, nn.Module], reset_real_features: bool, normalize: bool,
                 input_img_size: Tuple[int, int, int], feature_extractor_weights_path: Optional[str],
                 antialias: Optional[bool], protocol: Optional[str], precision: str,
                 device: Union[str, torch.device, None], sync_on_compute: bool) -> None:
        super().__init__()
        for name, value in (("reset_real_features", reset_real_features), ("normalize", normalize),
                            ("sync_on_compute", sync_on_compute)):
            if not isinstance(value, bool):
                raise FidfastError(f"{name} must be True or False, got {value!r}")
        self.reset_real_features, self.normalize, self.sync_on_compute = reset_real_features, normalize, sync_on_compute
        inception_dims = isinstance(feature, int) and not isinstance(feature, bool) and feature in DIMS
        if not (isinstance(feature, (int, nn.Module)) and not isinstance(feature, bool)):
            raise ArgumentTypeError(f"feature must be one of {', '.join(map(str, DIMS))} or an nn.Module, got "
                                    f"{feature!r}")  # a TypeError, as torchmetrics raises there
        if not (inception_dims or isinstance(feature, nn.Module)):
            raise FidfastError(f"feature must be one of {', '.join(map(str, DIMS))} or an nn.Module, got {feature!r}")
        # Settings check every value now; the device is the state's (the CPU unless given, as a torchmetrics
        # metric starts), which .to() may change: then the precision asked for is resolved again for it.
        self._settings = Settings(dims=feature if inception_dims else None,
                                  protocol=protocol_of(antialias, protocol), device=device or "cpu",
                                  precision=precision, weights=feature_extractor_weights_path, progress=False,
                                  cache=False)
        self._precision = precision
        self._settings_by_device: Dict[torch.device, Settings] = {self._settings.device: self._settings}
        self._custom = isinstance(feature, nn.Module)
        if self._custom:
            self.inception = feature
            self.num_features = _module_width(feature, normalize, input_img_size)
        else:
            self.num_features = feature
            self._settings.inception_weights  # a missing or bad weights file is reported now, not at the first update
            self.inception = InceptionFeatures(self)

    # -- the state's device --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def _apply(self, fn, recurse=True):
        # Device moves reach the state; dtype casts (.half(), .double(), Lightning's precision) do not:
        # float64 statistics cast to fp16 would be silently wrong.
        before = {name: t for name, t in self._buffers.items() if t is not None}
        super()._apply(fn, recurse)
        for name, old in before.items():
            if self._buffers[name].dtype != old.dtype:
                self._buffers[name] = old.to(self._buffers[name].device)
        return self

    def _settings_on(self, device: torch.device) -> Settings:
        """The settings with the state's device (precision ``auto`` resolved for it)."""
        if device not in self._settings_by_device:
            self._settings_by_device[device] = replace(self._settings, device=device, precision=self._precision)
        return self._settings_by_device[device]

    # -- update ----------------------------------------------------------------------------------------
    def _features(self, imgs: torch.Tensor) -> torch.Tensor:
        """The batch's N×D features on the state's device."""
        if not isinstance(imgs, torch.Tensor):
            raise FidfastError(f"update() takes a torch.Tensor of images, got {type(imgs).__name__}")
        imgs = imgs.to(self.device)
        if self._custom:  # torchmetrics' contract: your module gets your batch
            with torch.inference_mode():
                features = self.inception(imgs)
            features = features.unsqueeze(0) if features.ndim == 1 else features
            if features.ndim != 2 or features.shape[1] != self.num_features:
                raise FidfastError(f"the feature module returned {tuple(features.shape)}, "
                                   f"expected N×{self.num_features}")
            return features
        return self._inception_features(self._check_images(imgs))

    def _inception_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """The FID Inception's features of uint8 N×C×H×W images, on their device."""
        if imgs.shape[0] == 0:
            return imgs.new_empty(0, self.num_features, dtype=torch.float32)
        settings = self._settings_on(imgs.device)
        return batch_features(extractor(settings), pack(imgs.permute(0, 2, 3, 1)), settings)

    def _check_images(self, imgs: torch.Tensor, normalize: Optional[bool] = None) -> torch.Tensor:
        """N×3×H×W (or N×1×H×W) uint8, or with ``normalize`` (default: the metric's) float in [0, 1], made
        uint8 as torchmetrics makes it (``(imgs * 255).byte()``, which truncates)."""
        normalize = self.normalize if normalize is None else normalize
        expected = "float N×3×H×W in [0, 1] (normalize=True)" if normalize else "uint8 N×3×H×W (normalize=False)"
        if imgs.ndim != 4 or imgs.shape[1] not in (1, 3) or imgs.shape[2] < 1 or imgs.shape[3] < 1:
            nhwc = imgs.ndim == 4 and imgs.shape[3] in (1, 3)
            hint = ", channels last? pass imgs.permute(0, 3, 1, 2)" if nhwc else ""
            raise FidfastError(f"update() expects {expected}, got shape {tuple(imgs.shape)}{hint}")
        if not normalize:
            if imgs.dtype != torch.uint8:
                raise FidfastError(f"update() expects {expected}, got {imgs.dtype} (for float images in [0, 1] "
                                   "construct the metric with normalize=True)")
            return imgs
        if not imgs.is_floating_point():
            raise FidfastError(f"update() expects {expected}, got {imgs.dtype} (for uint8 images construct the "
                               "metric with normalize=False)")
        if imgs.numel():
            lo, hi = torch.aminmax(imgs)
            if not (float(lo) >= 0 and float(hi) <= 1):  # NaN fails too
                raise FidfastError(f"update() expects {expected}, got values from {float(lo):g} to {float(hi):g}")
        return (imgs * 255).byte()

    # -- state dict ------------------------------------------------------------------------------------
    def _identity(self) -> Dict[str, Any]:
        """What makes two metrics' states comparable (saved with the state, checked on load)."""
        return {"num_features": self.num_features, "protocol": self._settings.protocol,
                "feature": "module" if self._custom else "inception"}

    def get_extra_state(self) -> Dict[str, Any]:
        return self._identity()

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        mine = self._identity()
        if state != mine:
            def say(v):
                return f"{v.get('num_features')} {v.get('feature')} features, protocol {v.get('protocol')}"
            raise FidfastError(f"this state was saved by a metric of {say(state)}, this one has {say(mine)}: their "
                               "statistics are not comparable")


class InceptionFeatures(nn.Module):
    """A metric's ``inception``, as torchmetrics exposes its own: uint8 N×3×H×W images in [0, 255] → N×D
    features of the FID Inception, computed as the metric computes them (its protocol, weights and
    precision, on the images' device). It holds no parameters (the network is fidfast's compiled one, kept
    per process), so a metric's state_dict never carries the FID weights; it is in eval mode and can be
    handed to :class:`KernelInceptionDistance` as ``feature=``, as torchmetrics users do."""

    def __init__(self, metric: "_InceptionMetric") -> None:
        super().__init__()
        object.__setattr__(self, "_metric", metric)  # not a submodule: no cycle in modules()
        self.num_features = metric.num_features
        self.eval()

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        if not isinstance(imgs, torch.Tensor):
            raise FidfastError(f"inception() takes a torch.Tensor of images, got {type(imgs).__name__}")
        return self._metric._inception_features(self._metric._check_images(imgs, normalize=False))


def _adopt_torchmetrics_checkpoint(metric: "_InceptionMetric", state_dict: dict, prefix: str) -> None:
    """What else a torchmetrics checkpoint holds or lacks: its Inception's weights (left out where fidfast's
    own network computes the features) and fidfast's identity record (taken as this metric's)."""
    if not metric._custom:
        for key in [k for k in state_dict if k.startswith(f"{prefix}inception.")]:
            del state_dict[key]
    state_dict.setdefault(f"{prefix}_extra_state", metric._identity())


def _module_width(module: nn.Module, normalize: bool, input_img_size: Tuple[int, int, int]) -> int:
    """A custom extractor's feature width: its ``num_features``, else that of one random input of
    ``input_img_size`` (float in [0, 1] with ``normalize``, else uint8), as torchmetrics finds it."""
    width = getattr(module, "num_features", None)
    if isinstance(width, torch.Tensor):
        width = int(width.item())
    if width is not None:
        if not isinstance(width, int) or width < 1:
            raise FidfastError(f"the feature module's num_features must be a whole number ≥ 1, got {width!r}")
        return width
    try:
        param = next(module.parameters())
        device = param.device
    except StopIteration:
        device = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    probe = (torch.rand(1, *input_img_size, generator=gen) if normalize
             else torch.randint(0, 256, (1, *input_img_size), generator=gen, dtype=torch.uint8)).to(device)
    with torch.inference_mode():
        return int(module(probe).shape[-1])


class FrechetInceptionDistance(_InceptionMetric):
    """torchmetrics 1.9's ``FrechetInceptionDistance``, computed by fidfast.

    Args (torchmetrics' own):
        feature: 64, 192, 768 or 2048, or an ``nn.Module`` (see :class:`_InceptionMetric`).
        reset_real_features: ``reset()`` clears the real images' statistics too (False keeps them).
        normalize: images are float in [0, 1] (made uint8 as torchmetrics does), not uint8.
        input_img_size: the C×H×W of the random input that finds a custom module's width.
        feature_extractor_weights_path: the FID Inception weights (None: README's "Weights").
        antialias: True (torchmetrics' default) resizes as ``F.interpolate(antialias=True)`` (protocol
            ``torchmetrics``), False as TensorFlow 1 (protocol ``tf``).
    fidfast's own (keyword-only):
        protocol: any fidfast protocol instead of ``antialias`` (README: "Protocols").
        precision: ``fp32`` (torchmetrics' numbers; the default), ``fp16`` or ``auto`` (fp16 on CUDA).
        device: where the state and the network are (default the CPU; ``.to()`` moves them).
        sync_on_compute: merge the ranks' statistics in ``compute()`` inside a process group.

    State: per side, the image count, float64 mean and co-moment Σ(x − mean)(x − mean)ᵀ, updated by the
    native streaming op: fixed memory, whatever the number of updates.
    """

    def __init__(self, feature: Union[int, nn.Module] = 2048, reset_real_features: bool = True,
                 normalize: bool = False, input_img_size: Tuple[int, int, int] = (3, 299, 299),
                 feature_extractor_weights_path: Optional[str] = None, antialias: Optional[bool] = None, *,
                 protocol: Optional[str] = None, precision: str = "fp32", device: Union[str, torch.device, None] = None,
                 sync_on_compute: bool = True) -> None:
        super().__init__(feature, reset_real_features, normalize, input_img_size, feature_extractor_weights_path,
                         antialias, protocol, precision, device, sync_on_compute)
        d, place = self.num_features, self._settings.device
        for side in SIDES:
            self.register_buffer(f"{side}_n", torch.zeros((), dtype=torch.int64, device=place))
            self.register_buffer(f"{side}_mean", torch.zeros(d, dtype=torch.float64, device=place))
            self.register_buffer(f"{side}_comoment", torch.zeros(d, d, dtype=torch.float64, device=place))

    @property
    def _anchor(self) -> torch.Tensor:
        return self.real_mean

    def _stats(self, side: str) -> FeatureStats:
        """A view of one side's state (updates through it change the buffers)."""
        return FeatureStats.from_comoment(getattr(self, f"{side}_mean"), getattr(self, f"{side}_comoment"),
                                          int(getattr(self, f"{side}_n")))

    def update(self, imgs: torch.Tensor, real: bool) -> None:
        """Add a batch of real or generated images to their side's statistics."""
        features = self._features(imgs)
        side = "real" if real else "fake"
        with torch.inference_mode():
            self._stats(side).update(features)
            getattr(self, f"{side}_n").add_(features.shape[0])

    def forward(self, imgs: torch.Tensor, real: bool) -> None:
        """``metric(imgs, real=...)`` is :meth:`update`."""
        self.update(imgs, real)

    def compute(self) -> torch.Tensor:
        """The FID of every image seen (on every rank of a process group), a float32 scalar tensor."""
        pair = []
        for side in SIDES:
            stats = self._stats(side)
            if self.sync_on_compute:
                stats, _ = distributed.merge(stats, 0)
            if stats.n < 2:
                raise MetricError("More than one sample is required for both the real and fake distributed to "
                                  f"compute FID: got {stats.n} {side} image(s)")
            pair.append(check_fid_input(stats, f"the {side} images"))
        (s1, s2) = pair
        fid = frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance)
        return torch.tensor(fid, dtype=torch.float32, device=self.device)

    def reset(self) -> None:
        """Forget the generated images (and the real ones, unless ``reset_real_features=False``)."""
        for side in SIDES if self.reset_real_features else ("fake",):
            for part in ("n", "mean", "comoment"):
                getattr(self, f"{side}_{part}").zero_()

    # -- torchmetrics' state, by its names and meanings, read from (and loaded into) fidfast's --------------
    def _sums(self, side: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Σx, Σxxᵀ, n) of one side, float64 (n int64), as torchmetrics keeps them."""
        n, mean, comoment = (getattr(self, f"{side}_{part}") for part in ("n", "mean", "comoment"))
        return mean * n, comoment + n * torch.outer(mean, mean), n.clone()

    real_features_sum = property(lambda self: self._sums("real")[0], doc="torchmetrics' Σx of the real images")
    real_features_cov_sum = property(lambda self: self._sums("real")[1], doc="torchmetrics' Σxxᵀ of the real images")
    real_features_num_samples = property(lambda self: self._sums("real")[2], doc="torchmetrics' real image count")
    fake_features_sum = property(lambda self: self._sums("fake")[0], doc="torchmetrics' Σx of the fake images")
    fake_features_cov_sum = property(lambda self: self._sums("fake")[1], doc="torchmetrics' Σxxᵀ of the fake images")
    fake_features_num_samples = property(lambda self: self._sums("fake")[2], doc="torchmetrics' fake image count")

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        """Also loads a torchmetrics FID's checkpoint (its states saved with ``persistent(True)``): Σx, Σxxᵀ
        and n become fidfast's mean and co-moment; its Inception's weights are not needed (fidfast's network
        computes the same features) and are left out."""
        if f"{prefix}real_features_sum" in state_dict:
            for side in SIDES:
                total, cov_sum, n = (state_dict.pop(f"{prefix}{side}_features_{part}")
                                     for part in ("sum", "cov_sum", "num_samples"))
                n = torch.as_tensor(n, dtype=torch.int64)
                mean = total.double() / n.clamp(min=1)
                state_dict[f"{prefix}{side}_n"] = n
                state_dict[f"{prefix}{side}_mean"] = mean
                state_dict[f"{prefix}{side}_comoment"] = cov_sum.double() - n * torch.outer(mean, mean)
            _adopt_torchmetrics_checkpoint(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)


class KernelInceptionDistance(_InceptionMetric):
    """torchmetrics 1.9's ``KernelInceptionDistance``, computed by fidfast (float64 kernels).

    Args: torchmetrics' own (``feature``, ``subsets``, ``subset_size``, ``degree``, ``gamma``, ``coef``,
    ``reset_real_features``, ``normalize``), as in :class:`FrechetInceptionDistance`, plus
    ``feature_extractor_weights_path``, ``antialias`` and fidfast's keyword-only ``protocol``,
    ``precision``, ``device``, ``sync_on_compute`` and ``seed`` (the subsets are drawn from a generator
    seeded with it, so ``compute()`` is reproducible; torchmetrics draws from the global one).

    State: the features of every image (KID needs them all), float32 on the state's device.
    """

    def __init__(self, feature: Union[int, nn.Module] = 2048, subsets: int = 100, subset_size: int = 1000,
                 degree: int = 3, gamma: Optional[float] = None, coef: float = 1.0, reset_real_features: bool = True,
                 normalize: bool = False, input_img_size: Tuple[int, int, int] = (3, 299, 299),
                 feature_extractor_weights_path: Optional[str] = None, antialias: Optional[bool] = None, *,
                 protocol: Optional[str] = None, precision: str = "fp32", device: Union[str, torch.device, None] = None,
                 sync_on_compute: bool = True, seed: int = 0) -> None:
        super().__init__(feature, reset_real_features, normalize, input_img_size, feature_extractor_weights_path,
                         antialias, protocol, precision, device, sync_on_compute)
        check_kid_options(subsets, subset_size)
        for name, value in (("degree", degree), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "degree" else 0):
                raise FidfastError(f"{name} must be a whole number ≥ {1 if name == 'degree' else 0}, got {value!r}")
        for name, value in (("gamma", gamma), ("coef", coef)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise FidfastError(f"{name} must be a number > 0, got {value!r}")
        if coef is None:
            raise FidfastError("coef must be a number > 0, got None")
        self.subsets, self.subset_size, self.degree, self.gamma, self.coef, self.seed = \
            subsets, subset_size, degree, gamma, coef, seed
        self.register_buffer("_place", torch.zeros(0, device=self._settings.device), persistent=False)
        self._kept: Dict[str, list] = {side: [] for side in SIDES}

    @property
    def _anchor(self) -> torch.Tensor:
        return self._place

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self._kept = {side: [f.to(self.device) for f in kept] for side, kept in self._kept.items()}
        return self

    def features(self, side: str) -> torch.Tensor:
        """One side's features, N×D float32, in update order (this rank's only)."""
        kept = self._kept[side]
        return torch.cat(kept) if kept else torch.empty(0, self.num_features, device=self.device)

    def update(self, imgs: torch.Tensor, real: bool) -> None:
        """Keep a batch of real or generated images' features."""
        features = self._features(imgs)
        self._kept["real" if real else "fake"].append(features.detach().float().clone())

    def forward(self, imgs: torch.Tensor, real: bool) -> None:
        """``metric(imgs, real=...)`` is :meth:`update`."""
        self.update(imgs, real)

    def compute(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """KID (mean, standard deviation over the subsets) of every image seen, float32 scalar tensors."""
        sides = []
        for side in SIDES:
            f = self.features(side)
            if self.sync_on_compute:
                f = distributed.concatenate(f)
            if f.shape[0] < self.subset_size:
                raise FidfastError(f"subset_size={self.subset_size} is more than the {f.shape[0]} {side} image(s) "
                                   "seen: KID's subsets need that many images on each side")
            sides.append(f)
        mean, std = kernel_inception_distance(*sides, self.subsets, self.subset_size, self.seed, degree=self.degree,
                                              gamma=self.gamma, coef=self.coef)
        return (torch.tensor(mean, dtype=torch.float32, device=self.device),
                torch.tensor(std, dtype=torch.float32, device=self.device))

    def reset(self) -> None:
        """Forget the generated images (and the real ones, unless ``reset_real_features=False``)."""
        for side in SIDES if self.reset_real_features else ("fake",):
            self._kept[side] = []

    real_features = property(lambda self: self._kept["real"], lambda self, v: self._keep("real", v),
                             doc="torchmetrics' list of the real images' feature batches")
    fake_features = property(lambda self: self._kept["fake"], lambda self, v: self._keep("fake", v),
                             doc="torchmetrics' list of the fake images' feature batches")

    def _keep(self, side: str, batches) -> None:
        batches = [batches] if isinstance(batches, torch.Tensor) else list(batches)
        self._kept[side] = [torch.as_tensor(f).to(self.device, torch.float32).reshape(-1, self.num_features)
                            for f in batches if torch.as_tensor(f).numel()]

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        """Also loads a torchmetrics KID's checkpoint (its states saved with ``persistent(True)``)."""
        if f"{prefix}real_features" in state_dict:
            for side in SIDES:
                self._keep(side, state_dict.pop(f"{prefix}{side}_features"))
            state_dict.setdefault(f"{prefix}_extra_state", {**self._identity(), **{
                f"{side}_features": self.features(side).cpu() for side in SIDES}})
            _adopt_torchmetrics_checkpoint(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def get_extra_state(self) -> Dict[str, Any]:
        return {**self._identity(), **{f"{side}_features": self.features(side).cpu() for side in SIDES}}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        kept = {side: state.pop(f"{side}_features") for side in SIDES}
        super().set_extra_state(state)
        self._kept = {side: [f.to(self.device)] if f.shape[0] else [] for side, f in kept.items()}
