"""Write every file in ``prototxt/`` from the declarative tables below, through ``caffe.NetSpec``.

    python tools/make_prototxt.py            # (re)write prototxt/
    python tools/make_prototxt.py --check    # exit 1 and list the files that differ from a fresh generation
    python tools/make_prototxt.py --out DIR  # write the tree into DIR instead

The outputs are committed; ``tests/test_prototxt.py`` regenerates them and expects no difference.  Nothing
below reads the clock, the environment or the file system except ``data/pts_in_hull.npy`` (the bin centres
of the fixed ``class8_ab`` layers), so the output is a function of this file alone.

Tables
------
``TABLE1``        the seed's Table 1 (supplementary material), row for row: top name, C, S, D, BN, L.
``RELEASE_V2``    the released model: Table 1 with conv7 at 512 and conv8 at 256 channels, one loss at conv8.
``NETS``          one entry per directory: trunk table, width divisor, data, losses, deploy variants.
``SOLVERS``       the solver files.
``LAYER_NAMES``   layer names that differ from their top's name (the released ``bw_conv1_1``).

Every net uses only BVLC Caffe 1.0 built-in layer types and the Python layers of ``layers/`` (module
``colorization_layers``), except ``release_v2``'s train_val, which keeps the released file's
``SoftmaxCrossEntropyLoss`` type (not in BVLC Caffe; torchcaffe provides it).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from google.protobuf import text_format

import cic
import torchcaffe as caffe
from torchcaffe.proto import caffe_pb2

from .paths import REPO  # prototxt/ is written under the checkout's root

L = caffe.layers
P = caffe.params

# ---------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------

#: The seed's Table 1: (top, C, S, D, BN after, L after).  S < 1 is an upsampling before the convolution
#: (a Deconvolution of kernel 4, stride 1/S, pad 1); S > 1 a strided 3x3 convolution.  Every 3x3
#: convolution pads by its dilation, so only the strides change the resolution.
TABLE1 = (
    # top       C    S    D  BN     L
    ("conv1_1", 64, 1, 1, False, False),
    ("conv1_2", 64, 2, 1, True, False),
    ("conv2_1", 128, 1, 1, False, False),
    ("conv2_2", 128, 2, 1, True, False),  # listed as "conv2_1" a second time in the seed
    ("conv3_1", 256, 1, 1, False, False),
    ("conv3_2", 256, 1, 1, False, False),
    ("conv3_3", 256, 2, 1, True, False),
    ("conv4_1", 512, 1, 1, False, False),
    ("conv4_2", 512, 1, 1, False, False),
    ("conv4_3", 512, 1, 1, True, False),
    ("conv5_1", 512, 1, 2, False, False),
    ("conv5_2", 512, 1, 2, False, False),
    ("conv5_3", 512, 1, 2, True, True),
    ("conv6_1", 512, 1, 2, False, False),
    ("conv6_2", 512, 1, 2, False, False),
    ("conv6_3", 512, 1, 2, True, True),
    ("conv7_1", 256, 1, 1, False, False),
    ("conv7_2", 256, 1, 1, False, False),
    ("conv7_3", 256, 1, 1, True, True),
    ("conv8_1", 128, 0.5, 1, False, False),
    ("conv8_2", 128, 1, 1, False, False),
    ("conv8_3", 128, 1, 1, False, True),
)


def _variant(table, channels: dict, losses: set):
    """``table`` with the channels of the named rows replaced and the L column set to ``losses``."""
    return tuple((top, channels.get(top, c), s, d, bn, top in losses) for top, c, s, d, bn, _ in table)


#: The released model (colorization_deploy_v2 / train_val_v2): conv7 512, conv8 256, one loss after conv8.
RELEASE_V2 = _variant(TABLE1, {"conv7_1": 512, "conv7_2": 512, "conv7_3": 512,
                               "conv8_1": 256, "conv8_2": 256, "conv8_3": 256}, {"conv8_3"})

#: Layer names that differ from their top's name, as in the released files.
LAYER_NAMES = {"conv1_1": "bw_conv1_1"}

Q = 313                       # ab bins
T = 0.38                      # softmax temperature of the annealed mean (paper, seed section 2.1)
RELEASED_SCALE = 2.606        # the released deploy file's temperature scale (1 / 2.606 = 0.3837)
PY_MODULE = "colorization_layers"
FIXED = dict(lr_mult=0, decay_mult=0)

#: One entry per output directory.
NETS = {
    "main": dict(
        dir="prototxt", name="colorization", trunk=TABLE1, width_div=1,
        train=dict(source="data/lmdb/train", batch=40, crop=176, mirror=True),
        test=dict(source="data/lmdb/val", batch=10, crop=256, mirror=False),
        prior="data/prior_probs.npy", nnenc=dict(k=5, sigma=5), loss_type="python",
        loss_weight_main=1.0, loss_weight_aux=1.0,
        train_val="colorization_train_val.prototxt",
        deploy="colorization_deploy.prototxt", portable="colorization_deploy_portable.prototxt",
        fixed="colorization_fixed_layers.caffemodel", deploy_size=224,
    ),
    "release_v2": dict(
        dir="prototxt/release_v2", name="LtoAB", trunk=RELEASE_V2, width_div=1,
        train=dict(source="data/lmdb/train", batch=40, crop=176, mirror=True),
        test=dict(source="data/lmdb/val", batch=10, crop=256, mirror=False),
        prior="data/prior_probs.npy", nnenc=dict(k=10, sigma=5), loss_type="SoftmaxCrossEntropyLoss",
        released_pipeline=True,
        loss_weight_main=1.0, loss_weight_aux=None,
        train_val="colorization_train_val_v2.prototxt",
        deploy="colorization_deploy_v2.prototxt", portable=None,
        fixed="colorization_release_v2_fixed_layers.caffemodel", deploy_size=224,
    ),
    "demo": dict(
        dir="prototxt/demo", name="colorization_demo", trunk=TABLE1, width_div=8,
        train=dict(source="data/lmdb/demo/train", batch=8, crop=56, mirror=True),
        test=dict(source="data/lmdb/demo/val", batch=4, crop=64, mirror=False),
        prior="data/prior_probs_demo.npy", nnenc=dict(k=5, sigma=5), loss_type="python",
        loss_weight_main=1.0, loss_weight_aux=1.0,
        train_val="colorization_train_val.prototxt",
        deploy="colorization_deploy.prototxt", portable="colorization_deploy_portable.prototxt",
        fixed="colorization_fixed_layers.caffemodel", deploy_size=64,
    ),
}

_ADAM = dict(type="Adam", momentum=0.9, momentum2=0.99, weight_decay=1e-3)

#: Solver files: (directory key, file name) -> fields.  ``net`` paths are relative to the repository root,
#: the directory `caffe train` runs in (Caffe resolves them against the working directory).
SOLVERS = {
    # The paper's schedule in one file: exact to 375k; the last 75k at 3.33e-6 instead of 3e-6 (one gamma).
    ("main", "solver.prototxt"): dict(
        net="prototxt/colorization_train_val.prototxt", base_lr=3e-5, lr_policy="multistep",
        gamma=1 / 3, stepvalue=[200000, 375000], max_iter=450000, **_ADAM,
        test_iter=[200], test_interval=25000, test_initialization=False, display=100, average_loss=100,
        snapshot=25000, snapshot_prefix="snapshots/colorization", solver_mode="GPU"),
    # The paper's schedule exactly: three fixed-rate stages, chained by train_paper_schedule.sh.
    ("main", "solver_stage1.prototxt"): dict(
        net="prototxt/colorization_train_val.prototxt", base_lr=3e-5, lr_policy="fixed", max_iter=200000,
        **_ADAM, test_iter=[200], test_interval=25000, test_initialization=False, display=100,
        average_loss=100, snapshot=25000, snapshot_prefix="snapshots/colorization", solver_mode="GPU"),
    ("main", "solver_stage2.prototxt"): dict(
        net="prototxt/colorization_train_val.prototxt", base_lr=1e-5, lr_policy="fixed", max_iter=375000,
        **_ADAM, test_iter=[200], test_interval=25000, test_initialization=False, display=100,
        average_loss=100, snapshot=25000, snapshot_prefix="snapshots/colorization", solver_mode="GPU"),
    ("main", "solver_stage3.prototxt"): dict(
        net="prototxt/colorization_train_val.prototxt", base_lr=3e-6, lr_policy="fixed", max_iter=450000,
        **_ADAM, test_iter=[200], test_interval=25000, test_initialization=False, display=100,
        average_loss=100, snapshot=25000, snapshot_prefix="snapshots/colorization", solver_mode="GPU"),
    # The released solver (train/solver.prototxt of the released code), snapshots every 25k instead of 1k.
    ("release_v2", "solver.prototxt"): dict(
        net="prototxt/release_v2/colorization_train_val_v2.prototxt", test_iter=[1], test_interval=10000000,
        test_initialization=False, base_lr=3e-5, lr_policy="step", gamma=0.1, stepsize=225000, display=1,
        max_iter=500000, **_ADAM, snapshot=25000, snapshot_prefix="snapshots/colorization_release_v2",
        solver_mode="GPU", average_loss=1000),
    # The CPU demo: the same optimizer at a rate a tiny net learns with in minutes, the paper's two drops
    # at the same fractions of the run.
    ("demo", "solver.prototxt"): dict(
        net="prototxt/demo/colorization_train_val.prototxt", base_lr=1e-3, lr_policy="multistep",
        gamma=1 / 3, stepvalue=[667, 1250], max_iter=1500, **_ADAM, test_iter=[4], test_interval=500,
        test_initialization=False, display=50, average_loss=50, snapshot=1500,
        snapshot_prefix="snapshots/demo/colorization_demo", solver_mode="CPU", random_seed=1701),
}

#: The exact paper schedule: (stage solver, the solverstate it resumes from).
STAGES = (
    ("prototxt/solver_stage1.prototxt", None),
    ("prototxt/solver_stage2.prototxt", "snapshots/colorization_iter_200000.solverstate"),
    ("prototxt/solver_stage3.prototxt", "snapshots/colorization_iter_375000.solverstate"),
)

TRAIN_WEIGHT_FILLER = dict(type="msra")   # He et al.; the released files name no filler (Caffe: zeros)

# ---------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------


def _block(top: str) -> str:
    """'conv5_3' -> 'conv5'."""
    return top.split("_")[0]


def _python(*bottoms, layer: str, params: dict | None = None, **kwargs):
    """A ``Python`` layer of ``colorization_layers`` (``params`` as its JSON ``param_str``)."""
    python_param = dict(module=PY_MODULE, layer=layer)
    if params:
        python_param["param_str"] = json.dumps(params)
    return L.Python(*bottoms, python_param=python_param, **kwargs)


def _width(c: int, div: int) -> int:
    return max(1, c // div)


def trunk(n, bottom, table, width_div: int = 1, train: bool = False):
    """conv1_1 .. conv8_3 of ``table`` on ``bottom``; returns {top name: blob fed to the next layer/head}."""
    feeds = {}
    x = bottom
    for top, c, s, d, bn, _ in table:
        c = _width(c, width_div)
        extra = dict(weight_filler=TRAIN_WEIGHT_FILLER) if train else {}
        name = dict(name=LAYER_NAMES[top]) if top in LAYER_NAMES else {}
        if s < 1:
            up = int(round(1 / s))
            n[top] = L.Deconvolution(x, convolution_param=dict(num_output=c, kernel_size=2 * up, stride=up,
                                                               pad=up // 2, **extra), **name)
        else:
            n[top] = L.Convolution(x, num_output=c, kernel_size=3, pad=d, stride=s, dilation=d, **extra, **name)
        n["relu" + top[len("conv"):]] = L.ReLU(n[top], in_place=True)
        x = n[top]
        if bn:
            n[top + "norm"] = L.BatchNorm(x, param=[FIXED] * 3)
            x = n[top + "norm"]
        feeds[top] = x
    return feeds


def accumulated_strides(table) -> dict:
    """{top: stride of its output relative to the input} (Fractions)."""
    out, acc = {}, Fraction(1)
    for top, _, s, _, _, _ in table:
        acc *= Fraction(s).limit_denominator(16)
        out[top] = acc
    return out


def _subsample(n, top: str, bottom, stride: int, channels: int, released: bool = False):
    """Point-sample every ``stride``-th pixel (from the first): a fixed 1x1 convolution of weight 1, as the
    released train_val subsamples ab (Pooling would round its output size up and average colours).
    ``released``: with the released layer's (zero, fixed) bias, so that released weights load."""
    bias = dict(param=[FIXED, FIXED]) if released else dict(bias_term=False, param=[FIXED])
    n[top] = L.Convolution(bottom, num_output=channels, kernel_size=1, stride=stride, group=channels,
                           weight_filler=dict(type="constant", value=1), **bias)


