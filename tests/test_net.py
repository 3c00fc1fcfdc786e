"""Net semantics: state filtering, splits, sharing, loss weights, need-backward, weights I/O, errors."""
import numpy as np
import pytest
import torch
from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe.net import NetError
from torchcaffe.proto import caffe_pb2


def net_param(text):
    p = caffe_pb2.NetParameter()
    text_format.Merge(text, p)
    return p


TWO_HEADS = """
name: "two_heads"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 4 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 3 dim: 2 } } }
layer { name: "fa" type: "InnerProduct" bottom: "x" top: "fa" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "fb" type: "InnerProduct" bottom: "x" top: "fb" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "la" type: "EuclideanLoss" bottom: "fa" bottom: "y" top: "la" }
layer { name: "lb" type: "EuclideanLoss" bottom: "fb" bottom: "y" top: "lb" loss_weight: 0.5 }
"""


def _feed(net, seed=0):
    rng = np.random.default_rng(seed)
    net.blobs["x"].data[...] = rng.normal(size=net.blobs["x"].shape)
    net.blobs["y"].data[...] = rng.normal(size=net.blobs["y"].shape)


def test_shared_params_are_one_learnable_blob_with_summed_gradients():
    net = caffe.Net(net_param(TWO_HEADS), caffe.TRAIN)
    assert len(net.learnable_params) == 2
    assert net.params["fa"][0] is net.params["fb"][0]
    assert "x_x_0_split" in net.layer_dict  # x feeds two layers: Caffe's Split
    _feed(net)
    loss = net.forward_backward()
    x = torch.from_numpy(net.blobs["x"].data.copy()).double()
    y = torch.from_numpy(net.blobs["y"].data.copy()).double()
    w = torch.from_numpy(net.params["fa"][0].data.copy()).double().requires_grad_()
    b = torch.from_numpy(net.params["fa"][1].data.copy()).double().requires_grad_()
    f = x @ w.T + b
    ref = ((f - y) ** 2).sum() / (2 * 3) * 1.5  # loss weights 1 and 0.5 on the same function
    ref.backward()
    assert abs(loss - ref.item()) < 1e-5 * abs(ref.item())
    np.testing.assert_allclose(net.params["fa"][0].diff, w.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(net.params["fb"][1].diff, b.grad.numpy(), rtol=1e-5, atol=1e-7)
    # input gradients were not asked for: Caffe does not back-propagate to Input blobs
    assert not net.blobs["x"].diff.any()


def test_hdf5_weights_round_trip_with_shared_params(tmp_path):
    net = caffe.Net(net_param(TWO_HEADS), caffe.TRAIN)
    path = tmp_path / "w.caffemodel.h5"
    net.save_hdf5(str(path))
    other = caffe.Net(net_param(TWO_HEADS), caffe.TEST)
    copied = other.copy_from(str(path))
    assert "fa" in copied
    np.testing.assert_array_equal(other.params["fb"][0].data, net.params["fa"][0].data)


def test_caffemodel_round_trip_and_shape_mismatch_error(tmp_path):
    net = caffe.Net(net_param(TWO_HEADS), caffe.TRAIN)
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    again = caffe.Net(net_param(TWO_HEADS), caffe.TRAIN, weights=str(path))
    np.testing.assert_array_equal(again.params["fa"][0].data, net.params["fa"][0].data)
    wider = caffe.Net(net_param(TWO_HEADS.replace("num_output: 2", "num_output: 3", 1)
                                .replace("dim: 3 dim: 2", "dim: 3 dim: 3")
                                .replace("num_output: 2", "num_output: 3")), caffe.TRAIN)
    with pytest.raises(NetError, match=r"Cannot copy param 0 weights from layer 'fa'.*shape mismatch.  Source param "
                       r"shape is 2 4 \(8\); target param shape is 3 4 \(12\)"):
        wider.copy_from(str(path))


def test_phase_stage_and_level_rules():
    text = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "t" type: "ReLU" bottom: "x" top: "t" include { phase: TRAIN } }
    layer { name: "s" type: "ReLU" bottom: "x" top: "s" include { stage: "deploy" } }
    layer { name: "n" type: "ReLU" bottom: "x" top: "n" exclude { not_stage: "deploy" } }
    layer { name: "l" type: "ReLU" bottom: "x" top: "l" include { min_level: 2 } }
    """
    names = lambda net: [n for n in net.layer_dict if not n.endswith("_split")]
    assert names(caffe.Net(net_param(text), caffe.TRAIN)) == ["x", "t"]
    assert names(caffe.Net(net_param(text), caffe.TEST, stages=["deploy"])) == ["x", "s", "n"]
    assert names(caffe.Net(net_param(text), caffe.TEST, level=3)) == ["x", "l"]


def test_propagate_down_and_force_backward():
    text = """
    force_backward: true
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "y" top: "loss" }
    """
    net = caffe.Net(net_param(text), caffe.TRAIN)
    _feed(net)
    net.forward()
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, (net.blobs["x"].data - net.blobs["y"].data) / 2, rtol=1e-6)
    pd = text.replace('top: "loss" }', 'top: "loss" propagate_down: true propagate_down: false }')
    # propagate_down forces or skips a bottom's gradient ...
    assert caffe.Net(net_param(pd.replace("force_backward: true", "")), caffe.TRAIN).bottom_need_backward[-1] == [True, False]
    # ... but force_backward wins wherever the layer allows it (Caffe: need || AllowForceBackward)
    assert caffe.Net(net_param(pd), caffe.TRAIN).bottom_need_backward[-1] == [True, True]


def test_pycaffe_signatures_forward_kwargs_and_reshape(tmp_path):
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 5 dim: 5 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
            convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
    """
    path = tmp_path / "n.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    w = tmp_path / "n.caffemodel"
    net.save(str(w))
    for other in (caffe.Net(str(path), str(w), caffe.TEST), caffe.Net(str(path), caffe.TEST, weights=str(w))):
        np.testing.assert_array_equal(other.params["conv"][0].data, net.params["conv"][0].data)
    assert net.inputs == ["data"] and net.outputs == ["conv"]
    out = net.forward(data=np.ones((1, 1, 5, 5)))
    assert out["conv"].shape == (1, 2, 3, 3)
    net.blobs["data"].reshape(2, 1, 9, 7)
    net.reshape()
    assert net.blobs["conv"].shape == (2, 2, 7, 5)
    assert net.forward()["conv"].shape == (2, 2, 7, 5)


