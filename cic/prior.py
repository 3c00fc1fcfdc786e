"""Empirical ab prior, its smoothing, and the class-rebalancing weights (paper Sec. 3.1, Eq. 3-4).

Smoothing rule (this toolkit's reading of the paper, "the empirical probability of colors in the quantized
ab space p in Delta^Q ... smoothed with a Gaussian kernel G_sigma", sigma = 5):

1. every training pixel (of non-gray images) is counted in its nearest bin (hard quantization, the same bin
   as the argmax of its soft-encoding); p = counts / total is a distribution over the Q bins;
2. p is placed on the 2D ab grid of the bins (cell (i, j) holds the bin centred at
   (a_min + g*i, b_min + g*j); g = grid spacing, 10 for the released bins), every other cell holds 0;
3. the grid is filtered with a separable, sampled Gaussian of sigma = 5 ab units, i.e. sigma/g = 0.5 cells,
   kernel exp(-x^2 / (2 (sigma/g)^2)) normalized to sum 1, truncated at radius int(4 sigma/g + 0.5) cells,
   zeros outside the grid -- exactly ``scipy.ndimage.gaussian_filter(grid, sigma/g, mode='constant',
   truncate=4.0)``;
4. the filtered grid is read back at the Q bins and renormalized to sum 1 (the little mass that the kernel
   moved onto out-of-gamut cells is dropped).

This is what ``tools/compute_prior.py`` writes as ``prior_probs.npy`` (float64, shape (Q,), sum 1, the
released file's format). The released ``prior_probs.npy`` is already smoothed; layers load it as it is.

Rebalancing (Eq. 4): w = ((1 - lambda) p + lambda / Q)^-1, lambda = 1/2, scaled so that sum_q p_q w_q = 1
(p normalized to sum 1 first). Q is the number of bins. The released ``PriorFactor`` mixed in a uniform
distribution over the bins with p > 0 instead, which is the same whenever every p_q > 0 (true for any
smoothed prior). A pixel's weight is the w of its nearest (argmax) ground-truth bin.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._interop import numpy_io
from .bins import as_centers, grid_spacing
from .encode import DEFAULT_CHUNK, nearest_bin
from .gray import GRAY_THRESHOLD, is_gray
from .paths import resolve_data_path

#: File name of the smoothed prior inside the toolkit's data/ directory (when a relative name is given).
PRIOR_PROBS = "prior_probs.npy"
#: Gaussian sigma (ab units) of the prior smoothing.
PRIOR_SIGMA = 5.0
#: lambda of the rebalancing (mix of the prior with the uniform distribution).
LAMBDA = 0.5


@numpy_io
def bin_counts(ab: torch.Tensor, centers=None, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """int64 ``(Q,)``: how many pixels of ab ``(N, 2, *spatial)`` fall in each (nearest) bin."""
    idx = nearest_bin(ab, centers, chunk)
    q = as_centers(centers, ab if ab.is_floating_point() else ab.float()).shape[0]
    return torch.bincount(idx.reshape(-1), minlength=q)


@numpy_io
def smooth_prior(p: torch.Tensor, centers=None, sigma: float = PRIOR_SIGMA,
                 truncate: float = 4.0) -> torch.Tensor:
    """Gaussian-smoothed distribution over the bins, float64 ``(Q,)`` summing to 1 (rule: module doc).

    ``p``: ``(Q,)`` probabilities or counts (normalized first); ``centers``: the bins (default released 313),
    on an integer grid; ``sigma`` in ab units (0: no smoothing, just normalization).
    """
    p = torch.as_tensor(p).to(torch.float64)
    if p.dim() != 1 or not torch.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError("smooth_prior: p must be a 1-D, finite, non-negative array with a positive sum")
    c = as_centers(centers, p)
    if c.shape[0] != p.shape[0]:
        raise ValueError(f"smooth_prior: p has {p.shape[0]} entries but there are {c.shape[0]} bins")
    if sigma < 0:
        raise ValueError("smooth_prior: sigma must be >= 0")
    p = p / p.sum()
    if sigma == 0:
        return p
    g = grid_spacing(c)
    ij = torch.round((c - c.min(dim=0).values) / g).long()
    shape = (int(ij[:, 0].max()) + 1, int(ij[:, 1].max()) + 1)
    grid = torch.zeros(shape, dtype=torch.float64, device=p.device)
    grid[ij[:, 0], ij[:, 1]] = p
    s = sigma / g
    r = int(truncate * s + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float64, device=p.device)
    kern = torch.exp(-0.5 * (x / s) ** 2)
    kern = kern / kern.sum()
    out = F.conv2d(grid[None, None], kern.view(1, 1, -1, 1), padding=(r, 0))
    out = F.conv2d(out, kern.view(1, 1, 1, -1), padding=(0, r))[0, 0]
    sm = out[ij[:, 0], ij[:, 1]]
    return sm / sm.sum()


@numpy_io
def rebalance_weights(p: torch.Tensor, lam: float = LAMBDA) -> torch.Tensor:
    """Class-rebalancing weights ``(Q,)``: ((1 - lam) p + lam / Q)^-1, scaled so that sum(p * w) = 1.

    ``p`` is the (smoothed) prior; it is normalized to sum 1 first. lam = 1 gives w = 1 everywhere,
    lam = 0 gives w = 1 / p (which needs every p > 0).
    """
    p = torch.as_tensor(p)
    p = p if p.is_floating_point() else p.to(torch.float64)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"rebalance_weights: lambda must be in [0, 1], got {lam}")
    if p.dim() != 1 or not torch.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError("rebalance_weights: p must be a 1-D, finite, non-negative array with a positive sum")
    if lam == 0 and (p == 0).any():
        raise ValueError("rebalance_weights: lambda = 0 needs p > 0 for every bin (w = 1/p)")
    p = p / p.sum()
    w = 1.0 / ((1.0 - lam) * p + lam / p.numel())
    return w / (p * w).sum()


@numpy_io
def prior_boost(encoding: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-pixel weight ``(N, 1, *spatial)``: ``weights[argmax over bins]`` of an encoding ``(N, Q, *spatial)``."""
    if encoding.dim() < 2 or encoding.shape[1] != weights.shape[0]:
        raise ValueError(f"prior_boost: encoding {tuple(encoding.shape)} does not have "
                         f"{weights.shape[0]} channels")
    w = weights.to(device=encoding.device, dtype=encoding.dtype if encoding.is_floating_point() else None)
    return w[encoding.argmax(dim=1, keepdim=True)]


