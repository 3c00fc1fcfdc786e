"""Helpers for the layer and filler tests: building single layers, a minimal sequential runner for the golden
layer net (independent of torchcaffe.net), Caffe's GradientChecker in float64, and caffemodel reading."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from google.protobuf import text_format

from torchcaffe.blob import Blob
from torchcaffe.layer import create_layer
from torchcaffe.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "caffe_golden"


# -- comparisons ---------------------------------------------------------------------------------------------
def close(actual, expected, rtol=1e-4, name=""):
    """|a - e| <= rtol * (|e| + 1e-2 max|e|) + 1e-7, elementwise (float32-sized relative tolerance)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.size == e.size, f"{name}: shape {a.shape} vs expected {e.shape}"
    a = a.reshape(e.shape)
    nan = np.isnan(e)
    assert np.array_equal(np.isnan(a), nan), f"{name}: NaN at different places"
    a, e = a[~nan], e[~nan]
    scale = np.abs(e).max() if e.size else 0.0
    tol = rtol * (np.abs(e) + 1e-2 * scale) + 1e-7
    bad = np.abs(a - e) > tol
    assert not bad.any(), (f"{name}: {int(bad.sum())} of {e.size} values differ; max abs err "
                           f"{np.abs(a - e).max():.3g} (max |expected| {scale:.3g})")


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


def load_net(path) -> "caffe_pb2.NetParameter":
    return text_format.Parse(Path(path).read_text(), caffe_pb2.NetParameter())


# -- a minimal sequential runner (Caffe's Net for straight-line nets) ---------------------------------------
def _included(lp, phase) -> bool:
    if len(lp.include):
        return any((not r.HasField("phase")) or r.phase == phase for r in lp.include)
    return not any((not r.HasField("phase")) or r.phase == phase for r in lp.exclude)


def insert_splits(layers: List["caffe_pb2.LayerParameter"]) -> List["caffe_pb2.LayerParameter"]:
    """Caffe's InsertSplits with its blob names (blob_layer_topidx_split_k)."""
    last_top, source, consumers = {}, {}, {}
    for i, lp in enumerate(layers):
        for j, name in enumerate(lp.bottom):
            src = last_top[name]
            source[(i, j)] = src
            consumers[src] = consumers.get(src, 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
    out, used = [], {}
    for i, lp in enumerate(layers):
        lp2 = caffe_pb2.LayerParameter()
        lp2.CopyFrom(lp)
        for j, name in enumerate(lp.bottom):
            src = source[(i, j)]
            if consumers[src] > 1:
                k = used.get(src, 0)
                used[src] = k + 1
                lp2.bottom[j] = f"{name}_{layers[src[0]].name}_{src[1]}_split_{k}"
        out.append(lp2)
        for j, name in enumerate(lp.top):
            n = consumers.get((i, j), 0)
            if n > 1:
                s = caffe_pb2.LayerParameter()
                s.name = f"{name}_{lp.name}_{j}_split"
                s.type = "Split"
                s.bottom.append(name)
                for k in range(n):
                    s.top.append(f"{name}_{lp.name}_{j}_split_{k}")
                out.append(s)
    return out


class MiniNet:
    """Straight-line nets only: phase filtering, splits, in-place blobs, loss weights, Caffe's need-backward and
    loss pruning; weights copied by layer name from a caffemodel."""

    def __init__(self, net_param, phase, weights: Optional[Dict[str, List[np.ndarray]]] = None, device="cpu"):
        self.device = torch.device(device)
        self.params = [lp for lp in net_param.layer if _included(lp, phase)]
        self.params = insert_splits(self.params)
        self.blobs: Dict[str, Blob] = {}
        self.layers = []
        blob_need: Dict[str, bool] = {}
        self.loss_weights: Dict[str, float] = {}
        for lp in self.params:
            layer = create_layer(lp, phase, self.device)
            bottoms = [self.blobs[n] for n in lp.bottom]
            tops = []
            for j, n in enumerate(lp.top):
                if not (j < len(lp.bottom) and lp.bottom[j] == n):
                    self.blobs[n] = Blob((), device=self.device)
                tops.append(self.blobs[n])
            layer.setup(bottoms, tops)
            if weights and lp.name in weights:
                for b, w in zip(layer.blobs, weights[lp.name]):
                    assert b.count == w.size, (lp.name, b.shape, w.shape)
                    b.data_t = torch.from_numpy(w.reshape(b.shape).copy())
            for j, n in enumerate(lp.top):
                w = lp.loss_weight[j] if len(lp.loss_weight) else layer.loss_weight(j)
                if w:
                    self.loss_weights[n] = w
            bneed = [blob_need.get(n, False) for n in lp.bottom]
            need = any(bneed) or len(layer.blobs) > 0
            for n in lp.top:
                blob_need[n] = blob_need.get(n, False) or need
            self.layers.append([layer, lp, bottoms, tops, need, bneed])
        # Caffe's pruning: layers whose tops reach no loss do no backward
        under_loss = set()
        for entry in reversed(self.layers):
            layer, lp = entry[0], entry[1]
            contributes = any(n in self.loss_weights or n in under_loss for n in lp.top)
            if not contributes:
                entry[4] = False
                entry[5] = [False] * len(lp.bottom)
            else:
                under_loss.update(lp.bottom)
        for layer, lp, b, t, need, bneed in self.layers:
            layer.set_need_backward(need, bneed)
            layer.param_propagate_down = [need] * len(layer.blobs)

    def forward(self):
        for layer, lp, b, t, need, bneed in self.layers:
            layer.reshape(b, t)
            layer.forward(b, t)

    def backward(self):
        for n, w in self.loss_weights.items():
            self.blobs[n].diff_t = torch.full(self.blobs[n].shape, float(w), device=self.device)
        for layer, lp, b, t, need, bneed in reversed(self.layers):
            if need:
                layer.backward(t, bneed, b)

    def layer(self, name):
        for entry in self.layers:
            if entry[1].name == name:
                return entry[0]
        raise KeyError(name)


# -- Caffe's GradientChecker (float64) -----------------------------------------------------------------------
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
