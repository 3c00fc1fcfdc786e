"""Describe a colorization net as the seed's Table 1 does, from its prototxt alone.

    python tools/describe_net.py prototxt/colorization_train_val.prototxt [--size 224] [--phase TRAIN]

Prints a tab-separated table, header ``layer X C S D Sa De BN L``: a row for the net's input (the first top
of each Input/Data layer), then one row per convolution of the trunk, then ``params <N>``.

* Shapes are inferred statically with Caffe's rules (no data, no weights): Input/Data layers give their
  shape with the spatial size replaced by ``--size`` (224 as the seed; ``--size 0`` keeps the file's own
  Input shape or Data crop), convolutions ``(X + 2p - (d(k-1)+1)) / s + 1`` rounded down, deconvolutions
  ``s(X-1) + d(k-1)+1 - 2p``, pooling rounded up; element-wise and normalization layers pass shapes
  through.  The Python layers of ``colorization_layers`` are known by class name.
* Trunk rows: every Convolution and Deconvolution with a kernel larger than 1x1 and at least one learned
  parameter blob, in file order, named by their top blob.  1x1 convolutions are the L column (and the fixed
  subsampling of the targets); fixed layers (all ``lr_mult: 0``, e.g. bilinear upsampling) are not trunk.
* X: output height (``HxW`` if not square).  C: outputs.  S: stride; a Deconvolution of stride s upsamples
  before convolving and is listed as 1/s (``.5``).  D: dilation.  Sa: accumulated stride of the layer
  relative to the input: the product of the strides of the preceding layers, including the layer's own
  upsampling (which precedes its convolution) but not its own downsampling (which follows it).  De = D x Sa.
  BN: a BatchNorm layer reads the output (through in-place activations).  L: a 1x1 convolution reading the
  output (or its BatchNorm output) leads to a loss layer (a type ending in ``Loss``, a Python loss layer or
  a nonzero ``loss_weight``).
* ``params``: the number of learned parameters, i.e. the elements of every parameter blob whose
  ``lr_mult`` is not 0 (``param`` specs default to 1).  BatchNorm's mean, variance and scale factor are
  statistics, never learned (Caffe forces their ``lr_mult`` to 0); ``--with-stats`` adds them, and
  ``--all`` counts every parameter blob whatever its ``lr_mult``.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from fractions import Fraction


from torchcaffe.proto import caffe_pb2
from torchcaffe.net import filter_net
from torchcaffe.protoio import CaffeFormatError, read_net_param

HEADER = ("layer", "X", "C", "S", "D", "Sa", "De", "BN", "L")
YES, NO = "\u2713", "-"

DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "Input"}
PASS_THROUGH = {"ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log", "Threshold",
                "Dropout", "BatchNorm", "Scale", "Bias", "MVN", "LRN", "Softmax", "Eltwise", "Split"}
ACTIVATIONS = {"ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Dropout", "Power", "Threshold"}

#: Python layers of colorization_layers: class name -> top shapes from bottom shapes.
PYTHON_SHAPES = {
    "BGR2LabLayer": lambda b, p: [b[0]],
    "NNEncLayer": lambda b, p: [(b[0][0], 313) + b[0][2:]],
    "NonGrayMaskLayer": lambda b, p: [(b[0][0], 1) + b[0][2:]],
    "PriorBoostLayer": lambda b, p: [(b[0][0], 1) + b[0][2:]],
    "ClassRebalanceMultLayer": lambda b, p: [b[0]],
    "SoftmaxCrossEntropyLossLayer": lambda b, p: [(1,)],
    "AnnealedMeanLayer": lambda b, p: [(b[0][0], 2) + b[0][2:]],
    "BilinearUpsampleLayer": lambda b, p: [b[0][:2] + (tuple(p["size"]) if p.get("size") else b[1][2:4])],
}


class DescribeError(ValueError):
    pass


def read_net(path) -> "caffe_pb2.NetParameter":
    """The net as the runtime reads it (upgraded; errors name the file, line and column)."""
    return read_net_param(str(path))


def filter_layers(net, phase: int, level: int = 0, stages=()) -> list:
    """The layers a net of this phase/level/stages keeps (the runtime's Net::FilterNet)."""
    p = caffe_pb2.NetParameter()
    p.CopyFrom(net)
    p.state.CopyFrom(caffe_pb2.NetState(phase=phase, level=level, stage=list(stages)))
    return list(filter_net(p).layer)


# ---- geometry ------------------------------------------------------------------------------------------

def _pair(repeated, h_field, w_field, msg, default):
    h = getattr(msg, h_field) if msg.HasField(h_field) else None
    w = getattr(msg, w_field) if msg.HasField(w_field) else None
    if h is not None or w is not None:
        return (h if h is not None else default, w if w is not None else default)
    vals = list(repeated)
    if not vals:
        return (default, default)
    return (vals[0], vals[-1]) if len(vals) <= 2 else (vals[0], vals[1])


def conv_geometry(cp):
    """(kernel, stride, pad, dilation) as (h, w) pairs of a ConvolutionParameter."""
    k = _pair(cp.kernel_size, "kernel_h", "kernel_w", cp, None)
    if k[0] is None:
        raise DescribeError("convolution without kernel_size")
    s = _pair(cp.stride, "stride_h", "stride_w", cp, 1)
    p = _pair(cp.pad, "pad_h", "pad_w", cp, 0)
    dl = list(cp.dilation)
    d = (dl[0], dl[-1]) if dl else (1, 1)
    return k, s, p, d


def _python_params(layer) -> dict:
    import json
    text = layer.python_param.param_str
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return {}


def _is_loss(layer) -> bool:
    if layer.type.endswith("Loss"):
        return True
    if layer.type == "Python" and layer.python_param.layer.endswith("LossLayer"):
        return True
    return any(w != 0 for w in layer.loss_weight)


def infer(layers, size: int = 224, data_channels: int = 3):
    """Shapes of every blob: {name: shape tuple}, plus {name: accumulated stride (Fraction)} and a list
    of per-layer parameter blob shapes (None for layers without parameters)."""
    shapes, strides, params, warnings = {}, {}, [], []
    for layer in layers:
        t = layer.type
        bs = [shapes[b] for b in layer.bottom] if all(b in shapes for b in layer.bottom) else None
        if bs is None:
            missing = [b for b in layer.bottom if b not in shapes]
            raise DescribeError(f"layer {layer.name!r}: unknown bottom(s) {missing}")
        bstride = strides.get(layer.bottom[0], Fraction(1)) if layer.bottom else Fraction(1)
        tops, pblobs, tstride = None, [], bstride
        if t == "Input":
            ip = layer.input_param
            dims = [list(s.dim) for s in ip.shape]
            tops = []
            for i in range(len(layer.top)):
                d = dims[i] if i < len(dims) else dims[0]
                if size and len(d) == 4:
                    d = d[:2] + [size, size]
                tops.append(tuple(d))
            tstride = Fraction(1)
        elif t in DATA_TYPES:
            if t == "Data":
                n = layer.data_param.batch_size
            elif t == "ImageData":
                n = layer.image_data_param.batch_size
            else:
                n = 1
            crop = layer.transform_param.crop_size
            hw = size or crop
            if not hw:
                raise DescribeError(f"layer {layer.name!r}: the image size of {t} is not in the prototxt; "
                                    f"give --size")
            tops = [(n, data_channels, hw, hw)] + [(n,)] * (len(layer.top) - 1)
            tstride = Fraction(1)
        elif t in ("Convolution", "Deconvolution"):
            cp = layer.convolution_param
            k, s, p, d = conv_geometry(cp)
            n, c, h, w = bs[0]
            if t == "Convolution":
                out = [(x + 2 * pp - (dd * (kk - 1) + 1)) // ss + 1 for x, kk, ss, pp, dd in zip((h, w), k, s, p, d)]
                tstride = bstride * s[0]
                wshape = (cp.num_output, c // cp.group) + k
            else:
                out = [ss * (x - 1) + dd * (kk - 1) + 1 - 2 * pp for x, kk, ss, pp, dd in zip((h, w), k, s, p, d)]
                tstride = bstride / s[0]
                wshape = (c, cp.num_output // cp.group) + k
            tops = [(n, cp.num_output, out[0], out[1])]
            pblobs = [wshape] + ([(cp.num_output,)] if cp.bias_term else [])
        elif t == "Pooling":
            pp = layer.pooling_param
            n, c, h, w = bs[0]
            if pp.global_pooling:
                out, s0 = (1, 1), h
            else:
                k = (pp.kernel_h, pp.kernel_w) if pp.HasField("kernel_h") else (pp.kernel_size,) * 2
                s = (pp.stride_h, pp.stride_w) if pp.HasField("stride_h") else (pp.stride,) * 2
                p = (pp.pad_h, pp.pad_w) if pp.HasField("pad_h") else (pp.pad,) * 2
                out = []
                for x, kk, ss, q in zip((h, w), k, s, p):
                    o = int(math.ceil((x + 2 * q - kk) / ss)) + 1
                    if q and (o - 1) * ss >= x + q:
                        o -= 1
                    out.append(o)
                s0 = s[0]
            tops = [(n, c) + tuple(out)]
            tstride = bstride * s0
        elif t == "InnerProduct":
            ip = layer.inner_product_param
            axis = ip.axis % len(bs[0])
            k_in = math.prod(bs[0][axis:])
            tops = [bs[0][:axis] + (ip.num_output,)]
            pblobs = [(ip.num_output, k_in)] + ([(ip.num_output,)] if ip.bias_term else [])
        elif t == "Slice":
            sp = layer.slice_param
            axis = sp.axis % len(bs[0])
            points = list(sp.slice_point)
            total = bs[0][axis]
            if not points:
                step = total // len(layer.top)
                points = [step * i for i in range(1, len(layer.top))]
            bounds = [0] + points + [total]
            tops = [bs[0][:axis] + (bounds[i + 1] - bounds[i],) + bs[0][axis + 1:] for i in range(len(layer.top))]
        elif t == "Concat":
            axis = layer.concat_param.axis % len(bs[0])
            tops = [bs[0][:axis] + (sum(b[axis] for b in bs),) + bs[0][axis + 1:]]
        elif t == "Silence":
            tops = []
        elif t == "BatchNorm":
            c = bs[0][1]
            tops = [bs[0]]
            pblobs = [(c,), (c,), (1,)]
        elif t in ("Scale", "Bias"):
            tops = [bs[0]]
            if len(bs) == 1:
                sp = layer.scale_param if t == "Scale" else layer.bias_param
                axis = sp.axis % len(bs[0])
                num_axes = sp.num_axes
                shape = bs[0][axis:] if num_axes == -1 else bs[0][axis:axis + num_axes]
                pblobs = [tuple(shape)]
                if t == "Scale" and sp.bias_term:
                    pblobs.append(tuple(shape))
        elif t == "Python":
            fn = PYTHON_SHAPES.get(layer.python_param.layer)
            if fn is None:
                warnings.append(f"layer {layer.name!r}: unknown Python layer {layer.python_param.layer!r}; "
                                f"assuming its tops have the shape of its first bottom")
                tops = [bs[0]] * len(layer.top)
            else:
                tops = fn(bs, _python_params(layer))
            if layer.python_param.layer == "BilinearUpsampleLayer":
                if len(layer.bottom) > 1:
                    tstride = strides.get(layer.bottom[1], Fraction(1))
                else:
                    tstride = bstride * Fraction(bs[0][2], tops[0][2])
        elif t.endswith("Loss") or t in ("Accuracy",):
            tops = [(1,)] * len(layer.top) if t.endswith("Loss") else [()] * len(layer.top)
        elif t in PASS_THROUGH:
            tops = [bs[0]] * len(layer.top)
        else:
            warnings.append(f"layer {layer.name!r}: type {t!r} not modelled; assuming its tops have the shape "
                            f"of its first bottom")
            tops = [bs[0]] * len(layer.top)
        for name, shp in zip(layer.top, tops):
            shapes[name] = tuple(int(x) for x in shp)
            strides[name] = tstride
        params.append(pblobs)
    return shapes, strides, params, warnings


def _learned(layer, i: int) -> bool:
    if layer.type == "BatchNorm":
        return False
    lr = layer.param[i].lr_mult if i < len(layer.param) else 1.0
    return lr != 0


def count_params(layers, params, with_stats: bool = False, everything: bool = False) -> int:
    total = 0
    for layer, blobs in zip(layers, params):
        for i, shape in enumerate(blobs):
            if everything or _learned(layer, i) or (with_stats and layer.type == "BatchNorm"):
                total += math.prod(shape)
    return total


def _fmt(x) -> str:
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    s = f"{float(x):g}"
    return s[1:] if s.startswith("0.") else s


def describe(net, size: int = 224, phase: int = caffe_pb2.TRAIN, data_channels: int = 3,
             with_stats: bool = False, everything: bool = False):
    """(rows, params, warnings): rows are tuples of strings under ``HEADER``."""
    layers = filter_layers(net, phase)
    shapes, strides, params, warnings = infer(layers, size, data_channels)

    consumers = defaultdict(list)   # blob -> layers reading it
    for layer in layers:
        for b in layer.bottom:
            consumers[b].append(layer)

    def _x(shape):
        return str(shape[2]) if shape[2] == shape[3] else f"{shape[2]}x{shape[3]}"

    def reaches_loss(blob, seen=None) -> bool:
        seen = set() if seen is None else seen
        for layer in consumers[blob]:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            if _is_loss(layer):
                return True
            if any(t != blob and reaches_loss(t, seen) for t in layer.top):
                return True
        return False

    def readers(blob):
        """Layers reading ``blob`` or what in-place/activation layers make of it, and BatchNorm outputs."""
        out, frontier, seen = [], [blob], set()
        while frontier:
            b = frontier.pop()
            if b in seen:
                continue
            seen.add(b)
            for layer in consumers[b]:
                out.append(layer)
                if layer.type in ACTIVATIONS or layer.type == "BatchNorm":
                    frontier.extend(t for t in layer.top if t != b)
        return out

    rows = []
    for layer in layers:
        if layer.type in DATA_TYPES and layer.top:
            top = layer.top[0]
            rows.append((top, _x(shapes[top]), str(shapes[top][1])) + (NO,) * 6)
    for layer, blobs in zip(layers, params):
        if layer.type not in ("Convolution", "Deconvolution"):
            continue
        k, s, _, d = conv_geometry(layer.convolution_param)
        if k == (1, 1) or not any(_learned(layer, i) for i in range(len(blobs))):
            continue
        top = layer.top[0]
        deconv = layer.type == "Deconvolution"
        stride = Fraction(1, s[0]) if deconv else Fraction(s[0])
        sa = strides[top] if deconv else strides[layer.bottom[0]]
        rs = readers(top)
        bn = any(r.type == "BatchNorm" for r in rs)
        loss = any(r.type == "Convolution" and conv_geometry(r.convolution_param)[0] == (1, 1)
                   and reaches_loss(r.top[0]) for r in rs)
        rows.append((top, _x(shapes[top]), str(layer.convolution_param.num_output), _fmt(stride), str(d[0]),
                     _fmt(sa), _fmt(d[0] * sa), YES if bn else NO, YES if loss else NO))
    total = count_params(layers, params, with_stats, everything)
    return rows, total, warnings


def format_table(rows, total) -> str:
    lines = ["\t".join(HEADER)] + ["\t".join(r) for r in rows] + [f"params {total}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Table 1 of the seed for a net prototxt (static shape inference).")
    ap.add_argument("prototxt")
    ap.add_argument("--size", type=int, default=224, help="input height and width (0: the file's own)")
    ap.add_argument("--phase", choices=("TRAIN", "TEST"), default="TRAIN")
    ap.add_argument("--data-channels", type=int, default=3, help="channels of Data layer images (default 3)")
    ap.add_argument("--with-stats", action="store_true", help="count BatchNorm statistics as parameters")
    ap.add_argument("--all", action="store_true", help="count every parameter blob, whatever its lr_mult")
    args = ap.parse_args(argv)
    try:
        net = read_net(args.prototxt)
        rows, total, warnings = describe(net, args.size, getattr(caffe_pb2, args.phase), args.data_channels,
                                         args.with_stats, args.all)
    except CaffeFormatError as e:  # already names the file (and line, column)
        print(f"describe_net: {e}", file=sys.stderr)
        return 1
    except (DescribeError, OSError) as e:
        print(f"describe_net: {args.prototxt}: {e}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"describe_net: warning: {w}", file=sys.stderr)
    sys.stdout.write(format_table(rows, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