class PriorAccumulator:
    """Streaming bin counts over a dataset, on any device.

    ``update(ab)`` counts the pixels of a batch ``(N, 2, *spatial)``; images judged gray (see
    :mod:`cic.gray`) are skipped unless ``skip_gray=False``, as the training set excluded them.
    """

    def __init__(self, centers=None, skip_gray: bool = True, threshold: float = GRAY_THRESHOLD,
                 device=None):
        self.centers = as_centers(centers, torch.empty(0, device=device))
        self.skip_gray = skip_gray
        self.threshold = threshold
        self.counts = torch.zeros(self.centers.shape[0], dtype=torch.long, device=device)
        self.images = 0
        self.skipped = 0

    def update(self, ab) -> int:
        """Count one batch; returns how many of its images were counted."""
        ab = torch.as_tensor(ab).to(self.counts.device)
        ab = ab if ab.is_floating_point() else ab.float()
        if self.skip_gray:
            keep = ~is_gray(ab, self.threshold)
            n_skip = int((~keep).sum())
            if n_skip:
                ab = ab[keep]
            self.skipped += n_skip
        if ab.shape[0]:
            self.counts += bin_counts(ab, self.centers.to(ab.dtype))
        self.images += ab.shape[0]
        return ab.shape[0]

    def empirical(self) -> np.ndarray:
        """The unsmoothed distribution over the bins (float64)."""
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("PriorAccumulator: no pixels counted")
        return self.counts.double().cpu().numpy() / total

    def prior(self, sigma: float = PRIOR_SIGMA) -> np.ndarray:
        """The smoothed prior (float64, sums to 1), as written to prior_probs.npy."""
        return smooth_prior(self.empirical(), self.centers.cpu().numpy(), sigma)


def load_prior(path: str | os.PathLike | None = None) -> np.ndarray:
    """Load a prior_probs.npy (float64 ``(Q,)``).  A relative path is looked up in the working directory,
    then in the toolkit's data/ (:func:`cic.resolve_data_path`); a missing file's error lists both."""
    full = resolve_data_path(path if path is not None else PRIOR_PROBS, must_exist=True, what="prior file")
    p = np.load(full).astype(np.float64)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or not p.sum() > 0:
        raise ValueError(f"prior file {full}: expected a 1-D non-negative distribution, got shape {p.shape}")
    return p


def save_prior(p, path: str | os.PathLike) -> Path:
    """Write ``p`` as float64 .npy at ``path`` (as given, i.e. relative to the working directory),
    atomically (temporary file in the same directory, then ``os.replace``)."""
    path = Path(path).expanduser()
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1 or not math.isclose(float(arr.sum()), 1.0, rel_tol=0, abs_tol=1e-9):
        raise ValueError("save_prior: expected a 1-D distribution summing to 1")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
