"""Drop-in replacement for ``pytorch_fid.fid_score``: same names, arguments, defaults and return types.

``from fidfast import fid_score`` is the whole migration. These functions compute in fp32, so they give
pytorch-fid's numbers; they run fidfast's pipeline (uint8 loader, fused preprocessing, compiled Inception,
streaming statistics) and its Fréchet distance, which does not fail when there are fewer images than dims.
"""
from __future__ import annotations

import os
import pathlib
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.nn.functional import adaptive_avg_pool2d

from fidfast.decode import IMAGE_EXTENSIONS, decode_image
from fidfast.errors import FidfastError
from fidfast.frechet import frechet_distance
from fidfast.inception import InceptionV3
from fidfast.pipeline import RunConfig, iter_features, stats_of, stats_of_pair
from fidfast.sources import ImageInput, open_source
from fidfast.stats import FeatureStats

__all__ = ["IMAGE_EXTENSIONS", "ImagePathDataset", "get_activations", "calculate_frechet_distance",
           "calculate_activation_statistics", "compute_statistics_of_path", "calculate_fid_given_paths",
           "save_fid_stats", "InceptionV3"]


class ImagePathDataset(torch.utils.data.Dataset):
    """Images as PIL RGB (or ``transforms(img)``), as pytorch-fid's dataset."""

    def __init__(self, files, transforms=None):
        self.files = files
        self.transforms = transforms

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.fromarray(decode_image(self.files[i]))
        if self.transforms is not None:
            img = self.transforms(img)
        return img


def _config(model, batch_size: int, dims: int, device, num_workers: int, progress: Optional[bool] = False
            ) -> RunConfig:
    """fp32 (pytorch-fid's numbers), with the model's weights when it names some; ``progress`` as for
    :func:`fidfast.compute_stats` (the whole-path functions show it on a terminal, as pytorch-fid does)."""
    weights = getattr(model, "weights", None)
    return RunConfig.make(dims=dims, device=device, precision="fp32", weights=weights, batch_size=batch_size,
                          num_workers=num_workers, progress=progress)


def _is_standard(model) -> bool:
    """A fidfast InceptionV3 that resizes and normalises its input: fidfast's fast path computes the same."""
    return isinstance(model, InceptionV3) and model.resize_input and model.normalize_input


def get_activations(files, model, batch_size=50, dims=2048, device="cpu", num_workers=1) -> np.ndarray:
    """Pool features of every image: float64 ndarray (len(files), dims), in file order."""
    if _is_standard(model) or model is None:
        cfg = _config(model, batch_size, dims, device, num_workers)
        opened = ImageInput([pathlib.Path(f) for f in files], f"{len(files)} files")
        chunks = [f.double().cpu() for f, _ in iter_features(opened, cfg)]
        return torch.cat(chunks).numpy() if chunks else np.empty((0, dims))
    # Any other model is called as pytorch-fid calls it: [0, 1] float batches, its own resize/normalise.
    model.eval()
    pred_arr = np.empty((len(files), dims))
    start = 0
    for i in range(0, len(files), batch_size):
        batch = torch.stack([torch.from_numpy(decode_image(f)).permute(2, 0, 1).float() / 255
                             for f in files[i:i + batch_size]]).to(device)
        with torch.no_grad():
            pred = model(batch)[0]
        if pred.size(2) != 1 or pred.size(3) != 1:
            pred = adaptive_avg_pool2d(pred, output_size=(1, 1))
        pred = pred.squeeze(3).squeeze(2).cpu().numpy()
        pred_arr[start:start + pred.shape[0]] = pred
        start += pred.shape[0]
    return pred_arr


def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float:
    """Fréchet distance of two Gaussians (float). ``eps`` is accepted for compatibility; fidfast's
    symmetric eigenvalue method needs no diagonal offset."""
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def calculate_activation_statistics(files, model, batch_size=50, dims=2048, device="cpu",
                                    num_workers=1) -> Tuple[np.ndarray, np.ndarray]:
    """(mu (dims,), sigma (dims, dims)) of the images' features, float64."""
    if _is_standard(model):
        stats = stats_of([pathlib.Path(f) for f in files], _config(model, batch_size, dims, device, num_workers))
        return stats.mu, stats.sigma
    act = get_activations(files, model, batch_size, dims, device, num_workers)
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def compute_statistics_of_path(path, model, batch_size, dims, device, num_workers=1):
    """(mu, sigma) of a folder of images (or any input fidfast reads) or of an .npz statistics file."""
    opened = open_source(path)
    if isinstance(opened, FeatureStats):
        return opened.mu, opened.sigma
    if _is_standard(model):
        stats = stats_of(opened, _config(model, batch_size, dims, device, num_workers))
        return stats.mu, stats.sigma
    if not isinstance(opened, ImageInput) or any(isinstance(ref, tuple) for ref in opened.refs):
        raise FidfastError(f"{path}: a model other than fidfast's InceptionV3 reads image files, not archives")
    return calculate_activation_statistics(opened.refs, model, batch_size, dims, device, num_workers)


def calculate_fid_given_paths(paths: Sequence[str], batch_size: int, device, dims: int, num_workers: int = 1) -> float:
    """FID between two folders of images or .npz statistics files (fp32, pytorch-fid's numbers)."""
    for p in paths:
        if not os.path.exists(p):
            raise FidfastError(f"Invalid path: {p}")
    s1, s2 = stats_of_pair(*paths, _config(None, batch_size, dims, device, num_workers, progress=None))
    return frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance)


def save_fid_stats(paths: Sequence[str], batch_size: int, device, dims: int, num_workers: int = 1) -> None:
    """Statistics of the folder ``paths[0]`` saved to the .npz ``paths[1]`` (which must not exist)."""
    if not os.path.exists(paths[0]):
        raise FidfastError(f"Invalid path: {paths[0]}")
    if os.path.exists(paths[1]):
        raise FidfastError(f"Existing output file: {paths[1]}")
    stats_of(paths[0], _config(None, batch_size, dims, device, num_workers, progress=None)).save(paths[1])
