"""Caffe's upgrades of old net and solver definitions (src/caffe/util/upgrade_proto.cpp), in place.

:func:`upgrade_net` runs, in Caffe's order (UpgradeNetAsNeeded):

1. V0 -> V1: ``layers { layer { type: "conv" ... } }`` nets; "padding" layers are folded into the conv /
   pool layer that reads them (UpgradeV0PaddingLayers), then each V0 layer's fields move into the V1
   ``*_param`` messages (UpgradeV0LayerParameter).  Like Caffe, only the name, layers, input, input_dim and
   force_backward of a V0 net are kept.
2. Data transformation fields of Data / ImageData / WindowData layers (scale, mean_file, crop_size, mirror)
   move into ``transform_param`` (UpgradeNetDataTransformation).
3. V1 -> V2: ``layers`` with enum types become ``layer`` with string types (UpgradeV1Net).
4. Net-level ``input`` / ``input_dim`` / ``input_shape`` become one Input layer named "input", placed first;
   inputs without dimensions (as old caffemodels store them) are simply dropped (UpgradeNetInput).
5. BatchNorm layers that declare three ParamSpecs get lr_mult = decay_mult = 0 on each
   (UpgradeNetBatchNorm).

Caffe logs, and carries on after, parameters it cannot place; so does this module (logger
``torchcaffe.upgrade``, level WARNING).  What Caffe aborts on raises :class:`UpgradeError`.
"""
from __future__ import annotations

import logging
from typing import Dict

from .proto import caffe_pb2

__all__ = [
    "UpgradeError", "upgrade_net", "upgrade_solver", "net_needs_upgrade",
    "net_needs_v0_to_v1_upgrade", "net_needs_data_upgrade", "net_needs_v1_to_v2_upgrade",
    "net_needs_input_upgrade", "net_needs_batchnorm_upgrade",
    "upgrade_v0_net", "upgrade_net_data_transformation", "upgrade_v1_net", "upgrade_net_input",
    "upgrade_net_batchnorm", "V1_LAYER_TYPE_NAMES", "V0_LAYER_TYPES", "SOLVER_TYPE_NAMES",
]

log = logging.getLogger("torchcaffe.upgrade")

V1 = caffe_pb2.V1LayerParameter


class UpgradeError(ValueError):
    """An old definition that Caffe's upgrade refuses (Caffe aborts with LOG(FATAL) / CHECK)."""


# ---------------------------------------------------------------------------------------------------------
# Type names
# ---------------------------------------------------------------------------------------------------------

#: UpgradeV1LayerType: V1 enum value -> layer type string.
V1_LAYER_TYPE_NAMES: Dict[int, str] = {
    V1.NONE: "",
    V1.ABSVAL: "AbsVal",
    V1.ACCURACY: "Accuracy",
    V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL",
    V1.CONCAT: "Concat",
    V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution",
    V1.DECONVOLUTION: "Deconvolution",
    V1.DATA: "Data",
    V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise",
    V1.EXP: "Exp",
    V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss",
    V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN",
    V1.POOLING: "Pooling",
    V1.POWER: "Power",
    V1.RELU: "ReLU",
    V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1.SPLIT: "Split",
    V1.SLICE: "Slice",
    V1.TANH: "TanH",
    V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

#: UpgradeV0LayerType: V0 type string -> V1 enum value.
V0_LAYER_TYPES: Dict[str, int] = {
    "accuracy": V1.ACCURACY,
    "bnll": V1.BNLL,
    "concat": V1.CONCAT,
    "conv": V1.CONVOLUTION,
    "data": V1.DATA,
    "dropout": V1.DROPOUT,
    "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN,
    "hdf5_data": V1.HDF5_DATA,
    "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL,
    "images": V1.IMAGE_DATA,
    "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT,
    "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": V1.POOLING,
    "relu": V1.RELU,
    "sigmoid": V1.SIGMOID,
    "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT,
    "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

#: UpgradeSolverType: legacy solver_type enum -> type string.
SOLVER_TYPE_NAMES: Dict[int, str] = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}

#: The ``*_param`` messages UpgradeV1LayerParameter copies, in its order.
_V1_COPIED_PARAMS = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param", "convolution_param",
    "data_param", "dropout_param", "dummy_data_param", "eltwise_param", "exp_param", "hdf5_data_param",
    "hdf5_output_param", "hinge_loss_param", "image_data_param", "infogain_loss_param",
    "inner_product_param", "lrn_param", "memory_data_param", "mvn_param", "pooling_param", "power_param",
    "relu_param", "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
)


