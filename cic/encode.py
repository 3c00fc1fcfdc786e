"""Nearest bins and soft-encoding of ab values onto the quantized ab bins.

Shapes: ab is ``(N, 2, *spatial)`` (channel 0 = a, 1 = b; e.g. N x 2 x H x W), on any device; encodings
are ``(N, Q, *spatial)`` in ab's float dtype.

Neighbours are *exact*. Squared Euclidean distances are computed as differences,
``(a - c_a)^2 + (b - c_b)^2`` (not by the ``|x|^2 - 2 x.c + |c|^2`` expansion, which loses precision, and
without fused multiply-adds), and the k smallest are taken by ``(distance, bin index)``: an exact tie at
the k-th neighbour (only possible for special ab values, e.g. gray pixels, equidistant from symmetric bins)
goes to the lower bin index. Every method gives the same distances and bins, bit for bit:

* ``method="brute"``: distances to all Q centres, stable sort;
* ``method="table"``: the ab plane around the bins is cut into square cells (a quarter of the bins'
  nearest-neighbour spacing: 2.5 ab units for the released bins), and for every cell a list of candidate bins
  is precomputed -- every bin whose distance to the cell is at most the k-th smallest *farthest* distance
  from a bin to the cell. Any point in the cell has k bins within that bound, so its k nearest bins are all
  in the list (12 candidates for k = 5, 17 for k = 10 instead of 313). The exact distances to the candidates
  are then computed by the same formula, so they equal the brute-force values. Cells are widened by
  1e-3 ab units against rounding at their borders; points outside the table (|ab| beyond ~140) or not finite
  use the brute-force path, and so does everything when the table would be huge (very many fine bins);
* ``method="kernel"``: the same table in a compiled CPU loop (:mod:`cic._knn_kernel`, numba), one pass per
  pixel that also writes the soft-encoding directly, several times faster than the tensor passes;
* ``method="auto"`` (default): the kernel for float32/float64 tensors on the CPU, the table elsewhere.

Pixels are processed in chunks of ``chunk`` pixels (torch paths), and brute-force distances 4M at a time at
most, so the working memory is a few tens of MB on top of the (N, Q, *spatial) output; a
40 x 2 x 56 x 56 float32 batch (157 MB of output) stays under a few hundred MB.

Soft-encoding (paper Sec. 3.1): each pixel's ab is spread over its ``k`` nearest centres with weights
``exp(-d^2 / (2 sigma^2))`` normalized to sum 1. Paper: k = 5, sigma = 5 (the defaults); the released
training layer (``NNEncLayer``) used k = 10, sigma = 5.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ._interop import numpy_io
from .bins import centers_on

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


#: Largest (cells x bins) product for which a candidate table is built; beyond it, brute force.
_TABLE_WORK_LIMIT = 2e8
#: The brute-force path holds at most this many distances at once (in sub-chunks of pixels).
_BRUTE_MAX_DISTANCES = 1 << 22


def _nn_spacing(c: np.ndarray) -> float:
    """Median distance from a centre to its nearest other centre."""
    q = len(c)
    step = max(1, (1 << 20) // q)                                   # ~1M distances at a time
    nn = np.empty(q)
    for s in range(0, q, step):
        blk = c[s:s + step]
        d2 = (blk[:, :1] - c[:, 0]) ** 2 + (blk[:, 1:] - c[:, 1]) ** 2
        d2[np.arange(len(blk)), np.arange(s, s + len(blk))] = np.inf
        nn[s:s + step] = d2.min(axis=1)
    return float(np.sqrt(np.median(nn)))


@functools.lru_cache(maxsize=32)
def _table_cpu(key: bytes, q: int, k: int):
    """Candidate table for centres ``key`` (float64 bytes): (origin (2,), cell, (na, nb), table), or None
    when it would be too large to build (then the brute-force path is used)."""
    c = np.frombuffer(key, np.float64).reshape(q, 2)
    spacing = _nn_spacing(c) if q > 1 else 1.0
    cell = spacing / 4 if spacing > 0 else 1.0
    margin = 5 * max(spacing, cell)
    lo = c.min(axis=0) - margin
    n = np.ceil((c.max(axis=0) + margin - lo) / cell).astype(int)
    if float(n[0]) * float(n[1]) * q > _TABLE_WORK_LIMIT:
        return None
    eps = 1e-3
    x0 = lo[0] + cell * np.arange(n[0]) - eps                       # widened cells [x0, x1] x [y0, y1]
    x1 = x0 + cell + 2 * eps
    y0 = lo[1] + cell * np.arange(n[1]) - eps
    y1 = y0 + cell + 2 * eps
    # per axis: squared nearest and farthest offsets of every bin from every cell interval
    dxn = np.maximum(0, np.maximum(x0[:, None] - c[:, 0], c[:, 0] - x1[:, None])) ** 2   # (na, Q)
    dxf = np.maximum(np.abs(c[:, 0] - x0[:, None]), np.abs(c[:, 0] - x1[:, None])) ** 2
    dyn = np.maximum(0, np.maximum(y0[:, None] - c[:, 1], c[:, 1] - y1[:, None])) ** 2   # (nb, Q)
    dyf = np.maximum(np.abs(c[:, 1] - y0[:, None]), np.abs(c[:, 1] - y1[:, None])) ** 2
    rows = []
    for i in range(n[0]):                                           # one row of cells at a time
        near = dxn[i] + dyn                                         # (nb, Q)
        bound = np.partition(dxf[i] + dyf, k - 1, axis=1)[:, k - 1]  # k-th smallest farthest distance
        rows.append(near <= bound[:, None] * (1 + 1e-9) + 1e-9)
    cand = np.concatenate(rows)                                     # (na * nb, Q) bool
    m = int(cand.sum(axis=1).max())
    order = np.argsort(~cand, axis=1, kind="stable")[:, :m]         # candidates first, in bin order
    table = np.where(np.take_along_axis(cand, order, 1), order, q)  # q = padding (a bin at infinity)
    return lo, cell, (int(n[0]), int(n[1])), table


_TABLES: dict = {}


def _table(c: torch.Tensor, k: int, host_key=None):
    """The candidate table of centres ``c`` on ``c``'s device, cached; ``host_key``: a host-side identity of
    the centres (from :func:`cic.bins.centers_on`), so that finding the cached table reads nothing back
    from the device."""
    if host_key is None:
        host_key = c.detach().cpu().double().numpy().tobytes()
    key = (host_key, c.shape[0], k, c.device, c.dtype)
    if key not in _TABLES:
        built = _table_cpu(c.detach().cpu().double().numpy().tobytes(), c.shape[0], k)
        if len(_TABLES) > 64:
            _TABLES.clear()
        if built is None:
            _TABLES[key] = None
            return None
        lo, cell, shape, table = built
        inf = torch.full((1,), float("inf"), dtype=c.dtype, device=c.device)
        ca = torch.cat([c[:, 0], inf])                                  # bin q = Q: padding at infinity
        cb = torch.cat([c[:, 1], inf])
        _TABLES[key] = (torch.tensor(lo, dtype=c.dtype, device=c.device), cell, shape,
                        torch.as_tensor(table, device=c.device), ca, cb)
    return _TABLES[key]


def _sqdist(p: torch.Tensor, ca: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """(a - c_a)^2 + (b - c_b)^2 (separate multiplies and an add: what the CPU kernel computes); p (P, 2),
    ca/cb broadcastable to (P, M)."""
    da = p[:, 0:1] - ca
    db = p[:, 1:2] - cb
    return da.mul_(da).add_(db.mul_(db))


def _smallest(d2: torch.Tensor, k: int):
    """The k smallest of every row of d2, sorted by (value, column): a stable sort."""
    v, i = torch.sort(d2, dim=1, stable=True)
    return v[:, :k], i[:, :k]


def _brute_knn(p: torch.Tensor, ca: torch.Tensor, cb: torch.Tensor, k: int):
    """k smallest squared distances from p (P, 2) to all centres, sorted; at most 4M distances at once."""
    rows = max(1, _BRUTE_MAX_DISTANCES // ca.shape[0])
    parts = [_smallest(_sqdist(p[s:s + rows], ca, cb), k) for s in range(0, p.shape[0], rows)]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([v for v, _ in parts]), torch.cat([i for _, i in parts])


def _take(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """v[idx] for a 1-d v: index_select on the flattened indices (on the CPU several times faster than
    torch.take or advanced indexing)."""
    return v.index_select(0, idx.reshape(-1)).view(idx.shape)


_METHODS = ("auto", "kernel", "table", "brute")


_KERNEL = False  # not looked for yet


def _kernel_module():
    """:mod:`cic._knn_kernel`, or None where numba cannot be imported (then "auto" uses the table)."""
    global _KERNEL
    if _KERNEL is False:
        try:
            from . import _knn_kernel
        except ImportError:
            _knn_kernel = None
        _KERNEL = _knn_kernel
    return _KERNEL


def _kernel_fits(ab: torch.Tensor) -> bool:
    return ab.device.type == "cpu" and ab.dtype in (torch.float32, torch.float64) and _kernel_module() is not None


def _prepare(ab, k: int, centers, chunk: int, method: str):
    """Checked arguments of knn_bins/soft_encode: (ab as a float tensor, centres, host key, method resolved)."""
    _check_ab(ab)
    if not ab.is_floating_point():
        ab = ab.to(torch.float32)
    c, host_key = centers_on(centers, ab)
    Q = c.shape[0]
    if not 1 <= k <= Q:
        raise ValueError(f"k must be in 1..{Q}, got {k}")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}")
    if method == "auto":
        method = "kernel" if _kernel_fits(ab) else "table"
    elif method == "kernel" and not _kernel_fits(ab):
        raise ValueError("method='kernel' needs a float32 or float64 tensor on the CPU and numba; "
                         f"got {ab.dtype} on {ab.device}" + ("" if _kernel_module() else " (numba is not importable)"))
    return ab, c, host_key, method


_KERNEL_TABLES: dict = {}


def _kernel_table(c: torch.Tensor, k: int, host_key):
    """The candidate table for the CPU kernel, cached: (geometry [lo_a, lo_b, cell] in c's dtype, na, nb,
    table with each row's candidates nearest to the cell's centre first, c_a, c_b), or None when there is no
    table (very many fine bins)."""
    key = (host_key, c.shape[0], k, c.dtype)
    if key not in _KERNEL_TABLES:
        built = _table_cpu(c.detach().double().numpy().tobytes(), c.shape[0], k)
        if len(_KERNEL_TABLES) > 64:
            _KERNEL_TABLES.clear()
        if built is None:
            _KERNEL_TABLES[key] = None
            return None
        lo, cell, (na, nb), table = built
        i, j = np.divmod(np.arange(na * nb), nb)
        centre = np.stack([lo[0] + (i + 0.5) * cell, lo[1] + (j + 0.5) * cell], 1)
        cc = np.concatenate([c.detach().double().numpy(), [[np.inf, np.inf]]])   # padding: bin Q at infinity
        d2 = ((cc[table] - centre[:, None, :]) ** 2).sum(-1)
        table = np.ascontiguousarray(np.take_along_axis(table, np.argsort(d2, 1, kind="stable"), 1))
        dt = c.numpy().dtype
        _KERNEL_TABLES[key] = (np.array([lo[0], lo[1], cell], dt), na, nb, table,
                               np.ascontiguousarray(c[:, 0].numpy()), np.ascontiguousarray(c[:, 1].numpy()))
    return _KERNEL_TABLES[key]


def _kernel_run(ab3: torch.Tensor, c: torch.Tensor, host_key, k: int, soft_out=None, coef: float = 0.0):
    """The CPU kernel over ab3 (N, 2, P): the k nearest bins into new (N, k, P) tensors, or with ``soft_out``
    (a contiguous (N, Q, P) tensor of ab's dtype, overwritten) the soft-encoding into it. Pixels outside the table
    are finished by brute force. Returns (dist, index), or None when there is no table."""
    tab = _kernel_table(c, k, host_key)
    if tab is None:
        return None
    geom, na, nb, table, ca, cb = tab
    kern = _kernel_module()
    a = ab3.detach().contiguous().numpy()
    n, _, npix = a.shape
    far = np.zeros((n, npix), bool)
    threads = torch.get_num_threads()
    if soft_out is None:
        dist = torch.empty((n, k, npix), dtype=ab3.dtype)
        index = torch.empty((n, k, npix), dtype=torch.long)
        kern.run(a, threads, geom, na, nb, table, ca, cb, k, False, a.dtype.type(coef), dist.numpy(), index.numpy(), far)
    else:
        kern.run(a, threads, geom, na, nb, table, ca, cb, k, True, a.dtype.type(coef), soft_out.numpy(),
                 np.empty((0, 0, 0), np.int64), far)
    fn, fp = np.nonzero(far)                                   # rare: far from the bins, or not finite
    if len(fn):
        fn, fp = torch.from_numpy(fn), torch.from_numpy(fp)
        d, i = _brute_knn(ab3[fn, :, fp], c[:, 0], c[:, 1], k)        # (F, k)
        if soft_out is None:
            dist[fn[:, None], torch.arange(k), fp[:, None]] = d
            index[fn[:, None], torch.arange(k), fp[:, None]] = i
        else:
            soft_out[fn[:, None], i, fp[:, None]] = torch.softmax(d * coef, dim=1).to(soft_out.dtype)
    return (dist, index) if soft_out is None else (None, None)


@numpy_io
def knn_bins(ab: torch.Tensor, k: int = DEFAULT_K, centers=None, chunk: int = DEFAULT_CHUNK,
             method: str = "auto"):
    """The k nearest bin centres of every pixel, exactly (``method``: "auto", "kernel", "table" or "brute",
    see the module doc; all give the same result).

    Returns ``(sqdist, index)``, both ``(N, k, *spatial)``, sorted by (distance, bin index);
    ``sqdist`` in ab's float dtype, ``index`` int64 into the bins.
    """
    ab, c, host_key, method = _prepare(ab, k, centers, chunk, method)
    n, spatial = ab.shape[0], ab.shape[2:]
    npix = math.prod(spatial)
    if method == "kernel":
        got = _kernel_run(ab.reshape(n, 2, npix), c, host_key, k)
        if got is not None:
            return got[0].reshape(n, k, *spatial), got[1].reshape(n, k, *spatial)
        method = "brute"
    pts = ab.reshape(n, 2, npix).transpose(1, 2).reshape(-1, 2)  # (N*P, 2), pixel-major
    dist = torch.empty(pts.shape[0], k, dtype=ab.dtype, device=ab.device)
    index = torch.empty(pts.shape[0], k, dtype=torch.long, device=ab.device)
    ca, cb = c[:, 0], c[:, 1]
    tab = _table(c, k, host_key) if method == "table" else None
    if tab is not None:
        lo, cell, (na, nb), table, ca_pad, cb_pad = tab
        outside = torch.empty(pts.shape[0], dtype=torch.bool, device=ab.device)
    for s in range(0, pts.shape[0], chunk):
        p = pts[s:s + chunk]
        if tab is None:
            vals, idx = _brute_knn(p, ca, cb, k)
        else:
            rel = (p - lo) / cell
            inside = (rel[:, 0] >= 0) & (rel[:, 0] < na) & (rel[:, 1] >= 0) & (rel[:, 1] < nb)
            ij = torch.nan_to_num(rel).clamp_(0, max(na, nb)).long()      # inf: clamped before the cast
            cell_id = ij[:, 0].clamp_(max=na - 1) * nb + ij[:, 1].clamp_(max=nb - 1)
            cand = table.index_select(0, cell_id)                        # (P, M) candidate bins
            d2 = _sqdist(p, _take(ca_pad, cand), _take(cb_pad, cand))
            vals, idx = _smallest(d2, k)                                 # candidates are in bin order
            idx = cand.gather(1, idx)
            torch.logical_not(inside, out=outside[s:s + chunk])
        dist[s:s + chunk] = vals
        index[s:s + chunk] = idx
    if tab is not None:
        # rare: far from the bins, or NaN.  One look at the device for the whole batch (not one per chunk).
        far = outside.nonzero().squeeze(1)
        if far.numel():
            for s in range(0, far.numel(), chunk):
                f = far[s:s + chunk]
                dist[f], index[f] = _brute_knn(pts[f], ca, cb, k)

    def back(x):
        return x.reshape(n, npix, k).transpose(1, 2).reshape(n, k, *spatial)

    return back(dist), back(index)


@numpy_io
def nearest_bin(ab: torch.Tensor, centers=None, chunk: int = DEFAULT_CHUNK, method: str = "auto") -> torch.Tensor:
    """Index of the nearest bin centre of every pixel: int64 ``(N, *spatial)`` (the hard encoding)."""
    return knn_bins(ab, 1, centers, chunk, method)[1][:, 0]


@numpy_io
def soft_encode(ab: torch.Tensor, k: int = DEFAULT_K, sigma: float = DEFAULT_SIGMA, centers=None,
                chunk: int = DEFAULT_CHUNK, out: torch.Tensor | None = None, method: str = "auto") -> torch.Tensor:
    """Soft-encoding ``(N, Q, *spatial)``: Gaussian weights (sigma, ab units) on the k nearest bins.

    Each pixel's weights sum to 1; all other bins are 0. The argmax is the nearest bin. ``out``: an
    existing float tensor of that shape to write into (e.g. a Caffe top blob; avoids a fresh allocation).
    ``method``: how the neighbours are found (see :func:`knn_bins`).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    ab, c, host_key, method = _prepare(ab, k, centers, chunk, method)
    shape = (ab.shape[0], c.shape[0]) + tuple(ab.shape[2:])
    if out is not None and (tuple(out.shape) != shape or not out.is_floating_point() or out.device != ab.device):
        raise ValueError(f"soft_encode: out must be a float tensor of shape {shape} on {ab.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    coef = -0.5 / sigma ** 2
    if method == "kernel":
        direct = out is not None and out.dtype == ab.dtype and out.is_contiguous()
        target = out if direct else torch.empty(shape, dtype=ab.dtype)           # the kernel zeroes it
        npix = math.prod(shape[2:])
        if _kernel_run(ab.reshape(shape[0], 2, npix), c, host_key, k, target.view(shape[0], shape[1], npix),
                       coef) is not None:
            return target if out is None or direct else out.copy_(target)
        method = "brute"
    d2, idx = knn_bins(ab, k, centers, chunk, method)
    w = torch.softmax(d2 * coef, dim=1)  # = exp(-d^2/2s^2) / sum, computed stably
    if out is None:
        out = torch.zeros(shape, dtype=ab.dtype, device=ab.device)
    else:
        out.zero_()
    return out.scatter_(1, idx, w.to(out.dtype))
