"""The CPU kernel of :mod:`cic.encode` (numba): k nearest bins and soft-encoding in one pass per pixel.

It computes exactly what the torch paths of :mod:`cic.encode` compute, in one compiled loop instead of a
dozen tensor passes (the torch paths stay for other devices, and as the reference the tests hold it to):

* the candidates of a pixel are those of its cell in the same candidate table (:func:`cic.encode._table_cpu`);
  here each cell's list is ordered nearest to the cell's centre first, so that the running selection
  below rarely moves an entry;
* squared distances by the same formula, ``(a - c_a) * (a - c_a) + (b - c_b) * (b - c_b)``, in ab's dtype,
  without fused multiply-adds (numba does not contract without ``fastmath``), so they equal the torch
  values bit for bit;
* the k smallest by ``(distance, bin index)``: exact ties go to the lower bin index, as the torch paths'
  stable sort does;
* the weights ``exp(d * coef - d_min * coef) / sum`` with ``coef = -1 / (2 sigma^2)``: the torch path's
  softmax of ``d * coef``, in its order of operations (within one float32 step of it; the exponentials'
  implementations differ).

Pixels outside the table (far from every bin, or not finite) are flagged in ``far`` and left to the
caller (:mod:`cic.encode` finishes them by brute force).

The kernel takes a range ``[start, stop)`` of flat pixel positions (image-major); :func:`run` splits a batch
into ranges over numba's threads. It is compiled on first use and cached on disk.
"""
from __future__ import annotations

import math
import os
import threading

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _cell(a, b, geom, na, nb):
    """The table row of the cell holding (a, b), or -1 outside the table (or not finite)."""
    x = (a - geom[0]) / geom[2]
    y = (b - geom[1]) / geom[2]
    if x >= 0 and x < na and y >= 0 and y < nb:
        return int(x) * nb + int(y)
    return -1


@numba.njit(cache=True, nogil=True)
def _select(a, b, row, table, ca, cb, bd, bi):
    """The k = len(bd) nearest candidates of table row ``row`` to (a, b), sorted by (distance, bin), into
    ``bd`` (squared distances) and ``bi`` (bins). The table pads each row with bin Q (= len(ca)) and holds at
    least k real candidates per row."""
    k = bd.shape[0]
    q_pad = ca.shape[0]
    cnt = 0
    for m in range(table.shape[1]):
        q = table[row, m]
        if q >= q_pad:
            break
        da = a - ca[q]
        db = b - cb[q]
        d = da * da + db * db
        if cnt < k:
            j = cnt
            cnt += 1
        elif d < bd[k - 1] or (d == bd[k - 1] and q < bi[k - 1]):
            j = k - 1
        else:
            continue
        while j > 0 and (bd[j - 1] > d or (bd[j - 1] == d and bi[j - 1] > q)):
            bd[j] = bd[j - 1]
            bi[j] = bi[j - 1]
            j -= 1
        bd[j] = d
        bi[j] = q


@numba.njit(cache=True, nogil=True)
def encode_range(ab, start, stop, geom, na, nb, table, ca, cb, k, soft, coef, values, index, far):
    """The pixels ``start..stop-1`` of ab (N, 2, P) (flat, image-major).

    ``soft`` False: their k nearest bins, sorted, into ``values`` (squared distances) and ``index``, both
    (N, k, P). ``soft`` True: their soft-encoding into ``values`` (N, Q, P) (``index`` unused): the k nearest
    bins get ``exp(d * coef - d_min * coef)``, normalized to sum 1, all other bins 0; each image's part of
    ``values`` is zeroed just before its pixels are written (while it is still in cache)."""
    npix = ab.shape[2]
    bd = np.empty(k, ab.dtype)
    bi = np.empty(k, np.int64)
    n = start // npix
    p = start - n * npix
    for i in range(start, stop):
        if soft and (p == 0 or i == start):         # zero this image's pixels p .. of this range
            end = min(npix, p + stop - i)
            for q in range(values.shape[1]):
                values[n, q, p:end] = 0
        a = ab[n, 0, p]
        b = ab[n, 1, p]
        row = _cell(a, b, geom, na, nb)
        if row < 0:
            far[n, p] = True
        else:
            _select(a, b, row, table, ca, cb, bd, bi)
            if soft:
                d0 = bd[0]
                total = bd[0] - bd[0]               # 0 in ab's dtype
                for j in range(k):
                    w = math.exp(bd[j] * coef - d0 * coef)
                    bd[j] = w
                    total += w
                for j in range(k):
                    values[n, bi[j], p] = bd[j] / total
            else:
                for j in range(k):
                    values[n, j, p] = bd[j]
                    index[n, j, p] = bi[j]
        p += 1
        if p == npix:
            p = 0
            n += 1


@numba.njit(parallel=True, cache=True, nogil=True)
def _encode_parallel(ab, bounds, geom, na, nb, table, ca, cb, k, soft, coef, values, index, far):
    for t in numba.prange(len(bounds) - 1):
        encode_range(ab, bounds[t], bounds[t + 1], geom, na, nb, table, ca, cb, k, soft, coef, values, index, far)


#: Fewer pixels than this per thread are not worth a thread of their own.
MIN_PIXELS_PER_THREAD = 4096
# numba's threading layers: "workqueue" (used where neither OpenMP nor TBB loads) must not be entered from two
# threads at once, and GNU OpenMP hangs in a child forked after its parent used it. So one parallel launch at a
# time (a second caller runs serially), only in the process that launched first, and serially for good if no
# layer loads at all.
_LAUNCH = {"lock": threading.Lock(), "pid": None, "failed": False}


def _may_launch() -> bool:
    return not _LAUNCH["failed"] and _LAUNCH["pid"] in (None, os.getpid())


def run(ab: np.ndarray, threads: int, *args) -> None:
    """``encode_range(ab, start, stop, *args)`` over all pixels of ab (N, 2, P), on up to ``threads`` threads
    (numba's, through its parallel form). Ranges start on multiples of 16 pixels (64-byte lines of float32
    output rows are not shared between threads)."""
    total = ab.shape[0] * ab.shape[2]
    if total == 0:
        return
    parts = max(1, min(threads, numba.config.NUMBA_NUM_THREADS, total // MIN_PIXELS_PER_THREAD))
    if parts > 1 and _may_launch() and _LAUNCH["lock"].acquire(blocking=False):
        try:
            bounds = np.array([min(total, (total * i // parts) // 16 * 16) for i in range(parts)] + [total])
            numba.set_num_threads(parts)
            _encode_parallel(ab, bounds, *args)
            _LAUNCH["pid"] = os.getpid()
            return
        except ValueError as e:                     # "No threading layer could be loaded"
            if "threading layer" not in str(e):
                raise
            _LAUNCH["failed"] = True
        finally:
            _LAUNCH["lock"].release()
    encode_range(ab, 0, total, *args)