def _data_layer(spec: dict, phase: int) -> "caffe_pb2.LayerParameter":
    n = caffe.NetSpec()
    transform = dict(crop_size=spec["crop"])
    if spec["mirror"]:
        transform["mirror"] = True
    n.data = L.Data(source=spec["source"], batch_size=spec["batch"], backend=P.Data.LMDB,
                    transform_param=transform, include=dict(phase=phase))
    return n.to_proto().layer[0]


def train_val(key: str) -> "caffe_pb2.NetParameter":
    cfg = NETS[key]
    table = cfg["trunk"]
    strides = accumulated_strides(table)
    heads = [row[0] for row in table if row[5]]
    main_head = heads[-1]
    head_strides = sorted({int(strides[h]) for h in heads})
    finest = head_strides[0]

    n = caffe.NetSpec()
    n.data = L.Data(source=cfg["train"]["source"], batch_size=cfg["train"]["batch"], backend=P.Data.LMDB,
                    transform_param=dict(crop_size=cfg["train"]["crop"], mirror=cfg["train"]["mirror"]),
                    include=dict(phase=caffe_pb2.TRAIN))
    # Colour conversion; L - 50 for the trunk.
    n.img_lab = _python(n.data, layer="BGR2LabLayer")
    n.img_l, n.data_ab = L.Slice(n.img_lab, ntop=2, axis=1, slice_point=1, name="img_slice")
    released = cfg.get("released_pipeline", False)
    if released:   # the released layer (a Scale with fixed blobs), so that released caffemodels load by name
        n.data_l = L.Scale(n.img_l, bias_term=True, filler=dict(type="constant", value=1),
                           bias_filler=dict(type="constant", value=-50), param=[FIXED, FIXED], name="data_l_meansub")
    else:
        n.data_l = L.Power(n.img_l, shift=-50.0, name="data_l_meansub")

    # Targets at each loss resolution: subsampled ab -> soft-encoding, rebalancing weight x non-gray mask.
    # The non-gray mask (one value per image) is computed once, at the finest loss resolution, and
    # subsampled from there, so that all losses agree on which images are gray.
    targets = {}
    for s in head_strides:
        sfx = "" if s == finest else f"_ss{s}"   # the finest keeps the released names
        ab = "data_ab_ss" + ("" if s == finest else str(s))
        _subsample(n, ab, n.data_ab, s, 2, released)
        n["gt_ab_313" + sfx] = _python(n[ab], layer="NNEncLayer", params=dict(cfg["nnenc"]),
                                       name="ab_enc" + sfx)
        if s == finest:
            n.nongray_mask = _python(n[ab], layer="NonGrayMaskLayer", params=dict(threshold=5))
        else:
            _subsample(n, "nongray_mask" + sfx, n.nongray_mask, s // finest, 1)
        n["prior_boost" + sfx] = _python(n["gt_ab_313" + sfx], layer="PriorBoostLayer",
                                         params={"prior": cfg["prior"], "lambda": 0.5})
        n["prior_boost_nongray" + sfx] = L.Eltwise(n["prior_boost" + sfx], n["nongray_mask" + sfx],
                                                   operation=P.Eltwise.PROD)
        targets[s] = sfx

    feeds = trunk(n, n.data_l, table, cfg["width_div"], train=True)

    for h in heads:
        b = _block(h)[len("conv"):]
        sfx = targets[int(strides[h])]
        scores = f"conv{b}_{Q}"
        n[scores] = L.Convolution(feeds[h], num_output=Q, kernel_size=1, weight_filler=TRAIN_WEIGHT_FILLER)
        n[scores + "_boost"] = _python(n[scores], n["prior_boost_nongray" + sfx],
                                       layer="ClassRebalanceMultLayer")
        weight = cfg["loss_weight_main"] if h == main_head else cfg["loss_weight_aux"]
        if cfg["loss_type"] == "python":
            n[f"loss{b}_{Q}"] = _python(n[scores + "_boost"], n["gt_ab_313" + sfx],
                                        layer="SoftmaxCrossEntropyLossLayer", loss_weight=weight)
        else:
            n[f"loss{b}_{Q}"] = getattr(L, cfg["loss_type"])(n[scores + "_boost"], n["gt_ab_313" + sfx],
                                                              loss_weight=weight)

    net = n.to_proto()
    net.name = cfg["name"]
    # The TEST data layer reuses the name and top "data": insert it after the TRAIN one.
    layers = list(net.layer)
    del net.layer[:]
    net.layer.extend([layers[0], _data_layer(cfg["test"], caffe_pb2.TEST)] + layers[1:])
    return net


def deploy(key: str, portable: bool = False, size: int | None = None,
           width_div: int | None = None) -> "caffe_pb2.NetParameter":
    """The deploy net of ``NETS[key]``: Input ``data_l`` (L - 50), trunk, conv8_313, then

    * ``release_v2``: the released head (Scale 2.606, Softmax, 1x1 ``class8_ab`` with bias, Silence);
    * ``portable``: built-in layers only: Scale 1/T, Softmax, 1x1 ``class8_ab`` holding the bin centres, and a
      bilinear Deconvolution divided by the same deconvolution of ones (clamped edges);
    * otherwise: the Python layers ``AnnealedMeanLayer`` (T = 0.38) and ``BilinearUpsampleLayer``.
    """
    cfg = NETS[key]
    table = cfg["trunk"]
    size = size or cfg["deploy_size"]
    width_div = width_div or cfg["width_div"]
    strides = accumulated_strides(table)
    main_head = [row[0] for row in table if row[5]][-1]
    up = int(strides[main_head])

    n = caffe.NetSpec()
    n.data_l = L.Input(shape=dict(dim=[1, 1, size, size]))
    feeds = trunk(n, n.data_l, table, width_div)
    n.conv8_313 = L.Convolution(feeds[main_head], num_output=Q, kernel_size=1)
    if key == "release_v2":
        n.conv8_313_rh = L.Scale(n.conv8_313, bias_term=False, filler=dict(type="constant", value=RELEASED_SCALE))
        n.class8_313_rh = L.Softmax(n.conv8_313_rh)
        n.class8_ab = L.Convolution(n.class8_313_rh, num_output=2, kernel_size=1)
        n.Silence = L.Silence(n.class8_ab, ntop=0)
    elif portable:
        n.conv8_313_rh = L.Scale(n.conv8_313, bias_term=False, filler=dict(type="constant", value=1 / T),
                                 param=[FIXED])
        n.class8_313_rh = L.Softmax(n.conv8_313_rh)
        n.class8_ab = L.Convolution(n.class8_313_rh, num_output=2, kernel_size=1, bias_term=False,
                                    param=[FIXED])
        bilinear = dict(num_output=2, group=2, kernel_size=2 * up - up % 2, stride=up,
                        pad=int(math.ceil((up - 1) / 2)), bias_term=False, weight_filler=dict(type="bilinear"))
        n.class8_ab_us = L.Deconvolution(n.class8_ab, convolution_param=bilinear, param=[FIXED])
        n.class8_ab_ones = L.Power(n.class8_ab, power=0.0)
        n.class8_ab_ones_us = L.Deconvolution(n.class8_ab_ones, convolution_param=bilinear, param=[FIXED])
        n.class8_ab_us_norm = L.Power(n.class8_ab_ones_us, power=-1.0)
        n.class8_ab_up = L.Eltwise(n.class8_ab_us, n.class8_ab_us_norm, operation=P.Eltwise.PROD)
    else:
        n.class8_ab = _python(n.conv8_313, layer="AnnealedMeanLayer", params=dict(T=T))
        n.class8_ab_up = _python(n.class8_ab, n.data_l, layer="BilinearUpsampleLayer")
    net = n.to_proto()
    net.name = cfg["name"]
    return net


def fixed_layers(key: str) -> "caffe_pb2.NetParameter":
    """Weights of the deploy nets' fixed layers, as a caffemodel: ``class8_ab`` (the 313 bin centres of
    ``data/pts_in_hull.npy``, released order), ``conv8_313_rh`` (the temperature scale) and, for the portable
    net, the bilinear kernels.  Trained weights lack these layers; Caffe loads both files
    (``-weights trained.caffemodel,<this file>``), and since a caffemodel is one NetParameter message,
    ``cat trained.caffemodel <this file> > deploy.caffemodel`` merges them for OpenCV."""
    pts = cic.load_bins().astype(np.float32)   # 313 x 2 (a, b): data/pts_in_hull.npy
    net = caffe_pb2.NetParameter()
    net.name = NETS[key]["name"] + "_fixed_layers"

    def add(name, type_, arrays):
        layer = net.layer.add(name=name, type=type_)
        for a in arrays:
            blob = layer.blobs.add()
            blob.shape.dim.extend(a.shape)
            blob.data.extend(a.astype(np.float32).ravel().tolist())

    release = key == "release_v2"
    scale = RELEASED_SCALE if release else 1 / T
    add("conv8_313_rh", "Scale", [np.full((Q,), scale, np.float32)])
    centres = pts.T.reshape(2, Q, 1, 1)
    add("class8_ab", "Convolution", [centres, np.zeros(2, np.float32)] if release else [centres])
    if not release:
        up = int(accumulated_strides(NETS[key]["trunk"])[[r[0] for r in NETS[key]["trunk"] if r[5]][-1]])
        k = bilinear_kernel(up)
        for name in ("class8_ab_us", "class8_ab_ones_us"):
            add(name, "Deconvolution", [np.broadcast_to(k, (2, 1) + k.shape).copy()])
    return net


def bilinear_kernel(factor: int) -> np.ndarray:
    """Caffe's ``bilinear`` filler for upsampling by ``factor`` (kernel 2f - f % 2)."""
    k = 2 * factor - factor % 2
    c = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    x = np.arange(k)
    w = 1 - np.abs(x / factor - c)
    return np.outer(w, w).astype(np.float32)


def solver(fields: dict) -> "caffe_pb2.SolverParameter":
    s = caffe_pb2.SolverParameter()
    for k, v in fields.items():
        if k == "solver_mode":
            v = getattr(caffe_pb2.SolverParameter, v)
        caffe.net_spec.assign_proto(s, k, v)
    return s


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------

HEADER = "# Generated by tools/make_prototxt.py -- do not edit; edit the tables there and rerun it.\n"


def _text(msg) -> str:
    return HEADER + text_format.MessageToString(msg)


def _schedule_script() -> str:
    lines = [
        "#!/bin/sh",
        HEADER.rstrip(),
        "# The paper's optimization exactly: Adam (0.9, 0.99), weight decay 1e-3, learning rate 3e-5 to",
        "# iteration 200k, 1e-5 to 375k, 3e-6 to 450k -- three fixed-rate stages, each resuming the previous",
        "# one's solverstate (iteration count and Adam moments).  Run from the repository root:",
        "#     sh prototxt/train_paper_schedule.sh -gpu 0",
        "# Extra arguments go to every `caffe train`; CAFFE=/path/to/caffe picks the binary.  A stage whose final",
        "# solverstate exists is skipped, so the script also resumes an interrupted run at a stage boundary.",
        "set -e",
        'CAFFE="${CAFFE:-caffe}"',
        "mkdir -p snapshots",
    ]
    ends = ["snapshots/colorization_iter_200000.solverstate", "snapshots/colorization_iter_375000.solverstate",
            "snapshots/colorization_iter_450000.solverstate"]
    for (solver_path, resume), end in zip(STAGES, ends):
        resume_arg = f" -snapshot {resume}" if resume else ""
        lines.append(f'[ -f {end} ] || "$CAFFE" train -solver {solver_path}{resume_arg} "$@"')
    return "\n".join(lines) + "\n"


def outputs() -> dict:
    """{relative path: bytes} of everything in prototxt/."""
    files = {}
    for key, cfg in NETS.items():
        d = cfg["dir"]
        files[f"{d}/{cfg['train_val']}"] = _text(train_val(key))
        files[f"{d}/{cfg['deploy']}"] = _text(deploy(key))
        if cfg["portable"]:
            files[f"{d}/{cfg['portable']}"] = _text(deploy(key, portable=True))
        files[f"{d}/{cfg['fixed']}"] = fixed_layers(key).SerializeToString(deterministic=True)
    for (key, name), fields in SOLVERS.items():
        files[f"{NETS[key]['dir']}/{name}"] = _text(solver(fields))
    files["prototxt/train_paper_schedule.sh"] = _schedule_script()
    files["prototxt/README.md"] = README
    return {k: (v.encode() if isinstance(v, str) else v) for k, v in sorted(files.items())}


def write(root: Path) -> list:
    written = []
    for rel, data in outputs().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(rel)
    return written


def check(root: Path = REPO) -> list:
    """Relative paths under ``root/prototxt`` that differ from a fresh generation (missing or extra too)."""
    expected = outputs()
    bad = [rel for rel, data in expected.items()
           if not (root / rel).is_file() or (root / rel).read_bytes() != data]
    present = {p.relative_to(root).as_posix() for p in (root / "prototxt").rglob("*") if p.is_file()}
    bad += sorted(present - set(expected))
    return bad


README = """\
# prototxt/

Generated by `tools/make_prototxt.py` (do not edit; `make prototxt` rewrites everything here, and
`tests/test_prototxt.py` fails if the committed files differ from a fresh generation).

| file | what |
| --- | --- |
| `colorization_train_val.prototxt` | the seed's Table 1 with its four losses (conv5_3, conv6_3, conv7_3 at 1/8, conv8_3 at 1/4) |
| `colorization_deploy.prototxt` | Input `data_l` 1x1x224x224 (L - 50) -> trunk -> `conv8_313` -> `class8_ab` (annealed mean, T = 0.38, 1/4 resolution) -> `class8_ab_up` (bilinear, input size), through the Python layers |
| `colorization_deploy_portable.prototxt` | the same with built-in layers only (OpenCV DNN, a Caffe without Python layers) |
| `colorization_fixed_layers.caffemodel` | weights of the portable net's fixed layers (bin centres, 1/T scale, bilinear kernels) |
| `solver.prototxt` | the paper's optimization in one solver file (see *Schedule*) |
| `solver_stage{1,2,3}.prototxt`, `train_paper_schedule.sh` | the paper's schedule exactly, as three chained stages |
| `release_v2/` | the released model: `colorization_deploy_v2.prototxt`, `colorization_train_val_v2.prototxt`, `solver.prototxt`, `colorization_release_v2_fixed_layers.caffemodel` |
| `demo/` | the same generator at 1/8 width and 56/64-pixel crops, for the CPU demo and the tests |

## Running them
* torchcaffe: `caffe train -solver prototxt/solver.prototxt -gpu 0` from the repository root.
* BVLC Caffe 1.0 built with `WITH_PYTHON_LAYER := 1`: the same command, with `layers/` on the Python path
  (`export PYTHONPATH=$PWD/layers:$PYTHONPATH`).  Only BVLC built-in layer types and the Python layers of
  `layers/colorization_layers.py` are used, except `release_v2/colorization_train_val_v2.prototxt`, which
  keeps the released loss type `SoftmaxCrossEntropyLoss` (torchcaffe has it; BVLC Caffe does not).
* Data: the Data layers read `data/lmdb/train` (TRAIN: random 176x176 crop, mirror, batch 40) and
  `data/lmdb/val` (TEST: the 2000-image validation split at 256x256, batch 10, `test_iter` 200), BGR
  0..255 without mean subtraction, as `tools/build_lmdb.py --root ILSVRC2012 --out data/lmdb` writes them;
  paths are relative to the working directory, as Caffe resolves them.  The demo reads
  `data/lmdb/demo/train` (random 56x56 crop, mirror, batch 8) and `data/lmdb/demo/val` (64x64, batch 4):
  64x64 images (`--resize 64`).
* The prior: `PriorBoostLayer` reads `data/prior_probs.npy` (demo: `data/prior_probs_demo.npy`), relative to
  the working directory like every other path here (a relative path not found there is looked up in the
  toolkit's own `data/`); write it with `tools/compute_prior.py` before training.
* Snapshots go to `snapshots/` (create it first) every 25k iterations: about 100 MB of weights (Table 1
  net; 129 MB for release_v2) plus a solverstate twice that size (Adam's two moments).

## Decisions
* **Auxiliary losses.**  The seed puts a 1x1 convolution to 313 classes and a cross-entropy loss after
  conv5_3, conv6_3, conv7_3 (at 1/8 of the input) and conv8_3 (1/4) and gives no weights; all four losses
  have `loss_weight` 1.  The loss sums over pixels and divides by the batch size only, so each pixel of each
  head counts alike and the 1/4-resolution head, with four times the pixels, still carries the largest share.
  The heads at conv5..7 read the BatchNorm outputs (`conv5_3norm`, ...), i.e. what the next block reads.
* **Targets at each resolution.**  ab is point-sampled (every 4th / 8th pixel, starting at the first) by a
  fixed 1x1 convolution of weight 1, as the released train_val does (`data_ab_ss`; `data_ab_ss8` for 1/8);
  average pooling would blend colours before encoding, and Caffe's pooling rounds its output size up.  Each
  resolution is soft-encoded on its own (`NNEncLayer`, k = 5, sigma = 5), weighted by its own prior boost
  (`PriorBoostLayer`, lambda = 1/2).  The non-gray mask is one value per image; it is computed once at 1/4
  and subsampled to 1/8, so all heads agree on which images are gray.
* **Class rebalancing** multiplies the gradient of the scores (`ClassRebalanceMultLayer`) by
  prior boost x non-gray mask (`Eltwise PROD`), as released.
* **Initialization.**  The released files name no weight filler (Caffe would start from zeros); the learned
  convolutions here use `msra`.  BatchNorm has no Scale after it (as released) and its statistics have
  `lr_mult: 0`.
* **Temperature.**  The paper's T = 0.38 is a scale of 1/0.38 = 2.6316 before the softmax; the released deploy
  file uses 2.606 (T = 0.3837).  Both of our deploy nets use T = 0.38 (so they agree); `release_v2` keeps 2.606.
* **Portable upsampling.**  A bilinear Deconvolution (kernel 8, stride 4, pad 2: Caffe's `bilinear` filler)
  computes the half-pixel interpolation inside the image but zero-pads at the borders; dividing it by the
  same deconvolution of ones (`Power` 0, Deconvolution, `Power` -1, `Eltwise PROD`) gives exactly the
  clamped-edge bilinear resize of `BilinearUpsampleLayer` (torch `interpolate`, `align_corners=False`).  It
  upsamples by 4, so the input size must be a multiple of 8 (224 is).
* **release_v2** has the released deploy file's layer and blob names (`bw_conv1_1` included, and its final
  `Silence`), so `colorization_release_v2.caffemodel` loads by name; `NNEncLayer` uses the released 10
  neighbours; its train_val keeps the released parameter layers of the label pipeline (`data_l_meansub` as a
  Scale, `data_ab_ss` with its zero bias, both fixed) so that the released weights load into it too.  Its
  `class8_ab` (bin centres, zero bias) and `conv8_313_rh` (2.606) are in
  `release_v2/colorization_release_v2_fixed_layers.caffemodel` for weights that lack them, as OpenCV's
  sample fills them in.

## Schedule
The paper: Adam (beta1 0.9, beta2 0.99), weight decay 1e-3, learning rate 3e-5, 1e-5 from 200k, 3e-6 from
375k, about 450k iterations, batch 40.  Caffe's `multistep` policy has one gamma, and 1e-5 / 3e-5 = 1/3 but
3e-6 / 1e-5 = 0.3, so `solver.prototxt` (`gamma` 1/3, `stepvalue` 200000 and 375000, `max_iter` 450000) is
exact up to 375k and then trains at 3.33e-6 instead of 3e-6 for the last 75k iterations (11 % higher).
For the exact schedule run `sh prototxt/train_paper_schedule.sh -gpu 0`: three fixed-rate stage solvers,
each resuming the previous stage's solverstate (iteration count and Adam's moments), so the optimization is
the same as one run with the paper's three rates.

`release_v2/solver.prototxt` is the released solver (step policy, gamma 0.1 every 225000, `max_iter` 500000)
with snapshots every 25k iterations instead of every 1k.

`demo/solver.prototxt` keeps the optimizer and the two drops at the same fractions of a 1500-iteration CPU
run (about 90 s on two cores), at a learning rate of 1e-3.
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO, help="root to write prototxt/ under (default: the repo)")
    ap.add_argument("--check", action="store_true", help="compare with a fresh generation, write nothing")
    args = ap.parse_args(argv)
    if args.check:
        bad = check(args.out)
        for rel in bad:
            print(f"differs: {rel}")
        return 1 if bad else 0
    for rel in write(args.out):
        print(rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
