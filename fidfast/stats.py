"""Feature statistics: streaming float64 mean and covariance that merge exactly.

The state is Chan/Welford's (n, mean, co-moment Σ(x−mean)(x−mean)ᵀ), accumulated batch by batch on
the features' device by the native ``cov_update_`` op, so no feature matrix is ever held whole and a
large common mean costs no precision. Covariance = co-moment / (n − 1), as ``np.cov``.

Files: ``save`` writes an ``.npz`` with ``mu`` and ``sigma`` (what pytorch-fid reads) plus ``n``, which
makes the state exact to merge again (co-moment = sigma·(n−1)). pytorch-fid's own files carry no ``n``:
they score fine but cannot be merged.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import torch

from fidfast import _ops
from fidfast.errors import FidfastError

FORMAT_VERSION = 1


class FeatureStats:
    """Streaming statistics of d-dimensional features.

    Attributes:
        n: number of feature rows seen (``None`` for statistics loaded from a file without a count).
        mu: float64 (d,) numpy mean.
        sigma: float64 (d, d) numpy covariance with np.cov's n−1 normalisation.
    """

    def __init__(self, dims: int, device: Union[str, torch.device] = "cpu") -> None:
        self.dims = int(dims)
        self._n: Optional[int] = 0
        self._mean = torch.zeros(self.dims, dtype=torch.float64, device=device)
        self._comoment = torch.zeros(self.dims, self.dims, dtype=torch.float64, device=device)
        self.meta: dict = {}
        self.path: Optional[str] = None  # the file it was loaded from, for messages

    # -- accumulation -------------------------------------------------------------------------------
    def update(self, features: torch.Tensor) -> "FeatureStats":
        """Add a batch of features (B×d, float32/float16/float64, on the stats' device)."""
        if self._n is None:
            raise FidfastError("these statistics were loaded without a sample count and cannot be extended")
        if features.ndim != 2 or features.shape[1] != self.dims:
            raise ValueError(f"features must be B×{self.dims}, got {tuple(features.shape)}")
        if features.shape[0] == 0:
            return self
        _ops.cov_update_(self._mean, self._comoment, self._n, features.to(self._mean.device))
        self._n += int(features.shape[0])
        return self

    @classmethod
    def from_moments(cls, mu: np.ndarray, sigma: np.ndarray, n: Optional[int] = None) -> "FeatureStats":
        mu = np.asarray(mu, dtype=np.float64).reshape(-1)
        sigma = np.asarray(sigma, dtype=np.float64)
        if sigma.shape != (mu.shape[0], mu.shape[0]):
            raise FidfastError(f"mu has {mu.shape[0]} dims but sigma has shape {sigma.shape}")
        stats = cls(mu.shape[0])
        stats._mean = torch.from_numpy(mu.copy())
        stats._n = None if n is None else int(n)
        scale = (stats._n - 1) if stats._n is not None and stats._n > 1 else 1
        stats._comoment = torch.from_numpy(sigma * scale)
        return stats

    @classmethod
    def merge(cls, parts: Iterable["FeatureStats"]) -> "FeatureStats":
        """Exact merge of statistics of disjoint sets (Chan et al.); every part needs a count."""
        parts = list(parts)
        if not parts:
            raise FidfastError("nothing to merge")
        dims = {p.dims for p in parts}
        if len(dims) != 1:
            raise FidfastError(f"cannot merge statistics of different dims: {sorted(dims)}")
        if any(p.n is None for p in parts):
            raise FidfastError("cannot merge statistics without a sample count (pytorch-fid .npz files carry none)")
        out = cls(parts[0].dims, device=parts[0].device)
        for p in parts:
            _ops.cov_merge_(out._mean, out._comoment, out._n, p._mean.to(out.device), p._comoment.to(out.device),
                            p._n)
            out._n += p._n
        return out

    # -- views --------------------------------------------------------------------------------------
    @property
    def n(self) -> Optional[int]:
        return self._n

    @property
    def device(self) -> torch.device:
        return self._mean.device

    @property
    def mean(self) -> torch.Tensor:
        """float64 (d,) tensor on the stats' device."""
        return self._mean

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
    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write an .npz readable by pytorch-fid (mu, sigma) plus n; atomic (write then rename), with the
        permissions a plain ``np.savez`` would give. Returns the path written (see :func:`npz_path`)."""
        path = npz_path(path)
        fields = {"mu": self.mu, "sigma": self.sigma, "fidfast_format": np.int64(FORMAT_VERSION)}
        if self._n is not None:
            fields["n"] = np.int64(self._n)
        fields.update({f"meta_{k}": np.asarray(str(v)) for k, v in self.meta.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
        os.close(fd)
        try:
            np.savez(tmp, **fields)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; statistics files are shared
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "FeatureStats":
        """Read pytorch-fid's or fidfast's .npz; never unpickles (object arrays are refused)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = set(f.files)
                if not {"mu", "sigma"} <= keys:
                    raise FidfastError(f"{path}: statistics file needs arrays 'mu' and 'sigma', has {sorted(keys)}")
                mu, sigma = f["mu"], f["sigma"]
                n = _count(path, f["n"]) if "n" in keys else None
                meta = {k[5:]: str(f[k]) for k in keys if k.startswith("meta_")}
        except FidfastError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise FidfastError(f"{path}: not a readable statistics file ({exc})") from None
        for name, arr in (("mu", mu), ("sigma", sigma)):
            if not np.issubdtype(arr.dtype, np.floating):
                raise FidfastError(f"{path}: '{name}' has dtype {arr.dtype}, expected floats")
            if not np.isfinite(arr).all():
                raise FidfastError(f"{path}: '{name}' holds non-finite values")
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise FidfastError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit together")
        if n is not None and n < 2:
            raise FidfastError(f"{path}: statistics of {n} image(s); a covariance needs at least 2")
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
