"""Helpers shared by the built-in layers: Caffe's axis canonicalisation, counts, parameter blob creation."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..blob import Blob
from ..filler import FillerError, fill
from ..proto import caffe_pb2

FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)


def canonical_axis(layer, axis: int, num_axes: int, field: str = "axis") -> int:
    """Caffe's Blob::CanonicalAxisIndex: -num_axes <= axis < num_axes, negative counts from the end."""
    if not -num_axes <= axis < num_axes:
        raise layer.error(f"{field} {axis} out of range for a {num_axes}-D blob "
                          f"(valid: {-num_axes} to {num_axes - 1})")
    return axis + num_axes if axis < 0 else axis


def count(shape: Sequence[int], start: int = 0, end: Optional[int] = None) -> int:
    """Caffe's Blob::count(start, end): the product of shape[start:end]."""
    return int(np.prod(list(shape)[start:end], dtype=np.int64))


def param_dtype(bottom: Sequence[Blob]) -> torch.dtype:
    """Parameter blobs take the dtype of the first bottom (float32 in nets; float64 in gradient checks)."""
    return bottom[0].dtype if len(bottom) else torch.float32


def make_param(layer, shape, filler: Optional["caffe_pb2.FillerParameter"], dtype, field: str) -> Blob:
    """A parameter blob of ``shape`` on the layer's device, filled by ``filler`` unless the weights are given
    inline in the layer parameter (then the net copies them; Caffe skips the fillers too)."""
    b = Blob(tuple(int(d) for d in shape), device=layer.device, dtype=dtype)
    if len(layer.layer_param.blobs) == 0 and filler is not None:
        try:
            fill(b, filler)
        except FillerError as e:
            raise layer.error(f"{field}: {e}") from None
    return b


def constant_filler(value: float) -> "caffe_pb2.FillerParameter":
    p = caffe_pb2.FillerParameter()
    p.type = "constant"
    p.value = value
    return p


def label_ints(layer, label: torch.Tensor) -> torch.Tensor:
    """Caffe's ``static_cast<int>(label)``: truncation toward zero."""
    return label.to(torch.int64)


def no_backward(layer, propagate_down: Sequence[bool]) -> None:
    """Caffe's NOT_IMPLEMENTED backward: an error if any bottom asks for a gradient."""
    if any(propagate_down):
        raise layer.error("this layer type has no backward pass (Caffe: NOT_IMPLEMENTED); "
                          "no bottom of it may need a gradient")
