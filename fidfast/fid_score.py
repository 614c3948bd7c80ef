"""Drop-in replacement for ``pytorch_fid.fid_score``: same names, arguments, defaults, return types and
call chain (``calculate_fid_given_paths`` → ``compute_statistics_of_path`` →
``calculate_activation_statistics`` → ``get_activations``), each using the model it is given.

A fidfast ``InceptionV3`` that still holds its FID weights and resizes and normalises its input (the one
``calculate_fid_given_paths`` builds) computes the same function as fidfast's compiled pipeline, which
then runs in its place, in fp32: pytorch-fid's numbers, with fidfast's uint8 loader, fused
preprocessing and streaming statistics. Any other model (changed weights, other output blocks,
pytorch-fid's own, a mock) is called as pytorch-fid calls it: float [0, 1] batches in, ``model(batch)[0]``
out, averaged to 1×1 if it is larger. These functions compute in this process only: inside a process
group they neither shard nor communicate. The Fréchet distance is fidfast's, which does not fail when
there are fewer images than dims.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.nn.functional import adaptive_avg_pool2d

from fidfast import distributed, pipeline
from fidfast.decode import decode_image
from fidfast.feeder import Feeder
from fidfast.errors import FidfastError, PathError
from fidfast.frechet import frechet_distance
from fidfast.inception import InceptionV3
from fidfast.network import BLOCK_INDEX_BY_DIM
from fidfast.preprocess import to_unit, unpack
from fidfast.progress import Progress
from fidfast.settings import Settings, default_num_workers, resolve_device
from fidfast.sources import IMAGE_EXTENSIONS, ImageFiles, open_source
from fidfast.stats import FeatureStats, npz_path

__all__ = ["IMAGE_EXTENSIONS", "ImagePathDataset", "get_activations", "calculate_frechet_distance",
           "calculate_activation_statistics", "compute_statistics_of_path", "calculate_fid_given_paths",
           "save_fid_stats", "InceptionV3", "parser", "main"]

# pytorch-fid's command line, as its module defines it (`python -m pytorch_fid` calls main()).
parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--batch-size", type=int, default=50, help="Batch size to use")
parser.add_argument("--num-workers", type=int,
                    help="Number of processes to use for data loading. Defaults to `min(8, num_cpus)`")
parser.add_argument("--device", type=str, default=None, help="Device to use. Like cuda, cuda:0 or cpu")
parser.add_argument("--dims", type=int, default=2048, choices=list(BLOCK_INDEX_BY_DIM),
                    help="Dimensionality of Inception features to use. By default, uses pool3 features")
parser.add_argument("--save-stats", action="store_true",
                    help="Generate an npz archive from a directory of samples. The first path is used as input "
                    "and the second as output.")
parser.add_argument("path", type=str, nargs=2, help="Paths to the generated images or to .npz statistic files")


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


def _settings(batch_size: int, dims: int, device, num_workers: int, model=None) -> Settings:
    """fp32 settings for the pipeline, with the weights of ``model`` (a fidfast InceptionV3) if given."""
    return Settings(dims=dims, protocol="pytorch-fid", device=device, precision="fp32", batch_size=batch_size,
                    num_workers=num_workers, weights=getattr(model, "weights", None))


def _is_the_pipeline(model, dims: int) -> bool:
    """True when ``model`` computes exactly what fidfast's pipeline computes for ``dims``."""
    return (isinstance(model, InceptionV3) and model.resize_input and model.normalize_input
            and model.output_blocks[0] == BLOCK_INDEX_BY_DIM.get(dims) and model.holds_weights())


def _image_files(files) -> ImageFiles:
    return ImageFiles([pathlib.Path(f) for f in files], f"{len(files)} files")


def get_activations(files, model, batch_size=50, dims=2048, device="cpu", num_workers=1) -> np.ndarray:
    """Pool features of every image: float64 ndarray (len(files), dims), in file order."""
    model.eval()
    if _is_the_pipeline(model, dims):
        settings = _settings(batch_size, dims, device, num_workers, model)
        chunks = [f.double().cpu() for f, _ in pipeline.iter_features(_image_files(files), settings)]
        return torch.cat(chunks).numpy() if chunks else np.empty((0, dims))
    # The model as pytorch-fid calls it: [0, 1] float batches, its own resize and normalisation.
    settings = Settings(device=device, precision="fp32", batch_size=batch_size, num_workers=num_workers)
    pred_arr = np.empty((len(files), dims))
    start = 0
    bar = Progress(f"fidfast {len(files)} files", len(files), settings.progress)
    with Feeder(_image_files(files).refs, torch.device("cpu"), settings.num_workers, chunk=batch_size) as feeder:
        for batch in feeder:
            images = [to_unit(img) for img in unpack(batch)]
            same_size = len({img.shape for img in images}) == 1
            for x in [torch.stack(images)] if same_size else [img[None] for img in images]:  # as at batch size 1
                with torch.no_grad():
                    pred = model(x.to(settings.device))[0]
                if pred.size(2) != 1 or pred.size(3) != 1:
                    pred = adaptive_avg_pool2d(pred, output_size=(1, 1))
                pred = pred.squeeze(3).squeeze(2).cpu().numpy()
                pred_arr[start:start + pred.shape[0]] = pred
                start += pred.shape[0]
            bar.update(len(batch))
    bar.close()
    return pred_arr


def calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6) -> float:
    """Fréchet distance of two Gaussians (float). ``eps`` is accepted for compatibility; fidfast's
    symmetric eigenvalue method needs no diagonal offset."""
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def calculate_activation_statistics(files, model, batch_size=50, dims=2048, device="cpu",
                                    num_workers=1) -> Tuple[np.ndarray, np.ndarray]:
    """(mu (dims,), sigma (dims, dims)) of the images' features, float64."""
    if _is_the_pipeline(model, dims):
        with distributed.single_process():
            stats = pipeline.statistics(_image_files(files), _settings(batch_size, dims, device, num_workers, model))
        return stats.mu, stats.sigma
    act = get_activations(files, model, batch_size, dims, device, num_workers)
    return np.mean(act, axis=0), np.cov(act, rowvar=False)


def compute_statistics_of_path(path, model, batch_size, dims, device, num_workers=1):
    """(mu, sigma) of a folder of images (or any input fidfast reads) or of an .npz statistics file."""
    opened = open_source(path)
    if isinstance(opened, FeatureStats):
        return opened.mu, opened.sigma
    if _is_the_pipeline(model, dims):
        with distributed.single_process():
            stats = pipeline.statistics(opened, _settings(batch_size, dims, device, num_workers, model))
        return stats.mu, stats.sigma
    if not isinstance(opened, ImageFiles) or any(isinstance(ref, tuple) for ref in opened.refs):
        raise FidfastError(f"{path}: a model other than fidfast's InceptionV3 reads image files, not archives")
    return calculate_activation_statistics(opened.refs, model, batch_size, dims, device, num_workers)


def calculate_fid_given_paths(paths: Sequence[str], batch_size: int, device, dims: int, num_workers: int = 1) -> float:
    """FID between two folders of images or .npz statistics files (fp32, pytorch-fid's numbers)."""
    for p in paths:
        if not os.path.exists(p):
            raise PathError(f"Invalid path: {p}")
    settings = _settings(batch_size, dims, device, num_workers)  # dims and device checked before any work
    model = InceptionV3([BLOCK_INDEX_BY_DIM[dims]]).to(settings.device)
    m1, s1 = compute_statistics_of_path(paths[0], model, batch_size, dims, device, num_workers)
    m2, s2 = compute_statistics_of_path(paths[1], model, batch_size, dims, device, num_workers)
    return calculate_frechet_distance(m1, s1, m2, s2)


def save_fid_stats(paths: Sequence[str], batch_size: int, device, dims: int, num_workers: int = 1) -> None:
    """Statistics of the folder ``paths[0]`` saved to the .npz ``paths[1]`` (which must not exist)."""
    if not os.path.exists(paths[0]):
        raise PathError(f"Invalid path: {paths[0]}")
    if os.path.exists(paths[1]) or npz_path(paths[1]).exists():  # np.savez would write paths[1] + .npz
        raise PathError(f"Existing output file: {paths[1]}")
    with distributed.single_process():
        stats = pipeline.statistics(paths[0], _settings(batch_size, dims, device, num_workers))
    try:
        stats.save(paths[1], exclusive=True)
    except FileExistsError:
        raise PathError(f"Existing output file: {paths[1]}") from None


def main(argv: Optional[Sequence[str]] = None) -> None:
    """pytorch-fid's command line: the FID of two paths, or --save-stats; fp32. A user error is one line on
    stderr and exit code 2, as fidfast's own command line does."""
    args = parser.parse_args(argv)
    device = args.device if args.device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        num_workers = default_num_workers(resolve_device(device)) if args.num_workers is None else args.num_workers
        if args.save_stats:
            save_fid_stats(args.path, args.batch_size, device, args.dims, num_workers)
            return
        fid_value = calculate_fid_given_paths(args.path, args.batch_size, device, args.dims, num_workers)
    except FidfastError as exc:
        sys.stderr.write(f"fidfast: error: {exc}\n")
        sys.exit(2)
    print("FID: ", fid_value)


if __name__ == "__main__":  # python -m fidfast.fid_score, as python -m pytorch_fid.fid_score
    main()