@pytest.mark.parametrize("text, message", [
    ('layer { name: "r" type: "ReLU" bottom: "nope" top: "r" }', r"unknown bottom blob 'nope' \(layer 'r', bottom index 0\)"),
    ('layer { name: "q" type: "Quux" top: "q" }', r"layer 'q' has unknown type 'Quux'; supported types: .*Convolution"),
    ('layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 } } }\n'
     'layer { name: "b" type: "Input" top: "a" input_param { shape { dim: 1 } } }', r"top blob 'a' produced by multiple sources"),
])
def test_errors_name_the_layer(text, message):
    with pytest.raises(NetError, match=message):
        caffe.Net(net_param(text), caffe.TEST)


def test_malformed_prototxt_names_file_line_and_column(tmp_path):
    from torchcaffe.protoio import CaffeFormatError

    path = tmp_path / "bad.prototxt"
    path.write_text('layer {\n  name: "a"\n  type: "Input" top: "a"\n  bogus_field: 3\n}\n')
    with pytest.raises(CaffeFormatError, match=r"bad.prototxt:4:\d+"):
        caffe.Net(str(path), caffe.TEST)


def test_batchnorm_statistics_are_not_learned_even_without_param_specs():
    # Caffe's BatchNorm adds lr_mult 0 specs to its own parameter during setup, and Net::AppendParam reads
    # the layer's parameter: the statistics get no learning rate, so no weight decay can shrink them.
    text = """
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }
    layer { name: "bn" type: "BatchNorm" bottom: "x" top: "bn" }
    layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }
    """
    net = caffe.Net(net_param(text), caffe.TRAIN)
    assert net.params_lr == [0.0, 0.0, 0.0, 1.0, 1.0]
