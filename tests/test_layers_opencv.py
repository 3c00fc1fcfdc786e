"""OpenCV's DNN module (an independent implementation of Caffe's layers) as a second reference for the shape
and rounding rules of Pooling, Convolution and Deconvolution."""
import numpy as np
import pytest
import torch
from google.protobuf import text_format

from layer_helpers import blob, close, make_layer, run
from torchcaffe.proto import caffe_pb2

cv2 = pytest.importorskip("cv2")
rng = np.random.RandomState(0)


def cv_forward(layer_text, x, blobs=()):
    net = text_format.Parse(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { '
        + " ".join(f"dim: {d}" for d in x.shape) + " } } } "
        f'layer {{ name: "l" {layer_text} bottom: "data" top: "out" }}', caffe_pb2.NetParameter())
    weights = caffe_pb2.NetParameter()
    weights.CopyFrom(net)
    for b in blobs:
        bp = weights.layer[1].blobs.add()
        bp.shape.dim.extend(b.shape)
        bp.data.extend(b.ravel().tolist())
    cvnet = cv2.dnn.readNetFromCaffe(bytearray(text_format.MessageToString(net).encode()),
                                     bytearray(weights.SerializeToString()))
    cvnet.setInput(x)
    return cvnet.forward()


def ours(layer_text, x, blobs=()):
    layer = make_layer(layer_text)
    bl = [blob(x, dtype=torch.float32)]
    tops = run(layer, bl, need_backward=False)
    for p, b in zip(layer.blobs, blobs):
        p.data_t = torch.from_numpy(b)
    layer.forward(bl, tops)
    return tops[0].data


@pytest.mark.parametrize("pool", [
    "pool: MAX kernel_size: 3 stride: 2 pad: 1",
    "pool: AVE kernel_size: 3 stride: 2 pad: 1",
    "pool: AVE kernel_size: 2 stride: 2 pad: 1",
    "pool: MAX kernel_size: 3 stride: 2",
    "pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 2 pad_w: 1",
    "pool: MAX kernel_size: 2 stride: 3",  # Caffe's ceil rounding leaves an empty last window here
])
def test_pooling_against_opencv(pool):
    x = rng.randn(2, 3, 7, 9).astype(np.float32)
    text = f'type: "Pooling" pooling_param {{ {pool} }}'
    a, b = ours(text, x), cv_forward(text, x)
    assert a.shape == b.shape
    if "stride: 3" in pool:  # the empty window: Caffe writes -FLT_MAX, OpenCV something else
        assert (a[..., -1] == -np.finfo(np.float32).max).all()
        a, b = a[..., :-1], b[..., :-1]
    close(a, b, rtol=1e-5)


@pytest.mark.parametrize("text,wshape", [
    ('type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 2 dilation: 2 group: 3 }',
     (3, 1, 3, 3)),
    ('type: "Convolution" convolution_param { num_output: 2 kernel_h: 2 kernel_w: 4 stride_h: 3 stride_w: 1 pad_h: 1 pad_w: 2 }',
     (2, 3, 2, 4)),
    ('type: "Deconvolution" convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 group: 3 }', (3, 1, 4, 4)),
    ('type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 3 stride: 2 bias_term: false }',
     (3, 2, 3, 3)),
])
def test_convolutions_against_opencv(text, wshape):
    x = rng.randn(1, 3, 7, 9).astype(np.float32)
    blobs = [rng.randn(*wshape).astype(np.float32)]
    if "bias_term: false" not in text:
        n = int(text.split("num_output: ")[1].split()[0])
        blobs.append(rng.randn(n).astype(np.float32))
    a, b = ours(text, x, blobs), cv_forward(text, x, blobs)
    assert a.shape == b.shape
    close(a, b, rtol=1e-4)
