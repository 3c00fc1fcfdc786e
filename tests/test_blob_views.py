"""Blobs that are another blob's memory under another shape (Caffe's ShareData/ShareDiff): Reshape, Flatten,
one-bottom Concat and one-top Slice.  Their values against BVLC are in tests/bvlc_golden (shared_memory_views,
reshape_flatten_noforce); here the sharing itself and its life across reshapes."""
import numpy as np
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