# ---------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------

def net_needs_v0_to_v1_upgrade(net) -> bool:
    return any(l.HasField("layer") for l in net.layers)


def net_needs_v1_to_v2_upgrade(net) -> bool:
    return len(net.layers) > 0


_DATA_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_DATA_LAYERS = ((V1.DATA, "data_param"), (V1.IMAGE_DATA, "image_data_param"),
                (V1.WINDOW_DATA, "window_data_param"))


def net_needs_data_upgrade(net) -> bool:
    for l in net.layers:
        for t, pname in _DATA_LAYERS:
            if l.type == t:
                p = getattr(l, pname)
                if any(p.HasField(f) for f in _DATA_TRANSFORM_FIELDS):
                    return True
    return False


def net_needs_input_upgrade(net) -> bool:
    return len(net.input) > 0


def net_needs_batchnorm_upgrade(net) -> bool:
    return any(l.type == "BatchNorm" and len(l.param) == 3 for l in net.layer)


def net_needs_upgrade(net) -> bool:
    return (net_needs_v0_to_v1_upgrade(net) or net_needs_v1_to_v2_upgrade(net) or net_needs_data_upgrade(net)
            or net_needs_input_upgrade(net) or net_needs_batchnorm_upgrade(net))


# ---------------------------------------------------------------------------------------------------------
# V0 -> V1
# ---------------------------------------------------------------------------------------------------------

