"""Net: a directed acyclic graph of layers, built and run as BVLC Caffe 1.0's ``caffe::Net`` does.

Construction follows ``Net::Init`` step for step: the net parameter is upgraded, filtered by the
:class:`NetState` (phase, level, stages; ``include`` / ``exclude`` rules), Split layers are inserted where a
blob feeds several layers (``InsertSplits``: gradients of all consumers are summed), each layer is created,
wired (in-place tops share their bottom's blob) and set up, loss weights are assigned (1 for the first top of
a loss layer unless ``loss_weight`` says otherwise), parameters are registered (shared by ``ParamSpec.name``,
``lr_mult`` / ``decay_mult``), and Caffe's need-backward analysis decides which layers and bottoms get
gradients (``propagate_down``, ``force_backward``, layers that do not contribute to the loss skip backward).

The pycaffe API (``blobs``, ``params``, ``layers``, ``forward``, ``backward``, ``copy_from``, ``save``...)
sits on top; the solver uses ``forward_backward``, ``learnable_params``, ``params_lr``, ``update``.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from . import glog, mode
from .blob import Blob
from .layer import Layer, LayerError, create_layer
from .proto import caffe_pb2

__all__ = ["Net", "NetError", "filter_net", "insert_splits", "state_meets_rule"]


class NetError(ValueError):
    """The net cannot be built or run as described; the message names the layer, blob or file."""


# ---------------------------------------------------------------------------------------------------------
# Net-parameter transformations (pure functions on NetParameter)
# ---------------------------------------------------------------------------------------------------------

def state_meets_rule(state: "caffe_pb2.NetState", rule: "caffe_pb2.NetStateRule") -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param: "caffe_pb2.NetParameter") -> "caffe_pb2.NetParameter":
    """Caffe's Net::FilterNet: keep the layers whose include/exclude rules the net's state meets."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for lp in param.layer:
        if len(lp.include) and len(lp.exclude):
            raise NetError(f"layer '{lp.name}': specify either include rules or exclude rules, not both")
        included = len(lp.include) == 0
        for rule in lp.exclude:
            if state_meets_rule(param.state, rule):
                included = False
        for rule in lp.include:
            if state_meets_rule(param.state, rule):
                included = True
        if included:
            out.layer.add().CopyFrom(lp)
    return out


def _split_layer_name(layer: str, blob: str, top_idx: int) -> str:
    return f"{blob}_{layer}_{top_idx}_split"


def _split_blob_name(layer: str, blob: str, top_idx: int, split_idx: int) -> str:
    return f"{blob}_{layer}_{top_idx}_split_{split_idx}"


