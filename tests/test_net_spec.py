"""torchcaffe.net_spec: pycaffe's NetSpec rules (names, parameter routing, in-place, ntop, enums)."""
import numpy as np
import pytest
from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe.proto import caffe_pb2

L, P = caffe.layers, caffe.params


def _text(net):
    return text_format.MessageToString(net)


def test_named_tops_in_place_and_parameter_routing():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 8, 8]))
    n.conv1 = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1,
                            weight_filler=dict(type="xavier"), param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.loss = L.SoftmaxWithLoss(n.pool1, n.data, include=dict(phase=caffe.TRAIN), loss_weight=0.5)
    net = n.to_proto()
    expected = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 4 pad: 1 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "pool1" bottom: "data" top: "loss"
        loss_weight: 0.5 include { phase: TRAIN } }
"""
    want = text_format.Parse(expected, caffe_pb2.NetParameter())
    assert net == want, _text(net)


def test_automatic_names_follow_pycaffe():
    data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    a = L.ReLU(data)
    b = L.ReLU(a)
    c = L.Eltwise(a, b)
    net = c.to_proto()
    assert [l.name for l in net.layer] == ["Input1", "ReLU1", "ReLU2", "Eltwise1"]
    assert [list(l.top) for l in net.layer] == [["Input1"], ["ReLU1"], ["ReLU2"], ["Eltwise1"]]
    assert list(net.layer[3].bottom) == ["ReLU1", "ReLU2"]
    # In a NetSpec, unassigned tops are named automatically and assigned ones after their attribute.
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    n.y = L.ReLU(L.ReLU(n.x))
    n.z = L.Silence(n.y, ntop=0)
    net = n.to_proto()
    assert [(l.name, list(l.bottom), list(l.top)) for l in net.layer] == [
        ("x", [], ["x"]), ("ReLU1", ["x"], ["ReLU1"]), ("y", ["ReLU1"], ["y"]), ("z", ["y"], [])]


def test_ntop_name_override_repeated_scalars_and_layer_fields():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 4, 4]))
    n.l, n.ab = L.Slice(n.data, ntop=2, slice_point=1, axis=1, name="slicer")
    n.up = L.Deconvolution(n.ab, convolution_param=dict(num_output=2, kernel_size=4, stride=2, pad=1, group=2,
                                                        bias_term=False, weight_filler=dict(type="bilinear")),
                           param=dict(lr_mult=0, decay_mult=0), propagate_down=False)
    n.py = L.Python(n.up, n.l, module="m", layer="K", param_str='{"a": 1}', ntop=1)
    net = n.to_proto()
    sl, up, py = net.layer[1], net.layer[2], net.layer[3]
    assert (sl.name, list(sl.top), list(sl.slice_param.slice_point), sl.slice_param.axis) == ("slicer", ["l", "ab"], [1], 1)
    assert list(up.convolution_param.kernel_size) == [4] and list(up.convolution_param.stride) == [2]
    assert up.convolution_param.weight_filler.type == "bilinear" and not up.convolution_param.bias_term
    assert len(up.param) == 1 and up.param[0].lr_mult == 0 and list(up.propagate_down) == [False]
    assert (py.python_param.module, py.python_param.layer, py.python_param.param_str) == ("m", "K", '{"a": 1}')
    assert list(py.bottom) == ["up", "l"]


def test_params_enums_and_errors():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Eltwise.PROD == caffe_pb2.EltwiseParameter.PROD
    assert P.Data.LMDB == caffe_pb2.DataParameter.LMDB
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 2, 2]))
    n.bad = L.Convolution(n.data, no_such_field=3)
    with pytest.raises(AttributeError, match="no_such_field"):
        n.to_proto()
    # Deconvolution has no parameter message of its own: its fields need convolution_param=dict(...).
    n2 = caffe.NetSpec()
    n2.data = L.Input(shape=dict(dim=[1, 1, 2, 2]))
    n2.bad = L.Deconvolution(n2.data, num_output=3)
    with pytest.raises(AttributeError, match="num_output"):
        n2.to_proto()
    with pytest.raises(AttributeError):
        n.missing  # noqa: B018
    assert n["data"] is n.data and n.keys() == ["data", "bad"]


def test_param_name_dict_and_item_access():
    names = caffe.net_spec.param_name_dict()
    assert names["Convolution"] == "convolution"
    assert names["BatchNorm"] == "batch_norm"
    assert names["Python"] == "python"
    assert "Deconvolution" not in names
    n = caffe.NetSpec()
    n["in"] = L.Input(shape=dict(dim=[1, 1, 2, 2]))
    n["out"] = L.Power(n["in"], power=2, shift=1)
    net = n.to_proto()
    assert net.layer[1].power_param.power == 2 and net.layer[1].power_param.shift == 1


def test_a_netspec_net_runs_in_torchcaffe(tmp_path):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 5, 5]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, pad=1, bias_term=False,
                           weight_filler=dict(type="constant", value=1))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.out = L.Power(n.relu, scale=2.0)
    path = tmp_path / "net.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5) - 12
    net.blobs["data"].data[...] = x
    net.forward()
    pad = np.pad(x[0, 0], 1)
    box = sum(pad[i:i + 5, j:j + 5] for i in range(3) for j in range(3))
    np.testing.assert_allclose(net.blobs["out"].data[0, 0], 2 * np.maximum(box, 0), rtol=1e-6)


def test_in_place_with_a_second_bottom_writes_into_the_first():
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[1, 2, 3, 3]))
    n.s = L.Input(shape=dict(dim=[2]))
    n.scaled = L.Scale(n.x, n.s, axis=1, in_place=True)
    layer = n.to_proto().layer[2]
    assert (layer.name, list(layer.bottom), list(layer.top)) == ("scaled", ["x", "s"], ["x"])
    with pytest.raises(ValueError, match="in_place"):
        L.ReLU(n.x, ntop=2, in_place=True)
