"""Caffe's fillers (``include/caffe/filler.hpp``): the initial values of parameter blobs and DummyData tops.

``fill(blob_or_tensor, filler_param)`` draws from torch's global CPU generator (which
:func:`torchcaffe.set_random_seed` seeds), always on the CPU as Caffe does, and then moves the values to the
blob's device, so a seeded net gets the same initial weights on every device.

The arithmetic follows Caffe 1.0:

* ``constant``: ``value``;
* ``uniform``: U[min, max);
* ``gaussian``: N(mean, std); with ``sparse >= 0`` each value is kept with probability
  ``sparse / shape[0]`` (Caffe's Bernoulli mask), else zeroed;
* ``positive_unitball``: U[0, 1), then each of the ``shape[0]`` rows divided by its sum;
* ``xavier``: U(-sqrt(3/n), sqrt(3/n)); ``msra``: N(0, sqrt(2/n)); where
  ``fan_in = count / num``, ``fan_out = count / channels`` (Caffe's legacy ``num()`` = shape[0] and
  ``channels()`` = shape[1], 1 for a missing axis, integer division) and n = fan_in (FAN_IN, the default),
  fan_out (FAN_OUT) or (fan_in + fan_out) / 2 (AVERAGE);
* ``bilinear``: 4-D square kernels ``(1 - |x/f - c|) * (1 - |y/f - c|)`` with ``f = ceil(K / 2)``,
  ``c = (2f - 1 - f % 2) / (2f)``, the same (K, K) kernel in every (num, channel) slice.

Only ``gaussian`` accepts ``sparse``; the others reject it as Caffe does.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from .proto import caffe_pb2

__all__ = ["fill", "filler_values", "FillerError", "FILLER_TYPES"]

FILLER_TYPES = ("constant", "uniform", "gaussian", "positive_unitball", "xavier", "msra", "bilinear")


class FillerError(ValueError):
    """A filler parameter that Caffe would refuse (unknown type, bad shape, bad sparsity)."""


def _legacy(shape, i: int) -> int:
    # Caffe's Blob::LegacyShape: a missing axis counts as 1
    return int(shape[i]) if i < len(shape) else 1


def _no_sparse(p) -> None:
    if p.sparse != -1:
        raise FillerError(f"filler '{p.type}': sparsity (sparse: {p.sparse}) is only supported by the "
                          "gaussian filler")


def _fan_n(shape, count: int, p) -> float:
    fan_in = count // _legacy(shape, 0)
    fan_out = count // _legacy(shape, 1)
    if p.variance_norm == caffe_pb2.FillerParameter.AVERAGE:
        return np.float32((fan_in + fan_out) / np.float32(2))
    if p.variance_norm == caffe_pb2.FillerParameter.FAN_OUT:
        return np.float32(fan_out)
    return np.float32(fan_in)


def filler_values(shape, p: "caffe_pb2.FillerParameter", dtype=torch.float32) -> torch.Tensor:
    """A new CPU tensor of ``shape`` filled as Caffe's ``GetFiller(p)->Fill`` would fill a blob of it."""
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64))
    kind = p.type
    if kind not in FILLER_TYPES:
        raise FillerError(f"unknown filler type '{kind}' (Caffe knows: {', '.join(FILLER_TYPES)})")
    if count == 0 and kind != "positive_unitball":
        raise FillerError(f"filler '{kind}': cannot fill an empty blob of shape {shape}")
    out = torch.empty(shape, dtype=dtype)
    if kind == "constant":
        out.fill_(float(np.float32(p.value)))
        _no_sparse(p)
    elif kind == "uniform":
        lo, hi = float(np.float32(p.min)), float(np.float32(p.max))
        if lo > hi:
            raise FillerError(f"filler 'uniform': min ({lo}) must not exceed max ({hi})")
        out.uniform_(lo, hi)
        _no_sparse(p)
    elif kind == "gaussian":
        std = float(np.float32(p.std))
        if not std > 0:
            raise FillerError(f"filler 'gaussian': std must be positive, got {std}")
        out.normal_(float(np.float32(p.mean)), std)
        if p.sparse < -1:
            raise FillerError(f"filler 'gaussian': sparse must be >= -1, got {p.sparse}")
        if p.sparse >= 0:
            if len(shape) < 1:
                raise FillerError("filler 'gaussian': sparse filling needs a blob with at least one axis")
            prob = np.float32(p.sparse) / np.float32(shape[0])
            if prob > 1:
                raise FillerError(f"filler 'gaussian': sparse ({p.sparse}) exceeds the number of outputs "
                                  f"({shape[0]})")
            mask = torch.rand(shape, dtype=torch.float64) < float(prob)
            out.mul_(mask.to(dtype))
    elif kind == "positive_unitball":
        if count == 0:
            raise FillerError(f"filler 'positive_unitball': cannot fill an empty blob of shape {shape}")
        out.uniform_(0.0, 1.0)
        num = _legacy(shape, 0)
        rows = out.view(num, -1)
        rows.div_(rows.sum(dim=1, keepdim=True))
        _no_sparse(p)
    elif kind in ("xavier", "msra"):
        n = _fan_n(shape, count, p)
        if kind == "xavier":
            scale = float(np.sqrt(np.float32(3) / n, dtype=np.float32))
            out.uniform_(-scale, scale)
        else:
            std = float(np.sqrt(np.float32(2) / n, dtype=np.float32))
            out.normal_(0.0, std)
        _no_sparse(p)
    elif kind == "bilinear":
        if len(shape) != 4:
            raise FillerError(f"filler 'bilinear': the blob must have 4 axes, shape is {shape}")
        if shape[2] != shape[3]:
            raise FillerError(f"filler 'bilinear': the filter must be square, shape is {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = np.float32((2 * f - 1 - f % 2) / (2.0 * f))
        xs = np.arange(k, dtype=np.float32)
        w = np.float32(1) - np.abs(xs / np.float32(f) - c)
        kernel = np.outer(w, w).astype(np.float32)  # [y, x]
        out.copy_(torch.from_numpy(kernel).to(dtype).expand(shape))
        _no_sparse(p)
    return out


def fill(target: Union["torch.Tensor", object], filler_param: "caffe_pb2.FillerParameter") -> None:
    """Fill a :class:`~torchcaffe.blob.Blob` (its data) or a tensor in place, as Caffe's filler would."""
    if isinstance(target, torch.Tensor):
        vals = filler_values(target.shape, filler_param, dtype=target.dtype)
        with torch.no_grad():
            target.copy_(vals.to(target.device))
        return
    vals = filler_values(target.shape, filler_param, dtype=target.dtype)
    target.data_t = vals.to(target.device)
