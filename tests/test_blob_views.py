"""Blobs that are another blob's memory under another shape (Caffe's ShareData/ShareDiff): Reshape, Flatten,
one-bottom Concat and one-top Slice.  Their values against BVLC are in tests/bvlc_golden (shared_memory_views,
reshape_flatten_noforce); here the sharing itself and its life across reshapes."""
import numpy as np
import pytest
import torch

import torchcaffe as caffe
from torchcaffe.blob import Blob


def test_a_view_reads_and_writes_the_base_memory():
    a = Blob((2, 3, 4))
    b = Blob((6, 4))
    b.share_data_view(a)
    b.share_diff_view(a)
    a.data[...] = np.arange(24).reshape(2, 3, 4)
    np.testing.assert_array_equal(b.data, np.arange(24).reshape(6, 4))
    b.diff[...] = 1
    assert (a.diff == 1).all()
    b.data_t = torch.full((6, 4), 7.0)  # a layer replacing the top's tensor replaces the bottom's
    assert (a.data == 7).all()
    b.reshape(4, 6)  # same count: still shared
    b.data[...] = 3
    assert (a.data == 3).all() and b.shape == (4, 6)
    b.reshape(5, 5)  # another count: the blob owns new memory, the base is untouched
    b.data[...] = 9
    assert (a.data == 3).all() and b.shape == (5, 5)


def test_a_view_whose_base_is_resized_keeps_memory_of_its_own():
    a = Blob((2, 3))
    b = Blob((3, 2))
    b.share_data_view(a)
    a.reshape(4, 3)
    assert b.shape == (3, 2) and not b.data.any()
    b.data[...] = 5
    assert not a.data.any()


def test_reshape_and_flatten_follow_a_new_batch_size(tmp_path):
    """BVLC gives x no gradient here (Flatten's backward points r's diff at its own top's, away from x's),
    while r's diff is the top diff; 2, 5, 1 run as BVLC Caffe's pycaffe does."""
    p = tmp_path / "net.prototxt"
    p.write_text('force_backward: true\n'
                 'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 } } }\n'
                 'layer { name: "r" type: "Reshape" bottom: "x" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }\n'
                 'layer { name: "f" type: "Flatten" bottom: "r" top: "f" flatten_param { axis: 0 } }\n')
    net = caffe.Net(str(p), caffe.TEST)
    for n in (2, 5, 1):
        net.blobs["x"].reshape(n, 3, 4)
        net.reshape()
        x = np.random.RandomState(n).randn(n, 3, 4).astype(np.float32)
        net.blobs["x"].data[...] = x
        out = net.forward()["f"]
        np.testing.assert_array_equal(out, x.reshape(-1))
        g = np.arange(x.size, dtype=np.float32)
        net.backward(f=g)
        assert not net.blobs["x"].diff.any()
        np.testing.assert_array_equal(net.blobs["r"].diff, g.reshape(n, 12))


@pytest.mark.parametrize("where", ["cpu", "mirrored", "cuda"])
def test_held_arrays_of_a_shared_view_stay_live(tmp_path, monkeypatch, where):
    """pycaffe arrays held before forward, of a Reshape top and of its bottom, follow each forward and backward
    (on the CPU they are one memory; with a host mirror, as on a GPU, both are kept in step); values against
    numpy."""
    from torchcaffe import blob as blob_mod

    if where == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device")
        caffe.set_mode_gpu()
    monkeypatch.setattr(blob_mod, "MIRROR_CPU", where == "mirrored")
    p = tmp_path / "net.prototxt"
    p.write_text('force_backward: true\n'
                 'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 4 } } }\n'
                 'layer { name: "t" type: "TanH" bottom: "x" top: "t" }\n'
                 'layer { name: "r" type: "Reshape" bottom: "t" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }\n'
                 'layer { name: "ip" type: "InnerProduct" bottom: "r" top: "ip" inner_product_param { num_output: 5 '
                 'bias_term: false weight_filler { type: "gaussian" std: 1 } } }\n')
    try:
        net = caffe.Net(str(p), caffe.TRAIN)
        held = {k: (net.blobs[k].data, net.blobs[k].diff) for k in ("x", "t", "r")}
        w = net.params["ip"][0].data.copy()
        for seed in (1, 2):
            x = np.random.RandomState(seed).randn(2, 3, 4).astype(np.float32)
            held["x"][0][...] = x
            net.forward()
            t = np.tanh(x)
            np.testing.assert_allclose(held["t"][0], t, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(held["r"][0], t.reshape(2, 12), rtol=1e-6, atol=1e-6)
            g = np.random.RandomState(10 + seed).randn(2, 5).astype(np.float32)
            net.backward(ip=g)
            dr = g @ w
            np.testing.assert_allclose(held["r"][1], dr, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(held["t"][1], dr.reshape(2, 3, 4), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(held["x"][1], dr.reshape(2, 3, 4) * (1 - t * t), rtol=1e-5, atol=1e-5)
            if where == "cpu":
                assert np.shares_memory(held["r"][0], held["t"][0])
                assert np.shares_memory(held["r"][1], held["t"][1])
        held["r"][0][...] = 0.5  # a write through the top is the bottom's
        np.testing.assert_array_equal(net.blobs["t"].read_data(), 0.5)
        net.blobs["r"].data = 0.25
        np.testing.assert_array_equal(held["t"][0], 0.25)
        np.testing.assert_array_equal(net.blobs["t"].data_t.cpu().numpy(), 0.25)
    finally:
        if where == "cuda":
            caffe.set_mode_cpu()
