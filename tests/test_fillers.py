"""Caffe's fillers: statistics, fan computation, the bilinear kernel, sparsity, errors and determinism."""
import math

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from torchcaffe.blob import Blob
from torchcaffe.filler import FillerError, fill, filler_values
from torchcaffe.proto import caffe_pb2


def fp(text: str) -> "caffe_pb2.FillerParameter":
    return text_format.Parse(text, caffe_pb2.FillerParameter())


def values(shape, text, seed=0):
    torch.manual_seed(seed)
    return filler_values(shape, fp(text)).numpy().astype(np.float64)


def test_constant_default_and_value():
    np.testing.assert_array_equal(values((2, 3), ""), 0)  # the default filler: constant 0
    np.testing.assert_array_equal(values((4,), 'type: "constant" value: 2.5'), 2.5)


def test_uniform_bounds_and_moments():
    v = values((200, 500), 'type: "uniform" min: -2 max: 3')
    assert v.min() >= -2 and v.max() < 3
    assert abs(v.mean() - 0.5) < 0.02 and abs(v.std() - 5 / math.sqrt(12)) < 0.01


def test_gaussian_moments_and_sparse():
    v = values((400, 300), 'type: "gaussian" mean: 1 std: 0.5')
    assert abs(v.mean() - 1) < 0.01 and abs(v.std() - 0.5) < 0.005
    v = values((10, 20000), 'type: "gaussian" std: 1 sparse: 3')  # keep probability 3 / shape[0]
    assert abs((v != 0).mean() - 0.3) < 0.01
    with pytest.raises(FillerError, match="sparse"):
        values((2, 3), 'type: "gaussian" sparse: 5')


def test_positive_unitball_rows():
    v = values((5, 3, 4), 'type: "positive_unitball"')
    assert (v >= 0).all() and (v <= 1).all()
    np.testing.assert_allclose(v.reshape(5, -1).sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("norm,n", [("FAN_IN", 4 * 3 * 3), ("FAN_OUT", 64 * 3 * 3), ("AVERAGE", (36 + 576) / 2)])
def test_xavier_and_msra_use_caffes_fans(norm, n):
    shape = (64, 4, 3, 3)  # fan_in = count / shape[0], fan_out = count / shape[1]
    x = values(shape, f'type: "xavier" variance_norm: {norm}')
    a = math.sqrt(3 / n)
    assert np.abs(x).max() <= a * (1 + 1e-6) and np.abs(x).max() > 0.98 * a
    assert abs(x.std() - a / math.sqrt(3)) < 0.03 * a
    m = values(shape, f'type: "msra" variance_norm: {norm}')
    assert abs(m.std() - math.sqrt(2 / n)) < 0.03 * math.sqrt(2 / n) and abs(m.mean()) < 0.05 * math.sqrt(2 / n)


def test_xavier_fans_of_inner_product_and_bias_shapes():
    # (N_out, K) weights: fan_in = K; a 1-D blob: num = count, channels = 1
    x = values((50, 200), 'type: "xavier"')
    assert abs(np.abs(x).max() - math.sqrt(3 / 200)) < 0.01 * math.sqrt(3 / 200)
    b = values((1000,), 'type: "xavier"')
    assert np.abs(b).max() > 1.6 and np.abs(b).max() <= math.sqrt(3)  # n = fan_in = 1
    b = values((1000,), 'type: "xavier" variance_norm: FAN_OUT')
    assert np.abs(b).max() <= math.sqrt(3 / 1000) * (1 + 1e-6)


@pytest.mark.parametrize("k,row", [(4, [0.25, 0.75, 0.75, 0.25]), (5, [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3]),
                                   (2, [1.0, 0.0]), (3, [0.25, 0.75, 0.75])])
def test_bilinear_kernel(k, row):
    v = values((3, 2, k, k), 'type: "bilinear"')
    # Caffe's formula: f = ceil(k / 2), c = (2f - 1 - f % 2) / (2f), w(x, y) = (1 - |x/f - c|)(1 - |y/f - c|)
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2 * f)
    w = np.array([1 - abs(x / f - c) for x in range(k)])
    np.testing.assert_allclose(w, row, rtol=1e-7)
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(v[i, j], np.outer(w, w), rtol=1e-6)


def test_bilinear_upsampling_of_a_constant_is_constant_inside():
    from layer_helpers import blob, make_layer, run
    layer = make_layer('type: "Deconvolution" convolution_param { num_output: 2 group: 2 kernel_size: 4 stride: 2 '
                       'pad: 1 bias_term: false weight_filler { type: "bilinear" } }')
    t = run(layer, [blob(np.ones((1, 2, 5, 5)))])
    assert t[0].shape == (1, 2, 10, 10)
    np.testing.assert_allclose(t[0].data[:, :, 1:-1, 1:-1], 1.0, rtol=1e-12)


def test_errors():
    with pytest.raises(FillerError, match="unknown filler type 'gausian'"):
        values((2,), 'type: "gausian"')
    with pytest.raises(FillerError, match="sparse"):
        values((2, 2), 'type: "uniform" sparse: 1')
    with pytest.raises(FillerError, match="4 axes"):
        values((2, 3, 3), 'type: "bilinear"')
    with pytest.raises(FillerError, match="square"):
        values((1, 1, 3, 4), 'type: "bilinear"')
    with pytest.raises(FillerError, match="min"):
        values((2,), 'type: "uniform" min: 2 max: 1')
    from layer_helpers import make_layer, blob, run
    from torchcaffe.layer import LayerError
    with pytest.raises(LayerError, match="weight_filler.*unknown filler type 'foo'"):
        run(make_layer('name: "ip" type: "InnerProduct" inner_product_param { num_output: 2 '
                       'weight_filler { type: "foo" } }'), [blob(np.zeros((1, 3)))])


def test_fill_blob_and_tensor_deterministically():
    p = fp('type: "gaussian" std: 2')
    b = Blob((3, 4), dtype=torch.float64)
    torch.manual_seed(42)
    fill(b, p)
    t = torch.zeros(3, 4)
    torch.manual_seed(42)
    fill(t, p)
    np.testing.assert_allclose(b.data, t.numpy(), rtol=1e-6)
    assert b.data.dtype == np.float64 and b.shape == (3, 4)
    torch.manual_seed(42)
    again = Blob((3, 4))
    fill(again, p)
    np.testing.assert_array_equal(again.data, t.numpy())
