"""Whole nets against BVLC Caffe 1.0's golden outputs (../shared/caffe_golden): every blob, every parameter."""
import numpy as np
import pytest

import torchcaffe as caffe
from conftest import assert_close


def _run_layers_net(golden, phase, weights):
    net = caffe.Net(str(golden / "layers" / "layers.prototxt"), phase, weights=str(weights))
    z = np.load(golden / "layers" / "layers_golden.npz")
    net.blobs["data"].data[...] = z["input_data"]
    net.blobs["label"].data[...] = z["input_label"]
    return net, z


def test_layers_net_train_forward_backward_matches_caffe(golden):
    net, z = _run_layers_net(golden, caffe.TRAIN, golden / "layers" / "init.caffemodel")
    net.forward()
    net.backward()
    compared = 0
    for name, blob in net.blobs.items():
        assert_close(blob.data, z[f"train_data__{name}"], name=f"data of {name}")
        assert_close(blob.diff, z[f"train_diff__{name}"], name=f"diff of {name}")
        compared += 1
    for lname, blobs in net.params.items():
        for i, b in enumerate(blobs):
            assert_close(b.data, z[f"train_param_data__{lname}__{i}"], name=f"param {lname}[{i}]")
            assert_close(b.diff, z[f"train_param_diff__{lname}__{i}"], name=f"param diff {lname}[{i}]")
            compared += 1
    expected = [k[len("train_data__"):] for k in z.files if k.startswith("train_data__")]
    assert set(expected) == set(net.blobs), set(expected) ^ set(net.blobs)  # Caffe's splits, Caffe's names
    assert compared == len(expected) + len([k for k in z.files if k.startswith("train_param_data__")])


def test_layers_net_test_phase_matches_caffe(golden):
    net, z = _run_layers_net(golden, caffe.TEST, golden / "layers" / "after_train_forward.caffemodel")
    net.forward()
    names = [k[len("test_data__"):] for k in z.files if k.startswith("test_data__")]
    assert set(names) == set(net.blobs), set(names) ^ set(net.blobs)
    for name in names:
        assert_close(net.blobs[name].data, z[f"test_data__{name}"], name=f"TEST data of {name}")
    # TEST uses the stored BatchNorm statistics and leaves them alone
    from torchcaffe.protoio import proto_to_array, read_net_weights

    stored = [l for l in read_net_weights(str(golden / "layers" / "after_train_forward.caffemodel")).layer
              if l.name == "bn1"][0]
    for b, bp in zip(net.params["bn1"], stored.blobs):
        np.testing.assert_array_equal(b.data, proto_to_array(bp).reshape(b.shape))


def test_narrow_colornet_matches_caffe(golden):
    d = golden / "data_and_colornet"
    net = caffe.Net(str(d / "narrow_colornet_deploy.prototxt"), str(d / "narrow_colornet.caffemodel"), caffe.TEST)
    z = np.load(d / "narrow_colornet_golden.npz")
    out = net.forward(data_l=z["input_data_l"])
    for key in z.files:
        if key.startswith("blob__"):
            name = key[len("blob__"):]
            assert_close(net.blobs[name].data, z[key], name=name)
    assert_close(out["class8_ab"], z["blob__class8_ab"], name="class8_ab")


def test_v1_net_upgraded_and_run_matches_caffe(golden):
    d = golden / "v1_upgrade"
    net = caffe.Net(str(d / "v1_net.prototxt"), caffe.TEST, weights=str(d / "v1_net.caffemodel"))
    z = np.load(d / "v1_golden.npz")
    assert net.inputs == ["data"]
    net.forward(data=z["input_data"])
    for key in z.files:
        if key.startswith("blob__"):
            assert_close(net.blobs[key[6:]].data, z[key], name=key[6:])
