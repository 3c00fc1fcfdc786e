"""The built-in layers one by one against BVLC Caffe 1.0's golden outputs (../shared/caffe_golden/layers), each
fed Caffe's own inputs; tests/test_golden_net.py runs the same net whole through caffe.Net."""
import numpy as np
import pytest
import torch

from layer_helpers import GOLDEN, TEST, TRAIN, blob, close, load_caffemodel, make_layer, run

LAYERS = GOLDEN / "layers"

pytestmark = pytest.mark.skipif(not LAYERS.is_dir(), reason="../shared/caffe_golden is not present")


@pytest.fixture(scope="module")
def z():
    return np.load(LAYERS / "layers_golden.npz")


def test_batchnorm_fixes_its_param_specs_like_caffe():
    """Caffe's BatchNorm adds ``param { lr_mult: 0 }`` for its three blobs (init.caffemodel carries them)."""
    from layer_helpers import layer_param
    from torchcaffe.proto import caffe_pb2

    saved = caffe_pb2.NetParameter()
    saved.ParseFromString((LAYERS / "init.caffemodel").read_bytes())
    bn_saved = [l for l in saved.layer if l.name == "bn1"][0]
    layer = make_layer('name: "bn1" type: "BatchNorm" bottom: "c" top: "b"')
    run(layer, [blob(np.zeros((2, 8, 3, 3)))])
    assert [p.lr_mult for p in layer.layer_param.param] == [p.lr_mult for p in bn_saved.param] == [0, 0, 0]
    assert layer.fixed_param_lr_mult == 0
    bad = make_layer('name: "bn" type: "BatchNorm" bottom: "c" top: "b" param { lr_mult: 1 }')
    with pytest.raises(ValueError, match="lr_mult"):
        run(bad, [blob(np.zeros((2, 8, 3, 3)))])


# -- single layers fed with Caffe's own inputs ----------------------------------------------------------------
def _weights():
    return load_caffemodel(LAYERS / "init.caffemodel")


def _one(text, bottoms, weights, phase=TRAIN, ntops=1):
    layer = make_layer(text, phase)
    bl = [blob(b, dtype=torch.float32) for b in bottoms]
    tops = run(layer, bl, ntops=ntops)
    for p, w in zip(layer.blobs, weights):
        p.data_t = torch.from_numpy(w)
    for p in layer.blobs:
        p.zero_diff()
    layer.forward(bl, tops)
    return layer, bl, tops


def test_conv1_alone(z):
    layer, bl, tops = _one('name: "conv1" type: "Convolution" bottom: "d" top: "c" '
                           'convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 }',
                           [z["input_data"]], _weights()["conv1"])
    close(tops[0].data, z["train_data__conv1"], name="conv1")
    tops[0].diff_t = torch.from_numpy(z["train_diff__conv1"])
    layer.backward(tops, [False], bl)  # Caffe computes no gradient for the Input data
    close(layer.blobs[0].diff, z["train_param_diff__conv1__0"], name="conv1 weight diff")
    close(layer.blobs[1].diff, z["train_param_diff__conv1__1"], name="conv1 bias diff")


def test_deconv_alone(z):
    layer, bl, tops = _one('name: "deconv" type: "Deconvolution" bottom: "c" top: "d" '
                           'convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 }',
                           [z["train_data__conv2"]], _weights()["deconv"])
    close(tops[0].data, z["train_data__deconv"], name="deconv")
    tops[0].diff_t = torch.from_numpy(z["train_diff__deconv"])
    layer.backward(tops, [True], bl)
    close(layer.blobs[0].diff, z["train_param_diff__deconv__0"], name="deconv weight diff")
    close(layer.blobs[1].diff, z["train_param_diff__deconv__1"], name="deconv bias diff")
    # the bottom diff continues through relu2 (in place) into conv2's diff
    g = bl[0].diff * (z["train_data__conv2"] > 0)
    close(g, z["train_diff__conv2"], name="deconv bottom diff through relu2")


def test_pooling_alone(z):
    layer, bl, tops = _one('name: "pmax" type: "Pooling" bottom: "c" top: "p" '
                           'pooling_param { pool: MAX kernel_size: 3 stride: 2 }', [z["train_data__cat"]], [])
    close(tops[0].data, z["train_data__pmax"], name="pmax")
    tops[0].diff_t = torch.from_numpy(z["train_diff__pmax"])
    layer.backward(tops, [True], bl)
    close(bl[0].diff, z["train_diff__cat"], name="pmax bottom diff")
    layer, bl, tops = _one('name: "pave" type: "Pooling" bottom: "c" top: "p" '
                           'pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }', [z["train_data__pmax"]], [])
    close(tops[0].data, z["train_data__pave"], name="pave")
    tops[0].diff_t = torch.from_numpy(z["train_diff__pave"])
    layer.backward(tops, [True], bl)
    close(bl[0].diff, z["train_diff__pmax"], name="pave bottom diff")


def test_softmax_loss_alone(z):
    layer, bl, tops = _one('name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss"',
                           [z["train_data__fc"], z["input_label"]], [])
    close(tops[0].data, z["train_data__loss"], name="loss")
    tops[0].diff_t = torch.tensor(1.5)
    layer.backward(tops, [True, False], bl)
    close(bl[0].diff, z["train_diff__fc_fc_0_split_1"], name="loss bottom diff")
    with pytest.raises(ValueError, match="label"):
        layer.backward(tops, [True, True], bl)
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
