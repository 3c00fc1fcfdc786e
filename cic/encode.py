"""Nearest bins and soft-encoding of ab values onto the quantized ab bins.

Shapes: ab is ``(N, 2, *spatial)`` (channel 0 = a, 1 = b; e.g. N x 2 x H x W), on any device; encodings
are ``(N, Q, *spatial)`` in ab's float dtype.

Neighbours are *exact*: squared Euclidean distances to every bin centre are computed (as differences, not
by the ``|x|^2 - 2 x.c + |c|^2`` expansion, which loses precision) and the k smallest are taken with
``torch.topk``. Pixels are processed in chunks of ``chunk`` pixels, so the working memory is about
``chunk * Q * 3`` floats (16384 pixels: ~60 MB in float32) on top of the (N, Q, *spatial) output; a
40 x 2 x 56 x 56 float32 batch (157 MB of output) stays under a few hundred MB. Exact ties at the k-th
neighbour (equal distances, only possible for special ab values) are broken by ``torch.topk``, i.e.
arbitrarily, like the released layer's scikit-learn ball tree.

Soft-encoding (paper Sec. 3.1): each pixel's ab is spread over its ``k`` nearest centres with weights
``exp(-d^2 / (2 sigma^2))`` normalized to sum 1. Paper: k = 5, sigma = 5 (the defaults); the released
training layer (``NNEncLayer``) used k = 10, sigma = 5.
"""
from __future__ import annotations

import torch

from ._interop import numpy_io
from .bins import as_centers

#: Paper's number of neighbours.
DEFAULT_K = 5
#: Paper's (and the released layer's) Gaussian sigma, ab units.
DEFAULT_SIGMA = 5.0
#: Pixels per distance chunk.
DEFAULT_CHUNK = 16384


def _check_ab(ab: torch.Tensor) -> None:
    if not isinstance(ab, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor or numpy array, got {type(ab)}")
    if ab.dim() < 2 or ab.shape[1] != 2:
        raise ValueError(f"expected ab of shape (N, 2, ...), got {tuple(ab.shape)}")


@numpy_io
def knn_bins(ab: torch.Tensor, k: int = DEFAULT_K, centers=None, chunk: int = DEFAULT_CHUNK):
    """The k nearest bin centres of every pixel, exactly.

    Returns ``(sqdist, index)``, both ``(N, k, *spatial)``, sorted by increasing distance;
    ``sqdist`` in ab's float dtype, ``index`` int64 into the bins.
    """
    _check_ab(ab)
    if not ab.is_floating_point():
        ab = ab.to(torch.float32)
    c = as_centers(centers, ab)
    Q = c.shape[0]
    if not 1 <= k <= Q:
        raise ValueError(f"k must be in 1..{Q}, got {k}")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    n, spatial = ab.shape[0], ab.shape[2:]
    pts = ab.reshape(n, 2, -1).transpose(1, 2).reshape(-1, 2)  # (N*P, 2), pixel-major
    dist = torch.empty(pts.shape[0], k, dtype=ab.dtype, device=ab.device)
    index = torch.empty(pts.shape[0], k, dtype=torch.long, device=ab.device)
    ca, cb = c[:, 0], c[:, 1]
    for s in range(0, pts.shape[0], chunk):
        p = pts[s:s + chunk]
        da = p[:, 0:1] - ca
        d2 = da.mul_(da)
        db = p[:, 1:2] - cb
        d2.addcmul_(db, db)
        vals, idx = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        dist[s:s + chunk] = vals
        index[s:s + chunk] = idx

    def back(x):
        return x.reshape(n, -1, k).transpose(1, 2).reshape(n, k, *spatial)

    return back(dist), back(index)


@numpy_io
def nearest_bin(ab: torch.Tensor, centers=None, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Index of the nearest bin centre of every pixel: int64 ``(N, *spatial)`` (the hard encoding)."""
    return knn_bins(ab, 1, centers, chunk)[1][:, 0]


@numpy_io
def soft_encode(ab: torch.Tensor, k: int = DEFAULT_K, sigma: float = DEFAULT_SIGMA, centers=None,
                chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Soft-encoding ``(N, Q, *spatial)``: Gaussian weights (sigma, ab units) on the k nearest bins.

    Each pixel's weights sum to 1; all other bins are 0. The argmax is the nearest bin.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if not isinstance(ab, torch.Tensor) or not ab.is_floating_point():
        _check_ab(ab)
        ab = ab.to(torch.float32)
    c = as_centers(centers, ab)
    d2, idx = knn_bins(ab, k, c, chunk)
    w = torch.softmax(d2 * (-0.5 / sigma ** 2), dim=1)  # = exp(-d^2/2s^2) / sum, computed stably
    out = torch.zeros((ab.shape[0], c.shape[0]) + tuple(ab.shape[2:]), dtype=ab.dtype, device=ab.device)
    return out.scatter_(1, idx, w)