def _upgrade_v0_padding_layers(param) -> "caffe_pb2.NetParameter":
    """UpgradeV0PaddingLayers: drop "padding" layers, give their pad to the conv/pool layer they feed."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layers")
    last_top: Dict[str, int] = {name: -1 for name in param.input}
    for i, conn in enumerate(param.layers):
        lp = conn.layer
        if lp.type != "padding":
            out.layers.add().CopyFrom(conn)
        for j, blob_name in enumerate(conn.bottom):
            if blob_name not in last_top:
                raise UpgradeError(f"V0 net: unknown blob input '{blob_name}' to layer '{lp.name}'")
            top_idx = last_top[blob_name]
            if top_idx == -1:
                continue
            source = param.layers[top_idx]
            if source.layer.type == "padding":
                if lp.type not in ("conv", "pool"):
                    raise UpgradeError(f"V0 net: padding layer '{source.layer.name}' feeds layer "
                                       f"'{lp.name}' of type '{lp.type}'; only conv and pool can take padding")
                if len(conn.bottom) != 1:
                    raise UpgradeError(f"V0 net: layer '{lp.name}' after a padding layer must take one input")
                if len(source.bottom) != 1 or len(source.top) != 1:
                    raise UpgradeError(f"V0 net: padding layer '{source.layer.name}' must have one input "
                                       f"and one output")
                target = out.layers[len(out.layers) - 1]
                target.layer.pad = source.layer.pad
                target.bottom[j] = source.bottom[0]
        for blob_name in conn.top:
            last_top[blob_name] = i
    return out


def _upgrade_v0_layer(conn, out) -> bool:
    """UpgradeV0LayerParameter: one V0 layer (inside a V1 ``layers`` entry) into V1 fields of ``out``."""
    ok = True
    out.Clear()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        return ok
    v0 = conn.layer
    t = v0.type
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if t not in V0_LAYER_TYPES:
            raise UpgradeError(f"V0 net: unknown layer type '{t}' (layer '{v0.name}')")
        out.type = V0_LAYER_TYPES[t]
    for b in v0.blobs:
        out.blobs.add().CopyFrom(b)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)

    def bad(field: str) -> None:
        nonlocal ok
        log.warning("V0 upgrade: unknown parameter %s for layer type %s (layer '%s'); dropped",
                    field, t, v0.name)
        ok = False

    def route(field: str, targets: Dict[str, tuple]) -> None:
        """Move v0.<field> into the message/field that ``targets[type]`` = (param message name, field,
        'set' | 'add' | 'copy') names."""
        if not v0.HasField(field):
            return
        if t not in targets:
            bad(field)
            return
        msg_name, dst, how = targets[t]
        dst_msg = getattr(out, msg_name)
        value = getattr(v0, field)
        if how == "add":
            getattr(dst_msg, dst).append(value)
        elif how == "copy":
            getattr(dst_msg, dst).CopyFrom(value)
        else:
            setattr(dst_msg, dst, value)

    conv_ip = lambda dst, how="set": {"conv": ("convolution_param", dst, how),  # noqa: E731
                                      "innerproduct": ("inner_product_param", dst, how)}
    route("num_output", conv_ip("num_output"))
    route("biasterm", conv_ip("bias_term"))
    route("weight_filler", conv_ip("weight_filler", "copy"))
    route("bias_filler", conv_ip("bias_filler", "copy"))
    route("pad", {"conv": ("convolution_param", "pad", "add"), "pool": ("pooling_param", "pad", "set")})
    route("kernelsize", {"conv": ("convolution_param", "kernel_size", "add"),
                         "pool": ("pooling_param", "kernel_size", "set")})
    route("group", {"conv": ("convolution_param", "group", "set")})
    route("stride", {"conv": ("convolution_param", "stride", "add"),
                     "pool": ("pooling_param", "stride", "set")})
    if v0.HasField("pool"):
        if t == "pool":
            # V0 and current PoolMethod enums agree: MAX 0, AVE 1, STOCHASTIC 2.
            if v0.pool in (0, 1, 2):
                out.pooling_param.pool = v0.pool
            else:
                log.warning("V0 upgrade: unknown pool method %d (layer '%s')", v0.pool, v0.name)
                ok = False
        else:
            bad("pool")
    route("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio", "set")})
    for f in ("local_size", "alpha", "beta", "k"):
        route(f, {"lrn": ("lrn_param", f, "set")})
    route("source", {"data": ("data_param", "source", "set"),
                     "hdf5_data": ("hdf5_data_param", "source", "set"),
                     "images": ("image_data_param", "source", "set"),
                     "window_data": ("window_data_param", "source", "set"),
                     "infogain_loss": ("infogain_loss_param", "source", "set")})
    if v0.HasField("scale"):
        out.transform_param.scale = v0.scale
    if v0.HasField("meanfile"):
        out.transform_param.mean_file = v0.meanfile
    route("batchsize", {"data": ("data_param", "batch_size", "set"),
                        "hdf5_data": ("hdf5_data_param", "batch_size", "set"),
                        "images": ("image_data_param", "batch_size", "set"),
                        "window_data": ("window_data_param", "batch_size", "set")})
    if v0.HasField("cropsize"):
        out.transform_param.crop_size = v0.cropsize
    if v0.HasField("mirror"):
        out.transform_param.mirror = v0.mirror
    route("rand_skip", {"data": ("data_param", "rand_skip", "set"),
                        "images": ("image_data_param", "rand_skip", "set")})
    route("shuffle_images", {"images": ("image_data_param", "shuffle", "set")})
    route("new_height", {"images": ("image_data_param", "new_height", "set")})
    route("new_width", {"images": ("image_data_param", "new_width", "set")})
    route("concat_dim", {"concat": ("concat_param", "concat_dim", "set")})
    route("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold", "set")})
    route("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold", "set")})
    route("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction", "set")})
    route("det_context_pad", {"window_data": ("window_data_param", "context_pad", "set")})
    route("det_crop_mode", {"window_data": ("window_data_param", "crop_mode", "set")})
    if v0.HasField("hdf5_output_param"):
        if t == "hdf5_output":
            out.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
        else:
            bad("hdf5_output_param")
    return ok


def upgrade_v0_net(net) -> bool:
    """UpgradeV0Net, in place; returns whether every V0 field found a place (Caffe's is_fully_compatible)."""
    padded = _upgrade_v0_padding_layers(net)
    ok = True
    net.Clear()
    if padded.HasField("name"):
        net.name = padded.name
    for conn in padded.layers:
        ok &= _upgrade_v0_layer(conn, net.layers.add())
    net.input.extend(padded.input)
    net.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        net.force_backward = padded.force_backward
    return ok


# ---------------------------------------------------------------------------------------------------------
# Data transformation, V1 -> V2
# ---------------------------------------------------------------------------------------------------------

def upgrade_net_data_transformation(net) -> None:
    """UpgradeNetDataTransformation: scale / mean_file / crop_size / mirror of V1 data layers move into
    ``transform_param``.  As in Caffe (which reaches both through mutable_*), every Data / ImageData /
    WindowData layer ends up with its ``*_param`` and a ``transform_param`` present, empty or not."""
    for l in net.layers:
        for t, pname in _DATA_LAYERS:
            if l.type != t:
                continue
            p = getattr(l, pname)
            p.SetInParent()
            l.transform_param.SetInParent()
            for f in _DATA_TRANSFORM_FIELDS:
                if p.HasField(f):
                    setattr(l.transform_param, f, getattr(p, f))
                    p.ClearField(f)


def _upgrade_v1_layer(v1, out) -> bool:
    """UpgradeV1LayerParameter."""
    ok = True
    out.Clear()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    for r in v1.include:
        out.include.add().CopyFrom(r)
    for r in v1.exclude:
        out.exclude.add().CopyFrom(r)
    if v1.HasField("type"):
        if v1.type not in V1_LAYER_TYPE_NAMES:
            raise UpgradeError(f"unknown V1 layer type {v1.type} (layer '{v1.name}')")
        out.type = V1_LAYER_TYPE_NAMES[v1.type]
    for b in v1.blobs:
        out.blobs.add().CopyFrom(b)

    def spec(i: int):
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        # V1 and ParamSpec DimCheckMode enums agree: STRICT 0, PERMISSIVE 1.
        if mode not in (V1.STRICT, V1.PERMISSIVE):
            raise UpgradeError(f"unknown blob_share_mode {mode} (layer '{v1.name}')")
        spec(i).share_mode = mode
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, wd in enumerate(v1.weight_decay):
        spec(i).decay_mult = wd
    out.loss_weight.extend(v1.loss_weight)
    for pname in _V1_COPIED_PARAMS:
        if v1.HasField(pname):
            getattr(out, pname).CopyFrom(getattr(v1, pname))
    if v1.HasField("layer"):
        log.warning("V1 upgrade: layer '%s' still holds a V0 layer; ignored", v1.name)
        ok = False
    return ok


def upgrade_v1_net(net) -> bool:
    """UpgradeV1Net, in place; returns Caffe's is_fully_compatible."""
    ok = True
    if len(net.layer) > 0:
        log.warning("V1 upgrade: the net specifies both 'layers' (V1) and 'layer'; the 'layer' entries "
                    "are dropped")
        ok = False
    v1_layers = list(net.layers)
    upgraded = []
    for i, v1 in enumerate(v1_layers):
        lp = caffe_pb2.LayerParameter()
        if not _upgrade_v1_layer(v1, lp):
            log.warning("V1 upgrade: upgrade of input layer %d failed", i)
            ok = False
        upgraded.append(lp)
    net.ClearField("layers")
    net.ClearField("layer")
    net.layer.extend(upgraded)
    return ok


# ---------------------------------------------------------------------------------------------------------
# Net inputs, BatchNorm
# ---------------------------------------------------------------------------------------------------------

def upgrade_net_input(net) -> None:
    """UpgradeNetInput: net-level inputs with shapes become one Input layer "input", first in the net;
    inputs without shapes (old caffemodels) are dropped.  The input fields are cleared either way."""
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if has_shape or has_dim:
        n = len(net.input)
        if has_shape and len(net.input_shape) < n:
            raise UpgradeError(f"the net declares {n} inputs but {len(net.input_shape)} input_shape entries")
        if not has_shape and len(net.input_dim) < 4 * n:
            raise UpgradeError(f"the net declares {n} inputs but {len(net.input_dim)} input_dim values "
                               f"(4 per input needed)")
        layer = caffe_pb2.LayerParameter()
        layer.name = "input"
        layer.type = "Input"
        for i, top in enumerate(net.input):
            layer.top.append(top)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        net.layer.insert(0, layer)  # Caffe swaps the new layer down to the front; the rest keep their order
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def upgrade_net_batchnorm(net) -> bool:
    """UpgradeNetBatchNorm: BatchNorm layers with three ParamSpecs get lr_mult and decay_mult 0 on each
    (names and share modes stay).  Returns whether any value changed (Caffe re-applies this upgrade to
    every such net, so a net can need it and yet be unchanged by it)."""
    changed = False
    for l in net.layer:
        if l.type == "BatchNorm" and len(l.param) == 3:
            for ps in l.param:
                for f in ("lr_mult", "decay_mult"):
                    if not ps.HasField(f) or getattr(ps, f) != 0.0:
                        setattr(ps, f, 0.0)
                        changed = True
    return changed


# ---------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------

def upgrade_net(net_param, source: str = "<net>") -> bool:
    """Caffe's UpgradeNetAsNeeded, in place.  Returns whether anything was upgraded.

    Incompatibilities Caffe only logs are logged (logger ``torchcaffe.upgrade``); what Caffe aborts on
    raises :class:`UpgradeError`.
    """
    changed = False
    if net_needs_v0_to_v1_upgrade(net_param):
        log.info("upgrading V0LayerParameter net %s", source)
        if not upgrade_v0_net(net_param):
            log.warning("%s: one or more problems upgrading the V0 net (see above); continuing anyway",
                        source)
        changed = True
    if net_needs_data_upgrade(net_param):
        log.info("upgrading deprecated data transformation parameters in %s", source)
        upgrade_net_data_transformation(net_param)
        changed = True
    if net_needs_v1_to_v2_upgrade(net_param):
        log.info("upgrading V1LayerParameter net %s", source)
        if not upgrade_v1_net(net_param):
            log.warning("%s: one or more problems upgrading the V1 net (see above); continuing anyway",
                        source)
        changed = True
    if net_needs_input_upgrade(net_param):
        log.info("upgrading deprecated input fields in %s", source)
        upgrade_net_input(net_param)
        changed = True
    if net_needs_batchnorm_upgrade(net_param):
        log.info("upgrading BatchNorm layers with deprecated params in %s", source)
        changed |= upgrade_net_batchnorm(net_param)
    return changed


def upgrade_solver(solver_param, source: str = "<solver>") -> bool:
    """Caffe's UpgradeSolverAsNeeded, in place: the legacy ``solver_type`` enum becomes the ``type`` string.
    Returns whether anything changed; giving both fields raises :class:`UpgradeError` (as Caffe's CHECK)."""
    if not solver_param.HasField("solver_type"):
        return False
    if solver_param.HasField("type"):
        raise UpgradeError("the old solver_type field (enum) and the new type field (string) cannot both "
                           "be specified; keep only 'type'")
    st = solver_param.solver_type
    if st not in SOLVER_TYPE_NAMES:
        raise UpgradeError(f"unknown solver_type {st}")
    solver_param.type = SOLVER_TYPE_NAMES[st]
    solver_param.ClearField("solver_type")
    return True
