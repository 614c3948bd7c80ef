"""The statistics stage: streaming float64 mean and covariance that merge exactly.

The state is Chan/Welford's (n, mean, co-moment Σ(x−mean)(x−mean)ᵀ), accumulated batch by batch on
the features' device by the native ``cov_update_`` op, so no feature matrix is ever held whole and a
large common mean costs no precision. Covariance = co-moment / (n − 1), as ``np.cov``. Two states merge
exactly (``cov_merge_``; :meth:`FeatureStats.merge_`), in any order: the one merge that shards,
torchrun ranks and saved files use.

Files: ``save`` writes an ``.npz`` with ``mu`` and ``sigma`` (what pytorch-fid reads) plus ``n``, which
makes the state exact to merge again (co-moment = sigma·(n−1)). pytorch-fid's own files carry no ``n``:
they score fine but cannot be merged.

The two ops have PyTorch twins below (``_cov_update_torch``, ``_cov_merge_torch``), used where the
native extension has no kernel and held to the same checks in the tests.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

from fidfast import native
from fidfast.errors import FidfastError
from fidfast.files import atomic_write, serialized

FORMAT_VERSION = 1


# -- the ops ------------------------------------------------------------------------------------

def cov_update_(mean: torch.Tensor, comoment: torch.Tensor, n: int, batch: torch.Tensor) -> None:
    """Add a batch of feature rows to a streaming (mean, co-moment) state, in place.

    The batch's own float64 mean and centred co-moment are merged exactly (Chan et al.), so
    ``comoment / (N − 1)`` equals ``np.cov(X, rowvar=False)`` of all N rows to ~1e-13 even when
    the features have a large mean. With n == 0 the buffers' contents are ignored and overwritten.

    Args:
        mean: float64 (d,) contiguous, mean of the n rows seen so far; updated.
        comoment: float64 (d, d) contiguous, Σ (x − mean)(x − mean)ᵀ over those rows; updated (full symmetric).
        n: number of rows seen before this batch (the caller tracks it).
        batch: float32, float16 or float64 (B, d) on the same device. B == 0 is a no-op.
    """
    if native.has_kernel(mean.device):
        torch.ops.fidfast.cov_update_(mean, comoment, n, batch)
    else:
        _cov_update_torch(mean, comoment, n, batch)


def cov_merge_(mean: torch.Tensor, comoment: torch.Tensor, n: int, other_mean: torch.Tensor,
               other_comoment: torch.Tensor, other_n: int) -> None:
    """Merge another (mean, co-moment, count) state into this one, in place (exact; any order).

    Args:
        mean, comoment, n: this state, as in :func:`cov_update_`; ``mean`` and ``comoment`` are updated.
        other_mean, other_comoment, other_n: the state merged in (float64, same shapes and device).
    """
    if native.has_kernel(mean.device):
        torch.ops.fidfast.cov_merge_(mean, comoment, n, other_mean, other_comoment, other_n)
    else:
        _cov_merge_torch(mean, comoment, n, other_mean, other_comoment, other_n)


def _check_state(op: str, mean: torch.Tensor, comoment: torch.Tensor, n: int) -> None:
    native.check(mean.dtype == torch.float64 and comoment.dtype == torch.float64,
                 f"{op}: mean and comoment must be float64")
    d = mean.shape[0] if mean.ndim == 1 else -1
    native.check(d >= 0 and tuple(comoment.shape) == (d, d), f"{op}: expected mean [d] and comoment [d, d], got "
                 f"{tuple(mean.shape)} and {tuple(comoment.shape)}")
    native.check(mean.is_contiguous() and comoment.is_contiguous(), f"{op}: mean and comoment must be contiguous")
    native.check(n >= 0, f"{op}: n must be >= 0, got {n}")


def _cov_update_torch(mean: torch.Tensor, comoment: torch.Tensor, n: int, batch: torch.Tensor) -> None:
    _check_state("cov_update_", mean, comoment, n)
    native.check(batch.dtype in (torch.float32, torch.float16, torch.float64),
                 f"cov_update_: batch must be float32, float16 or float64, got {batch.dtype}")
    native.check(batch.ndim == 2 and batch.shape[1] == mean.shape[0],
                 f"cov_update_: batch must be [B, {mean.shape[0]}], got {tuple(batch.shape)}")
    native.check(batch.device == mean.device,
                 f"cov_update_: batch is on {batch.device} but the state is on {mean.device}")
    if batch.shape[0] == 0:
        return
    x = batch.to(torch.float64)
    batch_mean = x.mean(0)
    centred = x - batch_mean
    _merge_torch(mean, comoment, n, batch_mean, centred.T @ centred, batch.shape[0])


def _cov_merge_torch(mean: torch.Tensor, comoment: torch.Tensor, n: int, other_mean: torch.Tensor,
                     other_comoment: torch.Tensor, other_n: int) -> None:
    _check_state("cov_merge_", mean, comoment, n)
    native.check(other_mean.dtype == torch.float64 and other_comoment.dtype == torch.float64,
                 "cov_merge_: other_mean and other_comoment must be float64")
    native.check(other_mean.shape == mean.shape and other_comoment.shape == comoment.shape,
                 "cov_merge_: the two states have different shapes")
    native.check(other_n >= 0, f"cov_merge_: other_n must be >= 0, got {other_n}")
    if other_n > 0:
        _merge_torch(mean, comoment, n, other_mean, other_comoment, other_n)


def _merge_torch(mean: torch.Tensor, comoment: torch.Tensor, n: int, other_mean: torch.Tensor, m2: torch.Tensor,
                 other_n: int) -> None:
    m2 = 0.5 * (m2 + m2.T)  # exactly symmetric even if the GEMM was not
    if n == 0:
        mean.copy_(other_mean)
        comoment.copy_(m2)
        return
    total = float(n) + float(other_n)
    delta = other_mean - mean
    comoment.add_(m2).add_(float(n) * float(other_n) / total * torch.outer(delta, delta))
    mean.add_(delta * (float(other_n) / total))


# -- the statistics -----------------------------------------------------------------------------

class FeatureStats:
    """Streaming statistics of d-dimensional features.

    Attributes:
        dims: d.
        n: number of feature rows seen (``None`` for statistics loaded from a file without a count).
        mu: float64 (d,) numpy mean.
        sigma: float64 (d, d) numpy covariance with np.cov's n−1 normalisation.
        meta: string-valued notes saved with the file (skipped images, precision, dims, protocol).
        path: the file it was loaded from, for messages (None otherwise).
    """

    def __init__(self, dims: int, device: Union[str, torch.device] = "cpu") -> None:
        self.dims = int(dims)
        self._n: Optional[int] = 0
        self._mean = torch.zeros(self.dims, dtype=torch.float64, device=device)
        self._comoment = torch.zeros(self.dims, self.dims, dtype=torch.float64, device=device)
        self.meta: dict = {}
        self.path: Optional[str] = None

    # -- accumulation -------------------------------------------------------------------------------
    def update(self, features: torch.Tensor) -> "FeatureStats":
        """Add a batch of features (B×d, float32/float16/float64; moved to the stats' device)."""
        if self._n is None:
            raise FidfastError("these statistics were loaded without a sample count and cannot be extended")
        if features.ndim != 2 or features.shape[1] != self.dims:
            raise ValueError(f"features must be B×{self.dims}, got {tuple(features.shape)}")
        if features.shape[0] == 0:
            return self
        cov_update_(self._mean, self._comoment, self._n, features.to(self._mean.device))
        self._n += int(features.shape[0])
        return self

    def merge_(self, other: "FeatureStats") -> "FeatureStats":
        """Fold the statistics of a disjoint set into these, exactly (Chan et al.); returns self."""
        if other.dims != self.dims:
            raise FidfastError(f"cannot merge statistics of different dims: {sorted({self.dims, other.dims})}")
        if self._n is None or other.n is None:
            raise FidfastError("cannot merge statistics without a sample count (pytorch-fid .npz files carry none)")
        cov_merge_(self._mean, self._comoment, self._n, other.mean.to(self.device), other.comoment.to(self.device),
                   other.n)
        self._n += other.n
        return self

    @classmethod
    def merge(cls, parts: Iterable["FeatureStats"]) -> "FeatureStats":
        """Exact merge of statistics of disjoint sets, any order; every part needs a count."""
        parts = list(parts)
        if not parts:
            raise FidfastError("nothing to merge")
        out = cls(parts[0].dims, device=parts[0].device)
        for p in parts:
            out.merge_(p)
        return out

    @classmethod
    def from_comoment(cls, mean: torch.Tensor, comoment: torch.Tensor, n: int) -> "FeatureStats":
        """Statistics from their exact state: float64 mean (d,), co-moment (d, d) and count n, as tensors
        (on any device; the state is used as is, not copied)."""
        stats = cls(0, device=mean.device)
        stats.dims, stats._n = int(mean.shape[0]), int(n)
        stats._mean, stats._comoment = mean, comoment
        return stats

    @classmethod
    def from_moments(cls, mu: np.ndarray, sigma: np.ndarray, n: Optional[int] = None) -> "FeatureStats":
        """Statistics from a mean (d,) and covariance (d, d), with the image count if known."""
        mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        sigma = np.asarray(sigma, dtype=np.float64)
        if sigma.shape != (mu.shape[0], mu.shape[0]):
            raise FidfastError(f"mu has {mu.shape[0]} dims but sigma has shape {sigma.shape}")
        scale = (n - 1) if n is not None and n > 1 else 1
        stats = cls.from_comoment(torch.from_numpy(mu.copy()), torch.from_numpy(sigma * scale), 0)
        stats._n = None if n is None else int(n)
        return stats

    # -- views --------------------------------------------------------------------------------------
    @property
    def n(self) -> Optional[int]:
        return self._n

    @property
    def device(self) -> torch.device:
        return self._mean.device

    @property
    def protocol(self) -> Optional[str]:
        """The preprocessing protocol the features were computed with (None: not recorded, as in
        pytorch-fid's and TTUR's files)."""
        return self.meta.get("protocol")

    @property
    def mean(self) -> torch.Tensor:
        """float64 (d,) tensor on the stats' device."""
        return self._mean

    @property
    def comoment(self) -> torch.Tensor:
        """float64 (d, d) tensor on the stats' device: Σ (x − mean)(x − mean)ᵀ (the covariance itself
        for statistics without a count)."""
        return self._comoment

    @property
    def covariance(self) -> torch.Tensor:
        """float64 (d, d) tensor on the stats' device (np.cov's n−1 normalisation)."""
        if self._n is None:
            return self._comoment
        if self._n < 2:
            raise FidfastError(f"a covariance needs at least 2 images, got {self._n}")
        return self._comoment / (self._n - 1)

    @property
    def mu(self) -> np.ndarray:
        return self._mean.cpu().numpy()

    @property
    def sigma(self) -> np.ndarray:
        return self.covariance.cpu().numpy()

    def to(self, device: Union[str, torch.device]) -> "FeatureStats":
        self._mean = self._mean.to(device)
        self._comoment = self._comoment.to(device)
        return self

    # -- files --------------------------------------------------------------------------------------
    def npz_bytes(self, spatial: Optional["FeatureStats"] = None, features: Optional[np.ndarray] = None) -> bytes:
        """The .npz file's bytes: mu and sigma (what pytorch-fid reads), n, fidfast's format and meta; with
        ``spatial``, also mu_s and sigma_s (the ADM suite's sFID statistics, as guided-diffusion's reference
        batches hold them), with ``features`` the features themselves (``pool_features``: the suite's
        precision and recall need them, where the evaluator's reference batch holds the images). Statistics
        of one image (a shard to merge later) carry a zero ``sigma``: their co-moment, which ``n`` = 1 makes
        exact to merge."""
        sigma = self.sigma if self._n is None or self._n >= 2 else self._comoment.cpu().numpy()
        fields = {"mu": self.mu, "sigma": sigma, "fidfast_format": np.int64(FORMAT_VERSION)}
        if spatial is not None:
            fields.update(mu_s=spatial.mu, sigma_s=spatial.sigma)
        if features is not None:
            fields["pool_features"] = np.asarray(features, dtype=np.float32)
        if self._n is not None:
            fields["n"] = np.int64(self._n)
        fields.update({f"meta_{k}": np.asarray(str(v)) for k, v in self.meta.items()})
        return serialized(lambda f: np.savez(f, **fields))

    def save(self, path: Union[str, os.PathLike], exclusive: bool = False,
             spatial: Optional["FeatureStats"] = None, features: Optional[np.ndarray] = None) -> Path:
        """Write an .npz readable by pytorch-fid (:meth:`npz_bytes`); atomic (write then rename; a failed
        write leaves nothing), with the permissions a plain ``np.savez`` would give. With ``exclusive``, an
        existing file is never replaced (FileExistsError, even when it appeared while these statistics were
        computed). Returns the path written (see :func:`npz_path`)."""
        return atomic_write(npz_path(path), self.npz_bytes(spatial, features), exclusive=exclusive)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], suffix: str = "") -> "FeatureStats":
        """Read pytorch-fid's or fidfast's .npz (``suffix`` "_s": the ADM suite's spatial statistics, mu_s
        and sigma_s); never unpickles (object arrays are refused)."""
        path = Path(path)
        names = (f"mu{suffix}", f"sigma{suffix}")
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = set(f.files)
                if not set(names) <= keys:
                    raise FidfastError(f"{path}: statistics file needs arrays {names[0]!r} and {names[1]!r}, has "
                                       f"{sorted(keys)}")
                mu, sigma = f[names[0]], f[names[1]]
                n = _count(path, f["n"]) if "n" in keys else None
                meta = {k[5:]: str(f[k]) for k in keys if k.startswith("meta_")}
        except FidfastError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise FidfastError(f"{path}: not a readable statistics file ({exc})") from None
        for name, arr in zip(names, (mu, sigma)):
            if not np.issubdtype(arr.dtype, np.floating):
                raise FidfastError(f"{path}: '{name}' has dtype {arr.dtype}, expected floats")
            if not np.isfinite(arr).all():
                raise FidfastError(f"{path}: '{name}' holds non-finite values")
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise FidfastError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
        if n is not None and n < 1:
            raise FidfastError(f"{path}: statistics of no images")
        stats = cls.from_moments(mu, sigma, n)
        stats.meta = meta
        stats.path = str(path)
        return stats

    def __repr__(self) -> str:
        return f"FeatureStats(n={self._n}, dims={self.dims}, device={self.device})"


def npz_path(path: Union[str, os.PathLike]) -> Path:
    """The file that saving statistics to ``path`` writes: as ``np.savez``, ``.npz`` is appended to a
    name that does not end with it."""
    path = Path(path)
    return path if path.name.endswith(".npz") else path.with_name(path.name + ".npz")


def _count(path: Path, n: np.ndarray) -> int:
    if n.shape != () or not np.issubdtype(n.dtype, np.integer) or int(n) < 0:
        raise FidfastError(f"{path}: 'n' must be one non-negative integer (the image count), got {n.dtype} "
                           f"of shape {n.shape}")
    return int(n)
