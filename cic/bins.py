"""The quantized ab output space: bin centres, and the in-gamut rule for other grid sizes.

The default bins are the released model's 313 centres (``data/pts_in_hull.npy``, int64, shape (313, 2),
columns (a, b), rows in the released order = the network's output channels; grid spacing 10, sorted by a,
then b). A caffemodel is only decodable with the bin set *and order* it was trained with, so the released
table is always the default; :func:`gamut_bins` is a documented rule for users who change the quantization.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
import torch

from .paths import DATA_DIR, resolve_data_path

#: File name of the released bin centres inside the toolkit's data/ directory.
PTS_IN_HULL = "pts_in_hull.npy"
#: Grid spacing of the released quantization (ab units).
GRID = 10
#: Number of released bins.
Q = 313


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> np.ndarray:
    if not os.path.exists(path):
        raise FileNotFoundError(f"bin centres file not found: {path}")
    arr = np.load(path)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"bin centres file {path}: expected shape (Q, 2), got {arr.shape}")
    arr.setflags(write=False)
    return arr


def load_bins(path: str | os.PathLike | None = None) -> np.ndarray:
    """Bin centres ``(Q, 2)`` as stored (int64 for the released file); default: the released 313.

    A relative path is looked up in the working directory, then in the toolkit's data/
    (:func:`cic.resolve_data_path`); the default is always the toolkit's own file.
    """
    return _load_cached(str(_bins_path(path))).copy()


def _bins_path(path):
    if path is None:
        return DATA_DIR / PTS_IN_HULL
    return resolve_data_path(path, must_exist=True, what="bin centres file")


def bin_centers(path: str | os.PathLike | None = None, device=None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Bin centres as a float tensor ``(Q, 2)`` on ``device``."""
    arr = _load_cached(str(_bins_path(path)))
    return torch.tensor(arr, device=device, dtype=dtype)


def as_centers(centers, like: torch.Tensor) -> torch.Tensor:
    """``centers`` (None = released bins, array or tensor ``(Q, 2)``) on ``like``'s device, float dtype.

    The dtype is ``like``'s if it is floating point, else float32.
    """
    dtype = like.dtype if like.is_floating_point() else torch.float32
    if centers is None:
        return bin_centers(device=like.device, dtype=dtype)
    c = torch.as_tensor(centers).to(device=like.device, dtype=dtype)
    if c.dim() != 2 or c.shape[1] != 2:
        raise ValueError(f"bin centres must have shape (Q, 2), got {tuple(c.shape)}")
    return c


def grid_spacing(centers) -> int:
    """The grid spacing of integer bin centres: the gcd of all coordinate offsets (10 for the released)."""
    c = np.asarray(centers.cpu() if isinstance(centers, torch.Tensor) else centers)
    if not np.all(c == np.round(c)):
        raise ValueError("grid_spacing needs bin centres on an integer grid")
    c = np.round(c).astype(np.int64)
    g = int(np.gcd.reduce(np.abs(c - c.min(axis=0)).ravel()))
    if g == 0:
        raise ValueError("grid_spacing: all bin centres coincide")
    return g


def srgb_ab(levels_step: int = 1, device=None, chunk: int = 1 << 20):
    """Yield the ab values (2, M) of the 8-bit sRGB cube, in chunks, levels 0, s, 2s, ..., and 255."""
    from .color import rgb_to_lab

    lv = np.unique(np.r_[np.arange(0, 256, levels_step), 255]).astype(np.float32) / 255.0
    lv = torch.tensor(lv, device=device)
    n = len(lv)
    per = max(1, chunk // (n * n))
    g, b = torch.meshgrid(lv, lv, indexing="ij")
    for i in range(0, n, per):
        r = lv[i:i + per]
        rgb = torch.stack([r[:, None, None].expand(-1, n, n),
                           g.expand(len(r), n, n), b.expand(len(r), n, n)]).reshape(3, -1, 1)
        yield rgb_to_lab(rgb).reshape(3, -1)[1:]


def gamut_bins(grid: int = GRID, margin: float = 0.0, levels_step: int = 1, device=None) -> np.ndarray:
    """In-gamut bin centres for a square ab grid of spacing ``grid`` (int64 ``(M, 2)``, sorted by a, then b).

    Rule: the bin centred at ``(grid*i, grid*j)`` is in gamut if at least one 8-bit sRGB colour
    (R, G, B each in 0, s, 2s, ..., 255 with ``s = levels_step``; all 16.7M colours by default, so every
    lightness is included) has its ab value in the closed square of half-width ``grid/2 + margin`` around
    the centre. With ``margin = 0`` these are exactly the bins that the nearest-centre quantization of real
    sRGB colours can produce. For grid 10 it gives 261 bins, all among the released 313; ``margin = 5``
    gives 309 of the 313 and nothing outside them. (The released set came from an unpublished, slightly
    more generous rule; keep ``data/pts_in_hull.npy`` for the released model.)
    """
    if grid <= 0:
        raise ValueError("grid must be positive")
    h = grid / 2.0 + margin
    reach = int(math.ceil(h / grid))        # cells away from floor(ab / grid) that a colour can touch
    K = int(math.ceil(200.0 / grid)) + reach + 2  # sRGB ab lies well inside [-200, 200]
    M = 2 * K + 1
    hits = torch.zeros(M * M, dtype=torch.bool, device=device)
    for ab in srgb_ab(levels_step, device=device):
        ab = ab.double()
        base = torch.floor(ab / grid).long()
        for di in range(-reach, reach + 2):
            ci = base[0] + di
            ok_a = (ab[0] - ci * grid).abs() <= h
            for dj in range(-reach, reach + 2):
                cj = base[1] + dj
                ok = ok_a & ((ab[1] - cj * grid).abs() <= h)
                hits |= torch.bincount(((ci + K) * M + (cj + K))[ok], minlength=M * M) > 0
    idx = torch.nonzero(hits).squeeze(1).cpu().numpy()
    cells = np.stack([idx // M - K, idx % M - K], axis=1) * grid  # row-major: sorted by a, then b
    return cells.astype(np.int64)
