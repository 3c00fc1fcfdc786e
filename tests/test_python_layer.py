"""Python layers: a layer written for BVLC's pycaffe runs unchanged; the torch fast path is used when present."""
import textwrap

import numpy as np
import pytest
from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe.net import NetError
from torchcaffe.proto import caffe_pb2

PYCAFFE_STYLE = '''
import json
import caffe  # resolved to torchcaffe by the test's sys.modules entry, as `import caffe` in a real install

class Square(caffe.Layer):
    """y = scale * x^2, with pycaffe's numpy blobs only."""
    def setup(self, bottom, top):
        self.scale = json.loads(self.param_str or "{}").get("scale", 1.0)
        self.seen_phase = self.phase
        if len(bottom) != 1:
            raise Exception("one bottom")
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = self.scale * bottom[0].data ** 2
    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * self.scale * bottom[0].data * top[0].diff

class SumLoss(caffe.Layer):
    def setup(self, bottom, top):
        pass
    def reshape(self, bottom, top):
        top[0].reshape(1)
    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.sum()
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff[0]

class TorchSquare(caffe.Layer):
    """The same function through the fast path."""
    def setup(self, bottom, top):
        self.calls = 0
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)
    def forward(self, bottom, top):
        raise AssertionError("the runtime must call forward_torch")
    def forward_torch(self, bottom):
        self.calls += 1
        return [2.0 * bottom[0] ** 2]
    def backward_torch(self, top_diff, propagate_down, bottom):
        return [4.0 * bottom[0] * top_diff[0]]
'''

NET = """
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "sq" type: "Python" bottom: "x" top: "sq"
        python_param { module: "pylayers_for_test" layer: "LAYER" param_str: '{"scale": 2.0}' } }
layer { name: "loss" type: "Python" bottom: "sq" top: "loss" loss_weight: 0.5
        python_param { module: "pylayers_for_test" layer: "SumLoss" } }
"""


@pytest.fixture
def pylayers(tmp_path, monkeypatch):
    import sys

    (tmp_path / "pylayers_for_test.py").write_text(textwrap.dedent(PYCAFFE_STYLE))
    monkeypatch.setenv("TORCHCAFFE_LAYERS_PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "caffe", caffe)
    yield
    sys.modules.pop("pylayers_for_test", None)


@pytest.mark.parametrize("layer", ["Square", "TorchSquare"])
def test_python_layer_forward_backward(pylayers, layer):
    p = caffe_pb2.NetParameter()
    text_format.Merge(NET.replace("LAYER", layer), p)
    net = caffe.Net(p, caffe.TRAIN)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    net.blobs["x"].data[...] = x
    loss = net.forward_backward()
    assert loss == pytest.approx(0.5 * (2 * x ** 2).sum())
    np.testing.assert_allclose(net.blobs["x"].diff, 0.5 * 4 * x)
    obj = net.layer_dict["sq"].obj
    if layer == "Square":
        assert obj.scale == 2.0 and obj.seen_phase == caffe.TRAIN
    else:
        assert obj.calls == 1


def test_missing_module_and_class_are_named(pylayers):
    p = caffe_pb2.NetParameter()
    text_format.Merge(NET.replace("pylayers_for_test", "no_such_module_xyz"), p)
    with pytest.raises(NetError, match="layer 'sq' .*cannot import python_param.module 'no_such_module_xyz'"):
        caffe.Net(p, caffe.TRAIN)
    p = caffe_pb2.NetParameter()
    text_format.Merge(NET.replace("LAYER", "Nope"), p)
    with pytest.raises(NetError, match="has no layer class 'Nope'"):
        caffe.Net(p, caffe.TRAIN)
