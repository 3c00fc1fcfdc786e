"""Whole nets on a CUDA device, against BVLC Caffe's golden data and against the CPU, with seeded non-zero
weights (so that a wrong device path shows): the golden layer net; float32 convolutions and products
(Caffe-exact: TF32 would be ~1e-3 off); the demo deploy net with its Python layers; a short training run
of the demo train net, CPU vs CUDA.  Skipped without CUDA, except under tools/device_check.sh
(TORCHCAFFE_REQUIRE_CUDA=1), where a missing device or golden data is a failure."""
import os

import numpy as np
import pytest
import torch

import torchcaffe as caffe
from conftest import REPO, assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and not os.environ.get("TORCHCAFFE_REQUIRE_CUDA"),
                                reason="no CUDA device")


def _seed_weights(net, seed=0):
    """Non-zero, seeded weights of a sensible scale (fan-in) in every parameter blob; BatchNorm gets a valid
    state (any mean, positive variance, scale factor 1)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for i, b in enumerate(layer.blobs):
            if layer.type == "BatchNorm":
                b.data[...] = (rng.normal(0, 0.5, b.shape), rng.uniform(0.5, 1.5, b.shape), np.ones(b.shape))[i]
                continue
            fan_in = max(1, int(np.prod(b.shape[1:]))) if len(b.shape) > 1 else 1
            b.data[...] = rng.normal(0, 1.0 / np.sqrt(fan_in), b.shape).astype(np.float32)


def _copy_weights(src, dst):
    for name, blobs in src.params.items():
        for a, b in zip(blobs, dst.params[name]):
            b.data[...] = a.data


@pytest.mark.parametrize("phase", ["train", "test"])
def test_golden_layer_net_through_net_on_cuda(phase, golden):
    d = golden / "layers"
    z = np.load(d / "layers_golden.npz")
    weights = d / ("init.caffemodel" if phase == "train" else "after_train_forward.caffemodel")
    net = caffe.Net(str(d / "layers.prototxt"), caffe.TRAIN if phase == "train" else caffe.TEST,
                    weights=str(weights), device="cuda")
    net.blobs["data"].data[...] = z["input_data"]
    net.blobs["label"].data[...] = z["input_label"]
    net.forward()
    if phase == "train":
        net.backward()
    for name, blob in net.blobs.items():
        assert blob.data_t.device.type == "cuda"
        assert_close(blob.data, z[f"{phase}_data__{name}"], name=name)
        if phase == "train":
            assert_close(blob.diff, z[f"train_diff__{name}"], name=f"diff {name}")


def test_float32_convolution_and_products_are_caffe_exact_on_cuda():
    """Convolutions and inner products in float32 agree with the CPU to 1e-5: TF32 (PyTorch's default for cuDNN
    convolutions on Ampere and newer) would be off by ~1e-3."""
    from google.protobuf import text_format

    from torchcaffe.proto import caffe_pb2

    p = caffe_pb2.NetParameter()
    text_format.Merge(
        'input: "x" input_shape { dim: 2 dim: 64 dim: 24 dim: 24 } '
        'layer { name: "c1" type: "Convolution" bottom: "x" top: "c1" convolution_param { num_output: 64 '
        'kernel_size: 3 pad: 1 } } '
        'layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 32 '
        'kernel_size: 3 stride: 2 dilation: 2 pad: 2 } } '
        'layer { name: "d" type: "Deconvolution" bottom: "c2" top: "d" convolution_param { num_output: 16 '
        'kernel_size: 4 stride: 2 pad: 1 } } '
        'layer { name: "ip" type: "InnerProduct" bottom: "d" top: "ip" inner_product_param { num_output: 10 } }', p)
    cpu = caffe.Net(p, caffe.TEST)
    _seed_weights(cpu)
    cuda = caffe.Net(p, caffe.TEST, device="cuda")
    _copy_weights(cpu, cuda)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    x = np.random.default_rng(1).normal(size=cpu.blobs["x"].shape).astype(np.float32)
    a, b = cpu.forward(x=x), cuda.forward(x=x)
    for name in ("c1", "c2", "d"):
        assert np.std(cpu.blobs[name].data) > 0.1
        assert_close(cuda.blobs[name].data, cpu.blobs[name].data, rtol=1e-5, name=name)
    assert_close(b["ip"], a["ip"], rtol=1e-5, name="ip")


def test_demo_deploy_net_with_python_layers_cuda_matches_cpu():
    proto = str(REPO / "prototxt" / "demo" / "colorization_deploy.prototxt")
    cpu = caffe.Net(proto, caffe.TEST)
    _seed_weights(cpu)
    cuda = caffe.Net(proto, caffe.TEST, device="cuda")
    _copy_weights(cpu, cuda)
    x = np.random.default_rng(0).uniform(-50, 50, cpu.blobs["data_l"].shape).astype(np.float32)
    out_cpu = cpu.forward(data_l=x)
    out_cuda = cuda.forward(data_l=x)
    for k in out_cpu:
        assert np.std(out_cpu[k]) > 1e-3, f"{k} is constant: the check could not see a device bug"
        assert_close(out_cuda[k], out_cpu[k], rtol=1e-3, name=k)


def test_demo_train_net_trains_the_same_on_cpu_and_cuda(tmp_path, monkeypatch):
    """Three SGD iterations of the demo train net (BatchNorm, the Python layers, four losses) from the same
    seeded weights and data: the same losses and weights on the CPU and on CUDA.  (SGD, not Adam: Adam turns
    the rounding noise of gradients that are zero in exact arithmetic -- conv biases before BatchNorm -- into
    full-size steps of either sign, on any two devices.)"""
    from test_parallel import colorization_run_dir
    from torchcaffe import glog
    from torchcaffe import solver as S

    d = colorization_run_dir(tmp_path / "demo", "demo", batch=2, crop=32, max_iter=3, snapshot=False,
                             solver_type="SGD")
    monkeypatch.chdir(d)
    glog.set_level(glog.WARNING)
    runs = {}
    for dev in ("cpu", "cuda"):
        p = S.read_solver("solver.prototxt")
        if dev == "cuda":
            p.solver_mode = p.GPU
            caffe.set_device(0)
            caffe.set_mode_gpu()
        else:
            caffe.set_mode_cpu()
        s = caffe.get_solver(p)
        losses = []
        for _ in range(3):
            s.step(1)
            losses.append(s.loss)
        runs[dev] = (losses, {f"{n}__{i}": b.data.copy() for n, bl in s.net.params.items() for i, b in enumerate(bl)},
                     s.net.blobs["data_l"].data_t.device.type)
    caffe.set_mode_cpu()
    assert runs["cuda"][2] == "cuda" and runs["cpu"][2] == "cpu"
    np.testing.assert_allclose(runs["cuda"][0], runs["cpu"][0], rtol=1e-4)
    for k, v in runs["cpu"][1].items():
        assert_close(runs["cuda"][1][k], v, rtol=1e-3, name=k)