def insert_splits(param: "caffe_pb2.NetParameter") -> "caffe_pb2.NetParameter":
    """Caffe's InsertSplits: give every blob consumed more than once a Split layer with one top per use."""
    last_top: Dict[str, tuple] = {}
    source_of: Dict[tuple, tuple] = {}
    uses: Dict[tuple, int] = {}
    loss_weight_of: Dict[tuple, float] = {}
    for i, lp in enumerate(param.layer):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise NetError(f"unknown bottom blob '{name}' (layer '{lp.name}', bottom index {j})")
            src = last_top[name]
            source_of[(i, j)] = src
            uses[src] = uses.get(src, 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j in range(len(lp.top)):
            w = lp.loss_weight[j] if j < len(lp.loss_weight) else 0.0
            if w:
                loss_weight_of[(i, j)] = w
                uses[(i, j)] = uses.get((i, j), 0) + 1
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    split_counter: Dict[tuple, int] = {}
    for i, lp in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(lp)
        for j, name in enumerate(lp.bottom):
            src = source_of[(i, j)]
            if uses.get(src, 0) > 1:
                k = split_counter.get(src, 0)
                split_counter[src] = k + 1
                new.bottom[j] = _split_blob_name(param.layer[src[0]].name, name, src[1], k)
        for j, name in enumerate(lp.top):
            n = uses.get((i, j), 0)
            if n > 1:
                split = out.layer.add()
                split.name = _split_layer_name(lp.name, name, j)
                split.type = "Split"
                split.bottom.append(name)
                w = loss_weight_of.get((i, j), 0.0)
                for k in range(n):
                    split.top.append(_split_blob_name(lp.name, name, j, k))
                    if w:
                        split.loss_weight.append(w if k == 0 else 0.0)
    return out


# ---------------------------------------------------------------------------------------------------------
# The Net
# ---------------------------------------------------------------------------------------------------------

def _parse_net_args(args, kwargs):
    """Accept pycaffe's two signatures: Net(file, phase[, weights=]) and Net(file, weights, phase)."""
    phase = kwargs.pop("phase", None)
    weights = kwargs.pop("weights", None)
    rest = list(args)
    if len(rest) == 1:
        if isinstance(rest[0], (str, bytes)) or hasattr(rest[0], "__fspath__"):
            weights = rest[0] if weights is None else weights
        else:
            phase = rest[0]
    elif len(rest) == 2:
        weights, phase = rest
    elif len(rest) > 2:
        raise TypeError("Net(network_file, phase) or Net(network_file, weights, phase)")
    if phase is None:
        raise TypeError("Net(): the phase (caffe.TRAIN or caffe.TEST) is required")
    if phase not in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        raise ValueError(f"Net(): phase must be caffe.TRAIN ({caffe_pb2.TRAIN}) or caffe.TEST ({caffe_pb2.TEST}), got {phase!r}")
    return phase, weights


class Net:
    """A Caffe network (pycaffe's ``caffe.Net``).

    ``Net(network_file, phase, weights=None, level=0, stages=(), device=None)`` or pycaffe's older
    ``Net(network_file, weights, phase)``.  ``network_file`` may also be a ``NetParameter``.
    """

    def __init__(self, network, *args, level: int = 0, stages: Sequence[str] = (), device=None, **kwargs):
        phase, weights = _parse_net_args(args, kwargs)
        if kwargs:
            raise TypeError(f"Net(): unexpected arguments {sorted(kwargs)}")
        self.device = torch.device(device) if device is not None else mode.get_device()
        self.phase = phase
        if isinstance(network, caffe_pb2.NetParameter):
            from .upgrade import upgrade_net

            param = caffe_pb2.NetParameter()
            param.CopyFrom(network)
            upgrade_net(param)
            self.source = "<NetParameter>"
        else:
            from .protoio import read_net_param

            self.source = str(network)
            param = read_net_param(self.source)
        param.state.phase = phase
        param.state.level = level
        if stages:
            del param.state.stage[:]
            param.state.stage.extend(stages)
        self._init(param)
        if weights is not None:
            self.copy_from(weights)

    # -- construction -------------------------------------------------------------------------------------
    def _init(self, in_param: "caffe_pb2.NetParameter") -> None:
        from google.protobuf import text_format

        log = glog.enabled(glog.INFO)
        filtered = filter_net(in_param)
        if log:
            glog.info("Initializing net from parameters: \n" + text_format.MessageToString(filtered),
                      src="net.cpp:51")
        param = insert_splits(filtered)
        self.name = param.name
        self.param = param
        self.force_backward = param.force_backward
        self.layers: List[Layer] = []
        self._layer_names: List[str] = []
        self._blob_list: List[Blob] = []
        self._blob_names: List[str] = []
        self._blob_index: Dict[str, int] = {}
        self.bottom_ids: List[List[int]] = []
        self.top_ids: List[List[int]] = []
        self.bottom_need_backward: List[List[bool]] = []
        self.layer_need_backward: List[bool] = []
        self.blob_need_backward: List[bool] = []
        self.blob_loss_weights: Dict[str, float] = {}
        self._input_ids: List[int] = []
        # parameters
        self._params: List[Blob] = []
        self._param_owner: List[int] = []
        self._param_layer_index: List[tuple] = []
        self._param_names_index: Dict[str, int] = {}
        self.learnable_params: List[Blob] = []
        self.learnable_param_names: List[str] = []
        self._learnable_id_of: List[int] = []
        self._has_lr: List[bool] = []
        self._has_decay: List[bool] = []
        self.params_lr: List[float] = []
        self.params_weight_decay: List[float] = []

        available: set = set()
        for layer_id, lp in enumerate(param.layer):
            if not lp.HasField("phase"):
                lp.phase = self.phase
            if log:
                glog.info(f"Creating Layer {lp.name}", src="net.cpp:84")
            try:
                layer = create_layer(lp, lp.phase, self.device)
            except LayerError as e:
                raise NetError(str(e)) from None
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            need_backward = False
            b_ids, b_need = [], []
            for j, name in enumerate(lp.bottom):
                if name not in available:
                    raise NetError(f"unknown bottom blob '{name}' (layer '{lp.name}', bottom index {j})")
                bid = self._blob_index[name]
                available.discard(name)
                need = self.blob_need_backward[bid]
                if len(lp.propagate_down):
                    if len(lp.propagate_down) != len(lp.bottom):
                        raise NetError(f"layer '{lp.name}': propagate_down must be given once per bottom "
                                       f"({len(lp.bottom)}), got {len(lp.propagate_down)}")
                    need = bool(lp.propagate_down[j])
                b_ids.append(bid)
                b_need.append(need)
                need_backward |= self.blob_need_backward[bid]
            tops = list(lp.top)
            if layer.auto_top_blobs:
                want = layer.exact_tops or layer.min_tops or 0
                while len(tops) < want:
                    tops.append("(automatic)")
            t_ids = []
            for j, name in enumerate(tops):
                if j < len(lp.bottom) and name == lp.bottom[j]:
                    tid = self._blob_index[name]  # in-place
                elif name in self._blob_index and name != "(automatic)":
                    raise NetError(f"top blob '{name}' produced by multiple sources (layer '{lp.name}')")
                else:
                    tid = len(self._blob_list)
                    self._blob_list.append(Blob((), device=self.device))
                    self._blob_names.append(name)
                    self._blob_index[name] = tid
                    self.blob_need_backward.append(False)
                    if lp.type == "Input":
                        self._input_ids.append(tid)
                available.add(name)
                t_ids.append(tid)
            self.bottom_ids.append(b_ids)
            self.top_ids.append(t_ids)
            self.bottom_need_backward.append(b_need)
            bottom = [self._blob_list[i] for i in b_ids]
            top = [self._blob_list[i] for i in t_ids]
            if log:
                for i in b_ids:
                    glog.info(f"{lp.name} <- {self._blob_names[i]}", src="net.cpp:406")
                for i in t_ids:
                    glog.info(f"{lp.name} -> {self._blob_names[i]}", src="net.cpp:380")
                glog.info(f"Setting up {lp.name}", src="net.cpp:122")
            try:
                layer.setup(bottom, top)
            except LayerError as e:
                raise NetError(str(e)) from None
            self._set_loss_weights(layer_id, lp, layer, t_ids)
            if log:
                for j, t in enumerate(top):
                    shape = " ".join(str(d) for d in t.shape)
                    glog.info(f"Top shape: {shape} ({t.count})", src="net.cpp:129")
                    if layer.top_loss_weights[j]:
                        glog.info(f"    with loss weight {glog.fmt(layer.top_loss_weights[j])}", src="net.cpp:132")
            n_blobs = len(layer.blobs)
            if len(lp.param) > n_blobs:
                raise NetError(f"too many params specified for layer '{lp.name}': {len(lp.param)} param "
                               f"specs for {n_blobs} parameter blob(s)")
            if len(lp.blobs):
                self._copy_layer_blobs(lp.name, layer, lp.blobs, source="the prototxt")
            layer.param_propagate_down = []
            for p in range(n_blobs):
                spec = lp.param[p] if p < len(lp.param) else caffe_pb2.ParamSpec()
                pneed = spec.lr_mult != 0
                need_backward |= pneed
                layer.param_propagate_down.append(pneed)
            for p in range(n_blobs):
                self._append_param(layer_id, lp, p)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for tid in t_ids:
                    self.blob_need_backward[tid] = True
        self._prune_backward()
        for i, layer in enumerate(self.layers):
            layer.set_need_backward(self.layer_need_backward[i], self.bottom_need_backward[i])
        self._output_ids = [self._blob_index[n] for n in sorted(available, key=lambda n: self._blob_index[n])]
        if log:
            for i in range(len(self.layers) - 1, -1, -1):
                need = "needs" if self.layer_need_backward[i] else "does not need"
                glog.info(f"{self._layer_names[i]} {need} backward computation.", src="net.cpp:198")
            for i in self._output_ids:
                glog.info(f"This network produces output {self._blob_names[i]}", src="net.cpp:242")
            glog.info("Network initialization done.", src="net.cpp:255")
        self.blobs = OrderedDict((n, b) for n, b in zip(self._blob_names, self._blob_list))
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))

    def _set_loss_weights(self, layer_id, lp, layer, t_ids) -> None:
        if len(lp.loss_weight):
            if len(lp.loss_weight) != len(t_ids):
                raise NetError(f"layer '{lp.name}': loss_weight must be unspecified or given once per top "
                               f"blob ({len(t_ids)}), got {len(lp.loss_weight)}")
            weights = list(lp.loss_weight)
        else:
            weights = [layer.loss_weight(j) for j in range(len(t_ids))]
        for j, (tid, w) in enumerate(zip(t_ids, weights)):
            if w:
                name = self._blob_names[tid]
                self.blob_loss_weights[name] = float(w)
        layer.top_loss_weights = [float(w) for w in weights]

    def _append_param(self, layer_id: int, lp, p: int) -> None:
        layer = self.layers[layer_id]
        # Caffe's AppendParam reads the ParamSpecs from the layer's own copy of its parameter, after setup:
        # BatchNorm adds lr_mult 0 there for its statistics (need-backward still used the prototxt's specs).
        lp = layer.layer_param
        spec = lp.param[p] if p < len(lp.param) else caffe_pb2.ParamSpec()
        pname = spec.name if p < len(lp.param) else ""
        net_pid = len(self._params)
        blob = layer.blobs[p]
        self._params.append(blob)
        self._param_layer_index.append((layer_id, p))
        if not pname or pname not in self._param_names_index:
            self._param_owner.append(-1)
            if pname:
                self._param_names_index[pname] = net_pid
            lid = len(self.learnable_params)
            self.learnable_params.append(blob)
            self.learnable_param_names.append(f"{lp.name}:{p}" if not pname else pname)
            self._learnable_id_of.append(lid)
            self._has_lr.append(spec.HasField("lr_mult"))
            self._has_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(float(spec.lr_mult))
            self.params_weight_decay.append(float(spec.decay_mult))
            return
        owner_pid = self._param_names_index[pname]
        self._param_owner.append(owner_pid)
        olayer, op = self._param_layer_index[owner_pid]
        owner = self.layers[olayer].blobs[op]
        permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
        if permissive and owner.count != blob.count:
            raise NetError(f"cannot share param '{pname}' owned by layer '{self._layer_names[olayer]}' with "
                           f"layer '{lp.name}'; count mismatch: owner has {owner.count}, sharer {blob.count}")
        if not permissive and owner.shape != blob.shape:
            raise NetError(f"cannot share param '{pname}' owned by layer '{self._layer_names[olayer]}' with "
                           f"layer '{lp.name}'; shape mismatch: owner param shape is {owner.shape}, sharing "
                           f"layer shape is {blob.shape}")
        # The sharer uses the owner's storage for data and diff (Caffe's ShareData + ShareDiff).
        if owner.shape != blob.shape:
            blob.reshape(owner.shape)
        layer.blobs[p] = owner
        self._params[net_pid] = owner
        lid = self._learnable_id_of[owner_pid]
        self._learnable_id_of.append(lid)
        for has, vals, field in ((self._has_lr, self.params_lr, "lr_mult"),
                                 (self._has_decay, self.params_weight_decay, "decay_mult")):
            if spec.HasField(field):
                if has[lid]:
                    if getattr(spec, field) != vals[lid]:
                        raise NetError(f"shared param '{pname}' has mismatched {field} (layer '{lp.name}')")
                else:
                    has[lid] = True
                    vals[lid] = float(getattr(spec, field))

    def _prune_backward(self) -> None:
        """Caffe's backward pass over the graph: skip layers that do not contribute to the loss."""
        under_loss: set = set()
        skip: set = set()
        for lid in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[lid]
            contributes = False
            skip_prop = True
            for j, tid in enumerate(self.top_ids[lid]):
                name = self._blob_names[tid]
                if layer.top_loss_weights[j] or name in under_loss:
                    contributes = True
                if name not in skip:
                    skip_prop = False
                if contributes and not skip_prop:
                    break
            if self.layer_need_backward[lid] and skip_prop:
                self.layer_need_backward[lid] = False
                self.bottom_need_backward[lid] = [False] * len(self.bottom_ids[lid])
            if not contributes:
                self.layer_need_backward[lid] = False
            for j, bid in enumerate(self.bottom_ids[lid]):
                name = self._blob_names[bid]
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[lid][j] = False
                if not self.bottom_need_backward[lid][j]:
                    skip.add(name)
        if self.force_backward:
            for lid, layer in enumerate(self.layers):
                self.layer_need_backward[lid] = True
                for j, bid in enumerate(self.bottom_ids[lid]):
                    need = self.bottom_need_backward[lid][j] or layer.allow_force_backward(j)
                    self.bottom_need_backward[lid][j] = need
                    self.blob_need_backward[bid] = self.blob_need_backward[bid] or need
                layer.param_propagate_down = [True] * len(layer.blobs)

    # -- pycaffe properties -------------------------------------------------------------------------------
    @property
    def params(self) -> "OrderedDict[str, List[Blob]]":
        return OrderedDict((n, l.blobs) for n, l in zip(self._layer_names, self.layers) if l.blobs)

    @property
    def inputs(self) -> List[str]:
        return [self._blob_names[i] for i in self._input_ids]

    @property
    def outputs(self) -> List[str]:
        return [self._blob_names[i] for i in self._output_ids]

    output_blob_names = outputs

    @property
    def blob_names(self) -> List[str]:
        return list(self._blob_names)

    @property
    def layer_names(self) -> List[str]:
        return list(self._layer_names)

    @property
    def top_names(self) -> "OrderedDict[str, List[str]]":
        return OrderedDict((n, [self._blob_names[i] for i in ids]) for n, ids in zip(self._layer_names, self.top_ids))

    @property
    def bottom_names(self) -> "OrderedDict[str, List[str]]":
        return OrderedDict((n, [self._blob_names[i] for i in ids]) for n, ids in zip(self._layer_names, self.bottom_ids))

    @property
    def _blob_loss_weights(self) -> List[float]:
        return [self.blob_loss_weights.get(n, 0.0) for n in self._blob_names]

    def has_blob(self, name: str) -> bool:
        return name in self._blob_index

    def has_layer(self, name: str) -> bool:
        return name in self.layer_dict

    # -- running ------------------------------------------------------------------------------------------
    def _layer_index(self, name: Optional[str], default: int) -> int:
        if name is None:
            return default
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetError(f"no layer named '{name}' in net '{self.name}'") from None

    def _io(self, lid: int):
        return ([self._blob_list[i] for i in self.bottom_ids[lid]],
                [self._blob_list[i] for i in self.top_ids[lid]])

    def reshape(self) -> None:
        """Propagate input shapes through every layer (Caffe's Net::Reshape)."""
        for lid, layer in enumerate(self.layers):
            layer.reshape(*self._io(lid))

    def _forward_layer(self, lid: int) -> float:
        """Caffe's Layer::Forward: reshape, forward, and the layer's weighted loss."""
        layer = self.layers[lid]
        bottom, top = self._io(lid)
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        return sum(w * float(top[j].data_t.sum()) for j, w in enumerate(layer.top_loss_weights) if w)

    def _backward_layer(self, lid: int, keep: Iterable[str] = ()) -> None:
        """One layer's backward, if the net needs it.  The diff of a loss top holds its loss weight, as in
        Caffe (which stores the weight there once); ``keep`` names blobs whose diff the caller set instead."""
        if not self.layer_need_backward[lid]:
            return
        layer = self.layers[lid]
        bottom, top = self._io(lid)
        for j, w in enumerate(layer.top_loss_weights):
            if w and self._blob_names[self.top_ids[lid][j]] not in keep:
                top[j].diff_t = torch.full_like(top[j].data_t, w)
        layer.backward(top, self.bottom_need_backward[lid], bottom)

    def forward_from_to(self, start: int = 0, end: Optional[int] = None) -> float:
        """Run layers start..end (inclusive); returns the weighted loss of the layers run."""
        end = len(self.layers) - 1 if end is None else end
        return sum(self._forward_layer(lid) for lid in range(start, end + 1))

    def backward_from_to(self, start: Optional[int] = None, end: int = 0, keep_diffs: Iterable[str] = ()) -> None:
        """Run backward of layers start down to end (inclusive), for those that need it."""
        start = len(self.layers) - 1 if start is None else start
        keep = set(keep_diffs)
        for lid in range(start, end - 1, -1):
            self._backward_layer(lid, keep)

    def forward_loss(self) -> float:
        """Caffe's Net::Forward(&loss): run every layer, return the total weighted loss."""
        return self.forward_from_to(0, len(self.layers) - 1)

    def forward_backward(self) -> float:
        loss = self.forward_loss()
        self.backward_from_to()
        return loss

    def forward(self, blobs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                end: Optional[str] = None, **kwargs) -> Dict[str, np.ndarray]:
        """pycaffe's Net.forward: set inputs from kwargs, run start..end, return the output blobs."""
        for name, value in kwargs.items():
            if name not in self.inputs:
                raise NetError(f"forward(): '{name}' is not an input blob of net '{self.name}' "
                               f"(inputs: {', '.join(self.inputs) or 'none'})")
            value = np.asarray(value)
            blob = self.blobs[name]
            if value.shape[0] != blob.shape[0]:
                raise NetError(f"forward(): input '{name}' has batch size {value.shape[0]}, the net expects "
                               f"{blob.shape[0]} (reshape the blob first)")
            blob.data[...] = value
        s = self._layer_index(start, 0)
        e = self._layer_index(end, len(self.layers) - 1)
        self.forward_from_to(s, e)
        outs = set(self.outputs) if end is None else set(self.top_names[self._layer_names[e]])
        outs |= set(blobs or ())
        return {n: self.blobs[n].data for n in outs}

    def backward(self, diffs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                 end: Optional[str] = None, **kwargs) -> Dict[str, np.ndarray]:
        """pycaffe's Net.backward: set output diffs from kwargs, run backward, return the input diffs."""
        for name, value in kwargs.items():
            if name not in self.outputs:
                raise NetError(f"backward(): '{name}' is not an output blob of net '{self.name}'")
            self.blobs[name].diff[...] = np.asarray(value)
        s = self._layer_index(start, len(self.layers) - 1)
        e = self._layer_index(end, 0)
        self.backward_from_to(s, e, keep_diffs=kwargs)
        outs = set(self.inputs) if end is None else set(self.bottom_names[self._layer_names[e]])
        outs |= set(diffs or ())
        return {n: self.blobs[n].diff for n in outs}

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """pycaffe's Net.set_input_arrays: feed the net's first layer, a MemoryData layer, with ``data``
        (n x C x H x W float32, C-contiguous) and ``labels`` (n, or n x 1 x 1 x 1, float32); n must be a
        multiple of its batch size.  The layer keeps the arrays (not copies), as pycaffe does."""
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        return self._set_input_arrays(data, labels)

    def _set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """pycaffe's C++ Net_SetInputArrays: the same checks and RuntimeError messages, then
        MemoryDataLayer::Reset."""
        from .builtin.memory_data import MemoryDataLayer

        md = self.layers[0] if self.layers else None
        if not isinstance(md, MemoryDataLayer):
            raise RuntimeError("set_input_arrays may only be called if the first layer is a MemoryDataLayer")

        def check(arr, name: str, channels: int, height: int, width: int) -> None:
            if not isinstance(arr, np.ndarray):
                raise RuntimeError(f"{name} must be a numpy array, got {type(arr).__name__}")
            if not arr.flags["C_CONTIGUOUS"]:
                raise RuntimeError(f"{name} must be C contiguous")
            if arr.ndim != 4:
                raise RuntimeError(f"{name} must be 4-d")
            if arr.dtype != np.float32:
                raise RuntimeError(f"{name} must be float32")
            if arr.shape[1] != channels:
                raise RuntimeError(f"{name} has wrong number of channels")
            if arr.shape[2] != height:
                raise RuntimeError(f"{name} has wrong height")
            if arr.shape[3] != width:
                raise RuntimeError(f"{name} has wrong width")

        check(data, "data array", md.channels, md.height, md.width)
        check(labels, "labels array", 1, 1, 1)
        if data.shape[0] != labels.shape[0]:
            raise RuntimeError("data and labels must have the same first dimension")
        if data.shape[0] % md.batch_size != 0:
            raise RuntimeError("first dimensions of input arrays must be a multiple of batch size")
        md.reset(data, labels, data.shape[0])

    # -- parameters -----------------------------------------------------------------------------------------
    def clear_param_diffs(self) -> None:
        for p in self.learnable_params:
            p.zero_diff()

    def update(self) -> None:
        """Caffe's Net::Update: data -= diff for every learnable parameter."""
        for p in self.learnable_params:
            p.data_t = p.data_t - p.diff_t

    # -- weights I/O --------------------------------------------------------------------------------------
    def _copy_layer_blobs(self, layer_name: str, layer: Layer, protos, source: str, hdf5: bool = False) -> None:
        """Copy source blobs into a layer's parameters with Caffe's checks (count, then shape per blob).

        As in Caffe's CopyTrainedLayersFromHDF5, an HDF5 file may lack a parameter that this net shares with
        another layer (Caffe does not write shared parameters there); everywhere else the counts must agree.
        """
        from .protoio import is_missing_blob, proto_shape, proto_to_array, shape_string, shapes_match

        n_src, n_dst = len(protos), len(layer.blobs)
        if (n_src != n_dst) if not hdf5 else (n_src > n_dst):
            raise NetError(f"Incompatible number of blobs for layer {layer_name} ({source} has {n_src}, the net "
                           f"has {n_dst})")
        lid = self._layer_names.index(layer_name) if layer_name in self._layer_names else -1
        for i, blob in enumerate(layer.blobs):
            bp = protos[i] if i < n_src else None
            if bp is None or (hdf5 and is_missing_blob(bp)):
                if lid >= 0 and self._is_shared_param(lid, i):
                    continue
                raise NetError(f"Incompatible number of blobs for layer {layer_name} ({source} lacks "
                               f"parameter {i}, which the net does not share with another layer)")
            if not shapes_match(bp, blob.shape):
                raise NetError(f"Cannot copy param {i} weights from layer '{layer_name}' ({source}); shape "
                               f"mismatch.  Source param shape is {shape_string(proto_shape(bp))}; target param "
                               f"shape is {shape_string(blob.shape)}. To learn this layer's parameters from "
                               f"scratch rather than copying from a saved net, rename the layer.")
            arr = proto_to_array(bp).reshape(blob.shape)
            # (np.ascontiguousarray would turn a 0-axis blob, a learned scalar, into shape (1,))
            blob.data_t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32).reshape(blob.shape))

    def _is_shared_param(self, layer_id: int, index: int) -> bool:
        try:
            net_pid = self._param_layer_index.index((layer_id, index))
        except ValueError:
            return False
        return self._param_owner[net_pid] != -1

    def copy_from(self, weights: Union[str, "caffe_pb2.NetParameter"]) -> List[str]:
        """Copy trained weights by layer name (Caffe's CopyTrainedLayersFrom; .caffemodel or HDF5).

        Layers of the source that this net lacks are ignored.  A layer of the same name must carry as many
        blobs of the same shapes as the net's (else :class:`NetError` with Caffe's "Incompatible number of
        blobs for layer X" or "Cannot copy param i weights from layer 'X'; shape mismatch" message).  Returns
        the names of the layers whose weights were copied.

        Beyond Caffe (which only logs the extra layers of the source): afterwards ``net.uncovered_layers``
        names the layers with parameters that no weights copied so far have set (in net order); when there
        are any, one warning line lists them.
        """
        from .protoio import is_hdf5_weights, read_net_weights

        if isinstance(weights, caffe_pb2.NetParameter):
            src, source, hdf5 = weights, "<NetParameter>", False
        else:
            source = str(weights)
            src, hdf5 = read_net_weights(source), is_hdf5_weights(source)
        copied = []
        for lp in src.layer:
            layer = self.layer_dict.get(lp.name)
            if layer is None or (not len(lp.blobs) and not len(layer.blobs)):
                continue
            self._copy_layer_blobs(lp.name, layer, lp.blobs, source, hdf5=hdf5)
            copied.append(lp.name)
        covered = self.__dict__.setdefault("_covered_layers", set())
        covered.update(copied)
        missing = self.uncovered_layers
        if missing:
            with_params = sum(1 for l in self.layers if l.blobs)
            glog.warning(f"{source}: {with_params - len(missing)} of the {with_params} layers with parameters "
                         f"were set from it; left at their initial values: {', '.join(missing)}",
                         src="net.cpp:0")
        return copied

    @property
    def uncovered_layers(self) -> List[str]:
        """Names of the layers with parameter blobs that no ``copy_from`` / ``weights=`` has set (in net
        order); a layer whose parameters are all shared with a set layer counts as set."""
        covered = self.__dict__.get("_covered_layers", set())
        out = []
        for lid, (name, layer) in enumerate(zip(self._layer_names, self.layers)):
            if not layer.blobs or name in covered:
                continue
            owners = []
            for i in range(len(layer.blobs)):
                try:
                    pid = self._param_layer_index.index((lid, i))
                except ValueError:
                    owners = None
                    break
                owner = self._param_owner[pid]
                owners.append(None if owner == -1 else self._layer_names[self._param_layer_index[owner][0]])
            if owners and all(o is not None and o in covered for o in owners):
                continue
            out.append(name)
        return out

    def share_with(self, other: "Net") -> None:
        """Use ``other``'s parameter blobs for the layers of the same name (Caffe's ShareTrainedLayersWith)."""
        for name, layer in other.layer_dict.items():
            mine = self.layer_dict.get(name)
            if mine is None or not layer.blobs:
                continue
            if len(mine.blobs) != len(layer.blobs):
                raise NetError(f"incompatible number of blobs for layer '{name}' while sharing weights")
            for i, (a, b) in enumerate(zip(mine.blobs, layer.blobs)):
                if a.shape != b.shape:
                    raise NetError(f"cannot share param {i} of layer '{name}': shapes {b.shape} and {a.shape}")
                mine.blobs[i] = b

    def to_proto(self, write_diff: bool = False) -> "caffe_pb2.NetParameter":
        """The net with its weights, as Caffe's Net::ToProto writes a caffemodel (Split layers included)."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for layer in self.layers:
            out.layer.add().CopyFrom(layer.to_proto(write_diff=write_diff))
        return out

    def save(self, filename: str) -> None:
        """Write the weights as a binary caffemodel (atomically)."""
        from .protoio import write_binaryproto

        write_binaryproto(self.to_proto(), str(filename))

    def save_hdf5(self, filename: str, write_diff: bool = False) -> None:
        from .protoio import write_net_hdf5

        write_net_hdf5(self.to_proto(write_diff=write_diff), str(filename), diff=write_diff)

    # -- state for exact resumption -----------------------------------------------------------------------
    def state(self) -> dict:
        out = {}
        for name, layer in zip(self._layer_names, self.layers):
            s = layer.state()
            if s is not None:
                out[name] = s
        return out

    def set_state(self, state: dict) -> None:
        for name, s in state.items():
            if name in self.layer_dict:
                self.layer_dict[name].set_state(s)

    # -- misc ---------------------------------------------------------------------------------------------
    def to(self, device) -> "Net":
        """Move every blob and parameter to ``device``."""
        device = torch.device(device)
        seen = set()
        for b in list(self._blob_list) + [p for l in self.layers for p in l.blobs]:
            if id(b) not in seen:
                seen.add(id(b))
                b.to(device)
        for l in self.layers:
            l.device = device
        self.device = device
        return self

    def time_layers(self, iterations: int = 50) -> List[tuple]:
        """Average forward and backward milliseconds per layer (for ``caffe time``)."""
        sync = (torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None))
        fwd = [0.0] * len(self.layers)
        bwd = [0.0] * len(self.layers)

        def timed(fn, lid):
            sync()
            t0 = time.perf_counter()
            fn(lid)
            sync()
            return time.perf_counter() - t0

        for _ in range(iterations):
            for lid in range(len(self.layers)):
                fwd[lid] += timed(self._forward_layer, lid)
            for lid in range(len(self.layers) - 1, -1, -1):
                bwd[lid] += timed(self._backward_layer, lid)
        return [(n, l.layer_param.type, 1000 * f / iterations, 1000 * b / iterations)
                for n, l, f, b in zip(self._layer_names, self.layers, fwd, bwd)]

    def __repr__(self) -> str:
        return f"<torchcaffe.Net '{self.name}' phase={'TRAIN' if self.phase == caffe_pb2.TRAIN else 'TEST'} " \
               f"{len(self.layers)} layers on {self.device}>"
