"""pycaffe's blob.data / blob.diff are views of the blob's memory: they stay valid across every operation
until the blob is reshaped (BVLC's test_clear_param_diffs holds a diff across clear_param_diffs).

Every test runs twice: on the CPU (the array is the tensor's memory) and with the device path's host mirror
forced on (``blob.MIRROR_CPU``), which is what a GPU run does, so the GPU behaviour is checked without one.
"""
import numpy as np
import pytest
from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe import blob as blob_mod
from torchcaffe.proto import caffe_pb2

NET = """
name: "views"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "out" type: "InnerProduct" bottom: "ip" top: "out"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" }
"""


def make_net(param_text=NET):
    p = caffe_pb2.NetParameter()
    text_format.Parse(param_text, p)
    caffe.set_random_seed(3)
    return caffe.Net(p, caffe.TRAIN)


@pytest.fixture(params=["cpu", "mirrored", "cuda"])
def mirror(request, monkeypatch):
    """Where the blobs live: the CPU, the CPU with the device path's host mirror, or a real CUDA device."""
    import torch

    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        caffe.set_mode_gpu()
        try:
            yield True
        finally:
            caffe.set_mode_cpu()
        return
    monkeypatch.setattr(blob_mod, "MIRROR_CPU", request.param == "mirrored")
    yield request.param == "mirrored"


def numpy_forward(net, x):
    w1, b1 = (b.data for b in net.params["ip"])
    w2, b2 = (b.data for b in net.params["out"])
    return np.maximum(x @ w1.T + b1, 0) @ w2.T + b2


def test_held_input_and_output_arrays_follow_each_forward(mirror):
    net = make_net()
    data, out = net.blobs["data"].data, net.blobs["out"].data  # taken once, as a pycaffe script does
    rng = np.random.RandomState(0)
    for _ in range(3):
        x = rng.randn(2, 3).astype(np.float32)
        data[...] = x  # fill the held array for each image
        net.forward()
        np.testing.assert_allclose(out, numpy_forward(net, x), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out, net.blobs["out"].data)


def test_held_param_diff_is_cleared_by_clear_param_diffs(mirror):
    """BVLC's test_clear_param_diffs: a diff held across clear_param_diffs reads zeros."""
    net = make_net()
    net.blobs["data"].data[...] = np.random.RandomState(1).randn(2, 3)
    net.forward()
    net.backward()
    diff = net.params["ip"][0].diff
    assert np.abs(diff).max() > 0
    net.clear_param_diffs()
    assert (diff == 0).all()


def test_held_arrays_follow_backward_update_and_solver_step(mirror, tmp_path):
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(NET)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{net_file}" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 max_iter: 10 '
                           f'display: 0 snapshot_after_train: false random_seed: 5')
    solver = caffe.SGDSolver(str(solver_file))
    net = solver.net
    w, dw = net.params["ip"][0].data, net.params["ip"][0].diff
    data, label, loss = net.blobs["data"].data, net.blobs["label"].data, net.blobs["loss"].data
    data[...] = np.random.RandomState(2).randn(2, 3)
    label[...] = np.random.RandomState(3).randn(2, 4)
    net.forward()
    net.backward()
    np.testing.assert_array_equal(dw, net.params["ip"][0].diff)
    before = w.copy()
    solver.apply_update()
    assert not np.array_equal(w, before), "the held weights did not see apply_update"
    np.testing.assert_array_equal(w, net.params["ip"][0].data)
    before = w.copy()
    solver.step(2)
    assert not np.array_equal(w, before), "the held weights did not see solver.step"
    np.testing.assert_array_equal(w, net.params["ip"][0].data)
    np.testing.assert_array_equal(dw, net.params["ip"][0].diff)
    np.testing.assert_array_equal(loss, net.blobs["loss"].data)
    # what the step computed with is what the held arrays held
    net.forward()
    out = numpy_forward(net, data)
    np.testing.assert_allclose(loss, ((out - label) ** 2).sum() / 2 / 2, rtol=1e-5)


def test_net_update_writes_the_held_weights(mirror):
    net = make_net()
    w = net.params["out"][0].data
    net.params["out"][0].diff[...] = 1.0
    expect = w - 1.0
    net.update()
    np.testing.assert_allclose(w, expect)


def test_reshape_ends_the_view(mirror):
    net = make_net()
    held = net.blobs["data"].data
    held[...] = 7.0
    net.blobs["data"].reshape(4, 3)
    net.blobs["label"].reshape(4, 4)
    net.reshape()
    fresh = net.blobs["data"].data
    assert fresh.shape == (4, 3) and held.shape == (2, 3)
    assert not np.shares_memory(fresh, held)
    net.forward()
    assert net.blobs["out"].data.shape == (4, 4)
    # a reshape to the same shape keeps the memory, as Caffe's does
    same = net.blobs["data"].data
    net.blobs["data"].reshape(4, 3)
    same[...] = 3.0
    np.testing.assert_array_equal(net.blobs["data"].data, 3.0)


def test_in_place_layer_keeps_one_blob_with_the_last_writers_data(mirror):
    net = make_net()
    ip = net.blobs["ip"].data
    net.blobs["data"].data[...] = np.random.RandomState(4).randn(2, 3)
    net.forward()
    w1, b1 = (b.data for b in net.params["ip"])
    np.testing.assert_allclose(ip, np.maximum(net.blobs["data"].data @ w1.T + b1, 0), rtol=1e-5, atol=1e-6)


CONV_NET = """
name: "copies"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 4 dim: 3 dim: 3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "pool" bottom: "target" top: "loss" }
"""


def test_layers_outputs_are_not_copied_unless_a_view_is_held(monkeypatch):
    """A layer's output becomes its top's memory as it is: a training pass makes no full copy into blobs;
    holding a view of a blob makes exactly the writes into that blob copies."""
    net = make_net(CONV_NET)
    copies = []
    real = blob_mod._copy_into
    monkeypatch.setattr(blob_mod, "_copy_into", lambda dst, src: copies.append(tuple(dst.shape)) or real(dst, src))
    net.blobs["data"].data[...] = np.random.RandomState(0).randn(2, 3, 8, 8)  # held: the input
    for _ in range(2):  # what the solver runs
        net.forward_backward()
        net.clear_param_diffs()
        net.update()
    assert copies == []
    held = net.blobs["conv"].data  # a user now holds the in-place chain's memory
    copies.clear()
    net.forward_backward()
    # conv, bn, scale and relu each write its data once (held memory is written into); nothing else
    assert copies == [(2, 4, 6, 6)] * 4
    np.testing.assert_array_equal(held, net.blobs["conv"].data)
    assert (held >= 0).all()  # relu's output: the last writer's data
