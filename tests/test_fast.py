"""torchcaffe.fast: the plain torch.nn graph and the fast inference path against caffe.Net's exact forward;
mixed-precision training as an opt-in; the benchmark's JSON."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import torchcaffe as caffe
from conftest import REPO
from torchcaffe.fast import mixed_precision, native_bf16, to_module, training_precision
from torchcaffe.proto import caffe_pb2

from colorization.colorizer import Colorizer, random_colorization_weights, randomize_weights

DEMO = REPO / "prototxt" / "demo"
#: the demo net trained 212 iterations (see tests/data/README.md for the command)
TRAINED = REPO / "tests" / "data" / "demo_trained_iter_212.caffemodel"

# BatchNorm (+ Scale) feeding padded, strided, dilated, grouped convolutions and a deconvolution; layers
# without a torch.nn counterpart (Pooling with Caffe's rounding, Concat, Softmax, Eltwise); a BatchNorm
# whose output is also a net output (cannot be folded); in-place ReLUs; a Split (data used twice)
MIXED = """
name: "mixed"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 13 dim: 11 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "bn1" type: "BatchNorm" bottom: "c1" top: "bn1" }
layer { name: "sc1" type: "Scale" bottom: "bn1" top: "sc1" scale_param { bias_term: true } }
layer { name: "c2" type: "Convolution" bottom: "sc1" top: "c2" convolution_param { num_output: 8 kernel_size: 3 pad: 2 dilation: 2 group: 2 } }
layer { name: "c2b" type: "Convolution" bottom: "sc1" top: "c2b" convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "r2" type: "ReLU" bottom: "c2" top: "c2" relu_param { negative_slope: 0.1 } }
layer { name: "bn2" type: "BatchNorm" bottom: "c2" top: "bn2" }
layer { name: "d3" type: "Deconvolution" bottom: "bn2" top: "d3" convolution_param { num_output: 5 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "d3" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "bn3" type: "BatchNorm" bottom: "c2b" top: "bn3" }
layer { name: "c3" type: "Deconvolution" bottom: "bn3" top: "c3" convolution_param { num_output: 5 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "cat" type: "Concat" bottom: "pool" bottom: "c3" top: "cat" }
layer { name: "prob" type: "Softmax" bottom: "cat" top: "prob" }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "data" top: "sum" }
"""


def _mixed_net():
    p = caffe_pb2.NetParameter()
    text_format.Merge(MIXED, p)
    net = caffe.Net(p, caffe.TEST)
    randomize_weights(net, seed=3)
    for name in ("bn1", "bn2", "bn3"):  # means far from 0: a fold that ignored the borders would show
        net.params[name][0].data[...] += 2.0
        net.params[name][2].data[...] = 0.5  # Caffe's scale factor: mean = b0 / b2
    x = np.random.default_rng(1).normal(size=net.blobs["data"].shape).astype(np.float32)
    return net, x


def _exact(net, x, names):
    net.forward(**{net.inputs[0]: x})
    return {n: net.blobs[n].data.copy() for n in names}


def test_plain_module_and_fp32_fold_match_the_exact_net():
    net, x = _mixed_net()
    names = ["prob", "bn3", "sum"]
    want = _exact(net, x, names)
    ref = to_module(net, outputs=names)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.mods)  # the plain graph keeps BatchNorm
    folded = to_module(net, outputs=names, fold_batchnorm=True, channels_last=True, dtype="fp32")
    # bn1 + sc1 and bn2 folded; bn3 feeds c3 but is also an output: kept
    assert "bn1" not in folded.layer_names and "sc1" not in folded.layer_names and "bn2" not in folded.layer_names
    assert "bn3" in folded.layer_names
    with torch.no_grad():
        for mod in (ref, folded):
            got = mod(torch.from_numpy(x))
            assert sorted(got) == sorted(names)
            for n in names:
                assert got[n].dtype == torch.float32
                np.testing.assert_allclose(got[n].numpy(), want[n], rtol=1e-4, atol=1e-5, err_msg=n)
    # the bias map of a padded convolution after a folded BatchNorm differs at the borders
    with torch.no_grad():
        folded(torch.from_numpy(x))
    maps = [m for mod in folded.mods for m in getattr(mod, "_maps", {}).values()]
    assert any(m.shape[-1] > 1 and float((m - m[..., 5:6, 5:6]).abs().max()) > 1e-3 for m in maps)


def test_batch_size_and_size_follow_the_input():
    net, x = _mixed_net()
    fast = to_module(net, outputs=["prob"], fold_batchnorm=True, dtype="fp32")
    x3 = np.random.default_rng(2).normal(size=(3, 4, 17, 9)).astype(np.float32)
    net.blobs["data"].reshape(*x3.shape)
    net.reshape()
    want = _exact(net, x3, ["prob"])["prob"]
    with torch.no_grad():
        got = fast(data=torch.from_numpy(x3))["prob"]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)


def test_per_image_stem_of_a_batch():
    """On the CPU the fast path runs the full-resolution leading layers one image at a time: the stem is the
    leading per-image layers with outputs over STEM_BYTES per image, and a batch gives what each image gives
    alone (the same arithmetic, per image) and what the unsplit batch gives."""
    from torchcaffe.fast import STEM_BYTES

    net = caffe.Net(str(DEMO / "colorization_deploy.prototxt"), caffe.TEST)
    net.blobs["data_l"].reshape(1, 1, 256, 256)
    net.reshape()
    random_colorization_weights(net, seed=0)
    out = net.outputs[0]
    fast = to_module(net, outputs=[out], optimize=True, dtype="fp32")
    assert to_module(net, outputs=[out]).stem == 0                              # only with optimize
    expect = 0
    for name in fast.layer_names:
        layer = net.layers[list(net._layer_names).index(name)]
        if layer.type not in ("Convolution", "ReLU") or any(
                net.blobs[t].count // net.blobs[t].num * 4 < STEM_BYTES for t in layer.layer_param.top):
            break
        expect += 1
    assert fast.stem == expect > 0
    x = torch.from_numpy(np.random.default_rng(5).uniform(-50, 50, (3, 1, 256, 256)).astype(np.float32))
    with torch.no_grad():
        batched = fast(x)[out]
        alone = torch.cat([fast(x[i:i + 1])[out] for i in range(3)])
        fast.set_stem(0)
        unsplit = fast(x)[out]
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)     # ab units: oneDNN may block a batch otherwise
    torch.testing.assert_close(batched, unsplit, rtol=1e-4, atol=1e-4)


def test_fast_path_is_faithful_on_photos_with_trained_weights():
    """mean |delta ab| <= 1 against the exact float32 net, bf16 forced (so that it is checked on any CPU)."""
    from skimage import data

    exact = Colorizer(DEMO / "colorization_deploy.prototxt", TRAINED, fast=False)
    fast = Colorizer(DEMO / "colorization_deploy.prototxt", TRAINED)
    fast._module = to_module(fast.net, outputs=[fast.output], optimize=True, dtype="bf16")
    assert fast._module.dtype == torch.bfloat16
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        img = getattr(data, name)()
        a, b = exact.predict_ab(img), fast.predict_ab(img)
        assert np.abs(a).mean() > 3, name  # the trained net predicts colour, not gray
        d = np.abs(a - b).mean()
        assert 0 < d <= 1.0, (name, d)


def test_colorizer_default_is_the_fast_path():
    c = Colorizer(DEMO / "colorization_deploy.prototxt", TRAINED)
    assert c.fast
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[:, 15:] = 200
    c.colorize(rgb)
    assert c._module is not None
    assert c._module.dtype == (torch.bfloat16 if native_bf16("cpu") else torch.float32)


def test_released_topology_converts():
    """The released deploy net (Scale, Softmax, the bin-centre convolution, Silence) in fp32: as exact."""
    net = caffe.Net(str(REPO / "prototxt" / "release_v2" / "colorization_deploy_v2.prototxt"), caffe.TEST)
    net.blobs["data_l"].reshape(1, 1, 64, 64)
    net.reshape()
    random_colorization_weights(net, seed=0)
    x = np.random.default_rng(0).uniform(-50, 50, (1, 1, 64, 64)).astype(np.float32)
    want = _exact(net, x, ["class8_ab"])["class8_ab"]
    with torch.no_grad():
        got = to_module(net, outputs=["class8_ab"], fold_batchnorm=True, channels_last=True, dtype="fp32")(
            torch.from_numpy(x))["class8_ab"]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-3, atol=2e-3)


def test_bad_use_is_reported():
    net, _ = _mixed_net()
    with pytest.raises(ValueError, match="no blob 'nope'"):
        to_module(net, outputs=["nope"])
    with pytest.raises(ValueError, match="dtype must be"):
        to_module(net, dtype="int3")
    train = caffe.Net(str(DEMO / "colorization_deploy.prototxt"), caffe.TRAIN)
    with pytest.raises(ValueError, match="TRAIN-phase"):
        to_module(train)
    mod = to_module(net)
    with pytest.raises(TypeError, match="inputs are data"):
        mod(image=torch.zeros(1))


# ---------------------------------------------------------------------------------------------------------
# mixed-precision training
# ---------------------------------------------------------------------------------------------------------

SMALL_TRAIN = """
name: "small"
layer { name: "x" type: "DummyData" top: "x" top: "y" dummy_data_param {
  shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 dim: 6 dim: 8 dim: 8 }
  data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv" convolution_param { num_output: 6 kernel_size: 3 pad: 1
  weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "y" top: "loss" }
"""


def _small_solver():
    sp = caffe_pb2.SolverParameter()
    text_format.Merge(SMALL_TRAIN, sp.net_param)
    sp.base_lr, sp.lr_policy, sp.max_iter, sp.random_seed, sp.display = 0.01, "fixed", 10, 7, 0
    return caffe.get_solver(sp) if hasattr(caffe, "get_solver") else caffe.SGDSolver(sp)


def test_mixed_precision_is_opt_in(monkeypatch):
    monkeypatch.delenv("TORCHCAFFE_PRECISION", raising=False)
    assert training_precision() == "fp32"
    with mixed_precision("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("TORCHCAFFE_PRECISION", "bf16")
    assert training_precision() == "bf16"
    with mixed_precision("cpu"):
        assert torch.is_autocast_enabled("cpu")
    monkeypatch.setenv("TORCHCAFFE_PRECISION", "fp8")
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        training_precision()


def test_bf16_training_step_keeps_float32_weights_and_tracks_fp32(monkeypatch):
    monkeypatch.delenv("TORCHCAFFE_PRECISION", raising=False)
    a = _small_solver()
    a.step(3)
    monkeypatch.setenv("TORCHCAFFE_PRECISION", "bf16")
    b = _small_solver()
    b.step(3)
    wa, wb = a.net.params["conv"][0].data, b.net.params["conv"][0].data
    assert wb.dtype == np.float32
    assert not np.array_equal(wa, wb)  # bf16 arithmetic did run
    np.testing.assert_allclose(wb, wa, atol=0.02)
    assert abs(a.loss - b.loss) <= 0.05 * abs(a.loss)


def test_caffe_train_precision_flag_rejects_bad_values(tmp_path):
    r = subprocess.run([sys.executable, "-m", "torchcaffe.cli", "train", "-solver",
                        str(DEMO / "solver.prototxt"), "-precision", "int4"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 1
    assert "must be fp32, bf16 or fp16, got 'int4'" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------------------
# the benchmark (tiny: proves the script runs and writes what the README table needs; times nothing)
# ---------------------------------------------------------------------------------------------------------

def test_benchmark_deploy_section_and_json(tmp_path):
    from colorization import benchmark

    d = benchmark.deploy_forward(DEMO / "colorization_deploy_portable.prototxt", batches=(1, 2), repeats=1,
                                 size=64, log=lambda *a: None)
    for b in (1, 2):
        per = d["per_image_ms"][b]
        assert sorted(per) == ["opencv_dnn", "pytorch_reference", "torchcaffe", "torchcaffe_optimized"]
        assert all(v > 0 for v in per.values())
        diff = d["max_abs_diff_vs_exact"][b]
        assert diff["pytorch_reference"] < 0.02 and diff["opencv_dnn"] < 0.05  # ab units (outputs reach +-100)
    result = {"machine": benchmark.machine(), "deploy": d, "deploy_forward_ms": d["per_image_ms"][1]}
    table = benchmark.markdown(result)
    assert "OpenCV DNN" in table and "K40" in table and result["machine"]["cpu"] in table
    json.dumps(result)


def test_benchmark_command_help():
    r = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "--only", "nothing"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2 and "unknown section" in r.stderr
