"""Helpers for the layer and filler tests: building and running single layers, Caffe's GradientChecker in
float64, and caffemodel reading."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from google.protobuf import text_format

from conftest import GOLDEN, assert_close  # noqa: F401  (GOLDEN is re-exported)
from torchcaffe.blob import Blob
from torchcaffe.layer import create_layer
from torchcaffe.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


# -- comparisons ---------------------------------------------------------------------------------------------
#: Single layers: |a - e| <= rtol * (|e| + 1e-2 max|e|) + 1e-7, elementwise.
close = functools.partial(assert_close, floor=1e-2)


# -- single layers -------------------------------------------------------------------------------------------
def layer_param(text: str) -> "caffe_pb2.LayerParameter":
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def make_layer(text: str, phase=TRAIN, device="cpu"):
    lp = layer_param(text)
    return create_layer(lp, phase, device)


def blob(array, dtype=torch.float64, device="cpu") -> Blob:
    a = np.asarray(array)
    b = Blob(a.shape, dtype=dtype, device=device)
    b.data_t = torch.as_tensor(a, dtype=dtype)
    return b


def run(layer, bottoms: Sequence[Blob], ntops: int = 1, need_backward: bool = True,
        tops: Optional[List[Blob]] = None) -> List[Blob]:
    """setup + forward; the layer records its graph for a later backward when ``need_backward``."""
    dtype = bottoms[0].dtype if bottoms else torch.float64
    device = bottoms[0].device if bottoms else "cpu"
    tops = tops if tops is not None else [Blob((), dtype=dtype, device=device) for _ in range(ntops)]
    layer.setup(list(bottoms), tops)
    layer.set_need_backward(need_backward, [need_backward] * len(bottoms))
    layer.param_propagate_down = [need_backward] * len(layer.blobs)
    layer.reshape(list(bottoms), tops)
    layer.forward(list(bottoms), tops)
    return tops


# -- caffemodel ----------------------------------------------------------------------------------------------
def proto_array(bp: "caffe_pb2.BlobProto") -> np.ndarray:
    if bp.HasField("shape"):
        shape = tuple(int(d) for d in bp.shape.dim)
    else:
        shape = (bp.num, bp.channels, bp.height, bp.width)
    data = np.asarray(bp.double_data if len(bp.double_data) else bp.data, dtype=np.float32)
    return data.reshape(shape)


def load_caffemodel(path) -> Dict[str, List[np.ndarray]]:
    n = caffe_pb2.NetParameter()
    n.ParseFromString(Path(path).read_bytes())
    return {lp.name: [proto_array(b) for b in lp.blobs] for lp in n.layer if len(lp.blobs)}


def gradient_check(make, bottoms: Sequence[np.ndarray], check_bottoms: Optional[Sequence[int]] = None,
                   ntops: int = 1, step: float = 1e-4, tol: float = 1e-6, seed: int = 7,
                   params: bool = True, top_weights=None, reseed: Optional[int] = None):
    """Compare a layer's backward with central differences of L = sum_t <top_t, R_t> (R random), for the
    bottoms in ``check_bottoms`` and (``params``) every parameter blob.  ``make()`` returns a fresh layer;
    ``reseed`` seeds torch before every forward (layers that draw random numbers)."""
    gen = np.random.RandomState(seed)
    layer = make()
    bl = [blob(x) for x in bottoms]
    tops = [Blob((), dtype=torch.float64) for _ in range(ntops)]
    check_bottoms = list(range(len(bottoms))) if check_bottoms is None else list(check_bottoms)
    layer.setup(bl, tops)
    pd = [i in check_bottoms for i in range(len(bl))]

    def fwd(record: bool):
        if reseed is not None:
            torch.manual_seed(reseed)
        layer.set_need_backward(record, pd if record else [False] * len(bl))
        layer.param_propagate_down = [record and params] * len(layer.blobs)
        layer.reshape(bl, tops)
        layer.forward(bl, tops)
        return [t.data_t.clone() for t in tops]

    outs = fwd(True)
    R = top_weights if top_weights is not None else [torch.from_numpy(gen.randn(*o.shape)) for o in outs]
    R = [torch.as_tensor(r, dtype=torch.float64).reshape(o.shape) for r, o in zip(R, outs)]
    for p in layer.blobs:
        p.diff_t = torch.zeros(p.shape, dtype=torch.float64)
    for t, r in zip(tops, R):
        t.diff_t = r.clone()
    layer.backward(tops, pd, bl)
    analytic = [(f"bottom[{i}]", bl[i].diff_t.clone(), bl[i]) for i in check_bottoms]
    if params:
        analytic += [(f"param[{j}]", p.diff_t.clone(), p) for j, p in enumerate(layer.blobs)]

    def loss() -> float:
        with torch.no_grad():
            return float(sum((o * r).sum() for o, r in zip(fwd(False), R)))

    for name, grad, b in analytic:
        flat = b.data_t.reshape(-1)
        num = torch.zeros(flat.numel(), dtype=torch.float64)
        for k in range(flat.numel()):
            v = float(flat[k])
            b.data_t.reshape(-1)[k] = v + step
            lp = loss()
            b.data_t.reshape(-1)[k] = v - step
            lm = loss()
            b.data_t.reshape(-1)[k] = v
            num[k] = (lp - lm) / (2 * step)
        g = grad.reshape(-1)
        scale = max(1.0, float(num.abs().max()))
        err = float((g - num).abs().max())
        assert err <= tol * scale, f"{name}: analytic vs numeric gradient differ by {err:.3g} (scale {scale:.3g})"
    return layer
