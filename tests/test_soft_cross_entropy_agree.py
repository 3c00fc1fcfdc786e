"""The released loss type (built-in SoftmaxCrossEntropyLoss) and our Python loss layer compute the same thing."""
import numpy as np
from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe.proto import caffe_pb2

NET = """
force_backward: true
layer { name: "s" type: "Input" top: "s" input_param { shape { dim: 2 dim: 7 dim: 3 dim: 4 } } }
layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 2 dim: 7 dim: 3 dim: 4 } } }
layer { name: "loss" bottom: "s" bottom: "t" top: "loss" loss_weight: 2 propagate_down: true propagate_down: false
        LOSS }
"""
BUILTIN = 'type: "SoftmaxCrossEntropyLoss"'
PYTHON = 'type: "Python" python_param { module: "colorization_layers" layer: "SoftmaxCrossEntropyLossLayer" }'


def _run(kind, s, t):
    p = caffe_pb2.NetParameter()
    text_format.Merge(NET.replace("LOSS", kind), p)
    net = caffe.Net(p, caffe.TRAIN)
    net.blobs["s"].data[...] = s
    net.blobs["t"].data[...] = t
    loss = net.forward_backward()
    return loss, net.blobs["s"].diff.copy()


def test_builtin_and_python_soft_cross_entropy_agree():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2, 7, 3, 4)) * 3
    t = rng.random((2, 7, 3, 4))
    t /= t.sum(1, keepdims=True)
    a, ga = _run(BUILTIN, s, t)
    b, gb = _run(PYTHON, s, t)
    # independent reference: -sum(t * log_softmax(s)) / N, gradient (softmax - t) * weight / N
    logp = s - np.log(np.exp(s).sum(1, keepdims=True))
    ref = 2 * -(t * logp).sum() / 2
    assert abs(a - ref) < 1e-4 * abs(ref) and abs(b - ref) < 1e-4 * abs(ref)
    grad = (np.exp(logp) - t) * 2 / 2
    np.testing.assert_allclose(ga, grad, atol=1e-6)
    np.testing.assert_allclose(gb, grad, atol=1e-6)
