"""layers/colorization_layers.py: numpy (pycaffe) and torch paths agree, outputs match independent
references, gradients match finite differences, param_str is validated."""
import json
import re

import numpy as np
import pytest
import torch
from skimage import color

import cic
from cic_helpers import FakeBlob, directional_fd, make_layer, numpy_forward, real_ab, real_rgb_crops
from layers import colorization_layers as CL


def torch_forward(layer, bottoms, dtype=torch.float32):
    return layer.forward_torch([torch.as_tensor(np.asarray(b), dtype=dtype) for b in bottoms])


def both_paths(cls, param_str, bottoms, atol=1e-6):
    """Run the numpy path and the torch path; assert they agree; return (layer, top blobs)."""
    layer, bottom, top = numpy_forward(cls, param_str, bottoms)
    outs = torch_forward(layer, bottoms)
    assert len(outs) == len(top)
    for t, o in zip(top, outs):
        assert t.data.shape == tuple(o.shape)
        assert np.allclose(t.data, o.numpy(), atol=atol, rtol=1e-6)
    return layer, bottom, top


def test_layers_subclass_the_caffe_layer_base():
    for name in ("BGR2LabLayer", "NNEncLayer", "NonGrayMaskLayer", "PriorBoostLayer", "ClassRebalanceMultLayer",
                 "SoftmaxCrossEntropyLossLayer", "AnnealedMeanLayer", "BilinearUpsampleLayer"):
        cls = getattr(CL, name)
        assert issubclass(cls, CL._CaffeLayer)
        assert callable(cls.forward_torch) and callable(cls.backward_torch)
    if CL.caffe is not None and hasattr(CL.caffe, "Layer"):
        assert CL._CaffeLayer is CL.caffe.Layer


# ---- data preparation layers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgb():
    return real_rgb_crops(3, 32, stride=4, seed=1)                       # N x H x W x 3 uint8


def test_bgr2lab(rgb):
    bgr = rgb[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)        # the Data blob
    _, _, top = both_paths(CL.BGR2LabLayer, "", [bgr], atol=1e-4)
    assert top[0].shape == (3, 3, 32, 32)
    assert np.abs(top[0].data - color.rgb2lab(rgb).transpose(0, 3, 1, 2)).max() < 1e-3


@pytest.mark.parametrize("param_str,k", [("", 5), ('{"k": 10, "sigma": 5}', 10), ('{"k": 3, "sigma": 2.5}', 3)])
def test_nnenc(param_str, k):
    ab = real_ab(2, 20, seed=2)
    layer, _, top = both_paths(CL.NNEncLayer, param_str, [ab])
    enc = top[0].data
    assert enc.shape == (2, 313, 20, 20)
    assert np.allclose(enc.sum(1), 1, atol=1e-5)
    assert ((enc > 0).sum(1) <= k).all() and ((enc > 0).sum(1) == k).mean() > 0.95
    assert layer.k == k
    sigma = json.loads(param_str).get("sigma", 5) if param_str else 5
    assert np.allclose(enc, cic.soft_encode(ab, k=k, sigma=sigma), atol=1e-7)
    # argmax is the nearest bin (brute force)
    c = cic.load_bins().astype(np.float64)
    pts = ab.reshape(2, 2, -1).transpose(0, 2, 1).astype(np.float64)
    nearest = ((pts[:, :, None] - c) ** 2).sum(-1).argmin(-1)
    assert (enc.reshape(2, 313, -1).argmax(1) == nearest).mean() > 0.99


def test_custom_bins_file(tmp_path):
    bins = np.array([[0, 0], [20, 0], [0, 20], [-20, 0], [0, -20], [20, 20]], np.int64)
    path = tmp_path / "bins6.npy"
    np.save(path, bins)
    ab = real_ab(1, 6, seed=9) / 5
    ps = json.dumps({"k": 2, "bins": str(path)})
    layer, _, top = both_paths(CL.NNEncLayer, ps, [ab])
    assert layer.q == 6 and top[0].shape == (1, 6, 6, 6)
    assert np.allclose(top[0].data, cic.soft_encode(ab, k=2, centers=bins), atol=1e-7)
    _, _, top2 = both_paths(CL.AnnealedMeanLayer, json.dumps({"bins": str(path)}), [top[0].data])
    assert top2[0].shape == (1, 2, 6, 6)
    with pytest.raises(ValueError, match="NNEncLayer: param_str key 'k'"):
        make_layer(CL.NNEncLayer, json.dumps({"k": 7, "bins": str(path)}), [ab])


def test_nongray_mask():
    ab = real_ab(3, 8, seed=3)
    ab[1] *= 0.01                                                       # a gray image (|ab| < 5 everywhere)
    _, _, top = both_paths(CL.NonGrayMaskLayer, "", [ab])
    assert top[0].shape == (3, 1, 8, 8)
    assert np.array_equal(top[0].data[:, 0, 0, 0], [1, 0, 1]) and np.all(top[0].data == top[0].data[:, :, :1, :1])
    m = np.abs(ab).reshape(3, -1).max(1)
    _, _, top = both_paths(CL.NonGrayMaskLayer, json.dumps({"threshold": float(m[2]) + 1}), [ab])
    assert np.array_equal(top[0].data[:, 0, 0, 0], [float(m[0] > m[2] + 1), 0, 0])


@pytest.fixture()
def prior_file(tmp_path):
    p = np.random.default_rng(4).gamma(0.5, size=313)
    p /= p.sum()
    path = tmp_path / "prior_probs.npy"
    np.save(path, p)
    return p, path


def test_prior_boost(prior_file):
    p, path = prior_file
    enc = cic.soft_encode(real_ab(2, 12, seed=4), k=5)
    for lam in (0.5, 0.0, 1.0):
        _, _, top = both_paths(CL.PriorBoostLayer, json.dumps({"prior": str(path), "lambda": lam}), [enc])
        w = 1.0 / ((1 - lam) * p + lam / 313)
        w /= (p * w).sum()
        assert top[0].shape == (2, 1, 12, 12)
        assert np.allclose(top[0].data[:, 0], w[enc.argmax(1)], rtol=1e-6)


def test_prior_boost_file_errors(tmp_path, monkeypatch, prior_file):
    p, path = prior_file
    monkeypatch.chdir(path.parent)
    name = "cic_test_cwd_only_prior.npy"          # present in the working directory, not in data/
    np.save(path.parent / name, p)
    assert not (cic.DATA_DIR / name).exists()
    # a relative path is found in the working directory, as Caffe resolves every path of a prototxt
    layer, _, _ = make_layer(CL.PriorBoostLayer, json.dumps({"prior": name}), [np.zeros((1, 313, 2, 2))])
    w = 1.0 / (0.5 * p + 0.5 / 313)
    assert np.allclose(np.asarray(layer.weights), w / (p * w).sum())
    # missing: one line naming the layer, the key and both places tried (working directory, data/)
    with pytest.raises(FileNotFoundError) as e:
        make_layer(CL.PriorBoostLayer, '{"prior": "missing_prior.npy"}', [np.zeros((1, 313, 2, 2))])
    msg = str(e.value)
    assert "PriorBoostLayer" in msg and "'prior'" in msg
    assert str(path.parent / "missing_prior.npy") in msg and str(cic.DATA_DIR / "missing_prior.npy") in msg
    with pytest.raises(ValueError, match="PriorBoostLayer.*'lambda'"):
        make_layer(CL.PriorBoostLayer, json.dumps({"prior": str(path), "lambda": 2}), [np.zeros((1, 313, 2, 2))])
    with pytest.raises(ValueError, match="PriorBoostLayer"):   # encoding with the wrong number of bins
        make_layer(CL.PriorBoostLayer, json.dumps({"prior": str(path)}), [np.zeros((1, 300, 2, 2))])


def test_data_layers_have_no_gradient(prior_file):
    _, path = prior_file
    cases = [(CL.BGR2LabLayer, "", [np.full((1, 3, 4, 4), 100.0)]),
             (CL.NNEncLayer, "", [np.ones((1, 2, 4, 4))]),
             (CL.NonGrayMaskLayer, "", [np.ones((1, 2, 4, 4))]),
             (CL.PriorBoostLayer, json.dumps({"prior": str(path)}), [np.ones((1, 313, 4, 4))])]
    for cls, ps, bottoms in cases:
        layer, bottom, top = numpy_forward(cls, ps, bottoms)
        top[0].diff[...] = 1
        bottom[0].diff[...] = 7
        layer.backward(top, [True], bottom)
        assert np.all(bottom[0].diff == 7), cls.__name__
        tb = [torch.as_tensor(b.data) for b in bottom]
        assert layer.backward_torch([torch.ones(top[0].shape)], [True], tb) == [None]


# ---- training layers with a backward ---------------------------------------------------------------------


def test_class_rebalance_mult():
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(2, 313, 3, 4)).astype(np.float32)
    w = rng.random((2, 1, 3, 4)).astype(np.float32)
    layer, bottom, top = both_paths(CL.ClassRebalanceMultLayer, "", [scores, w])
    assert np.array_equal(top[0].data, scores)
    g = rng.normal(size=scores.shape).astype(np.float32)
    top[0].diff[...] = g
    bottom[1].diff[...] = 3
    layer.backward(top, [True, False], bottom)
    assert np.allclose(bottom[0].diff, g * w)
    assert np.all(bottom[1].diff == 3)                                  # no gradient to the weights
    d = layer.backward_torch([torch.tensor(g)], [True, True], [torch.tensor(scores), torch.tensor(w)])
    assert d[1] is None and np.allclose(d[0].numpy(), g * w)
    inp = torch.tensor(scores)
    out = layer.forward_torch([inp, torch.tensor(w)])[0]
    assert torch.equal(out, inp) and out.data_ptr() != inp.data_ptr()  # a copy, as the released layer made
    with pytest.raises(ValueError, match="ClassRebalanceMultLayer"):
        make_layer(CL.ClassRebalanceMultLayer, "", [scores, w[:, :, :2]])


def _np_loss(z, t):
    zs = z - z.max(1, keepdims=True)
    logp = zs - np.log(np.exp(zs).sum(1, keepdims=True))
    return -(t * logp).sum() / z.shape[0]


def test_softmax_cross_entropy_loss_value_and_gradient():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(2, 313, 3, 3)) * 3
    t = cic.soft_encode(real_ab(2, 3, seed=6).astype(np.float64), k=5)
    layer, bottom, top = both_paths(CL.SoftmaxCrossEntropyLossLayer, "", [z, t], atol=1e-3)
    assert top[0].shape == (1,)
    assert np.isclose(top[0].data[0], _np_loss(z, t), rtol=1e-5)
    # numpy path backward, loss_weight 2 in the top diff
    top[0].diff[...] = 2.0
    layer.backward(top, [True, False], bottom)
    # finite differences of 2 * loss (float64), along random directions
    zt, tt = torch.tensor(z), torch.tensor(t)
    g = layer.backward_torch([torch.tensor([2.0], dtype=torch.float64)], [True, False], [zt, tt])
    assert g[1] is None
    for s in range(3):
        v = np.random.default_rng(10 + s).normal(size=z.shape)
        fd = directional_fd(lambda x: 2 * float(layer.forward_torch([torch.tensor(x), tt])[0][0]), z, v)
        assert np.isclose((g[0].numpy() * v).sum(), fd, rtol=1e-6, atol=1e-8)
    assert np.allclose(bottom[0].diff, g[0].numpy(), atol=1e-6)
    # the released normalization: (softmax - target) * loss_weight / N
    sm = np.exp(z - z.max(1, keepdims=True))
    sm /= sm.sum(1, keepdims=True)
    assert np.allclose(g[0].numpy(), (sm - t) * 2.0 / 2)


def test_annealed_mean_forward_and_gradient():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(1, 313, 2, 3)) * 2
    for T in (0.38, 1.0):
        layer, bottom, top = both_paths(CL.AnnealedMeanLayer, json.dumps({"T": T}), [z], atol=1e-4)
        e = np.exp(z / T - (z / T).max(1, keepdims=True))
        ref = np.einsum("nqhw,qc->nchw", e / e.sum(1, keepdims=True), cic.load_bins().astype(np.float64))
        assert top[0].shape == (1, 2, 2, 3) and np.allclose(top[0].data, ref, atol=1e-3)
        zt = torch.tensor(z)
        gy = rng.normal(size=(1, 2, 2, 3))
        g = layer.backward_torch([torch.tensor(gy)], [True], [zt])[0]
        v = rng.normal(size=z.shape)
        fd = directional_fd(lambda x: float((layer.forward_torch([torch.tensor(x)])[0].numpy() * gy).sum()), z, v)
        assert np.isclose((g.numpy() * v).sum(), fd, rtol=1e-6, atol=1e-8)
    layer, _, top = both_paths(CL.AnnealedMeanLayer, '{"T": 0}', [z])
    assert np.allclose(top[0].data, cic.decode_mode(z))
    assert layer.backward_torch([torch.ones(1, 2, 2, 3)], [True], [torch.tensor(z)]) == [None]


def test_bilinear_upsample_hand_case_and_second_bottom():
    x = np.array([[[[0.0, 1.0], [2.0, 3.0]]]], np.float32)
    f = np.array([0.0, 0.25, 0.75, 1.0])                                # half-pixel centres, edges clamped
    _, _, top = both_paths(CL.BilinearUpsampleLayer, '{"size": [4, 4]}', [x])
    assert np.allclose(top[0].data[0, 0], 2 * f[:, None] + f[None, :])
    ref = np.zeros((1, 7, 4, 4), np.float32)
    _, _, top2 = both_paths(CL.BilinearUpsampleLayer, "", [x, ref])
    assert np.array_equal(top2[0].data, top[0].data)
    # align_corners: the corners map to the corners
    _, _, top3 = both_paths(CL.BilinearUpsampleLayer, '{"size": [3, 3], "align_corners": true}', [x])
    assert np.allclose(top3[0].data[0, 0], [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])


def test_bilinear_upsample_backward_is_the_adjoint():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 3, 5, 7))
    layer, bottom, top = both_paths(CL.BilinearUpsampleLayer, '{"size": [11, 13]}', [x], atol=1e-5)
    y = rng.normal(size=(2, 3, 11, 13))
    gx = layer.backward_torch([torch.tensor(y)], [True], [torch.tensor(x)])[0].numpy()
    ux = layer.forward_torch([torch.tensor(x)])[0].numpy()
    assert np.isclose((ux * y).sum(), (x * gx).sum(), rtol=1e-10)       # <U x, y> = <x, U^T y>
    v = rng.normal(size=x.shape)
    fd = directional_fd(lambda a: float((layer.forward_torch([torch.tensor(a)])[0].numpy() * y).sum()), x, v)
    assert np.isclose((gx * v).sum(), fd, rtol=1e-6)
    top[0].diff[...] = y
    layer.backward(top, [True], bottom)
    assert np.allclose(bottom[0].diff, gx, atol=1e-4)
    # with a reference bottom: no gradient to it
    layer2, _, _ = make_layer(CL.BilinearUpsampleLayer, "", [x, np.zeros((2, 1, 11, 13))])
    g = layer2.backward_torch([torch.tensor(y)], [True, True], [torch.tensor(x), torch.zeros(2, 1, 11, 13)])
    assert g[1] is None and np.allclose(g[0].numpy(), gx)


# ---- param_str validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,param_str,bottoms,match", [
    (CL.NNEncLayer, '{"K": 5}', [np.zeros((1, 2, 2, 2))], r"NNEncLayer: unknown param_str key 'K'"),
    (CL.NNEncLayer, '{"k": 0}', [np.zeros((1, 2, 2, 2))], r"NNEncLayer: param_str key 'k'"),
    (CL.NNEncLayer, '{"k": 2.5}', [np.zeros((1, 2, 2, 2))], r"NNEncLayer: param_str key 'k'"),
    (CL.NNEncLayer, '{"sigma": -1}', [np.zeros((1, 2, 2, 2))], r"NNEncLayer: param_str key 'sigma'"),
    (CL.NNEncLayer, '{"bins": "no_such_bins.npy"}', [np.zeros((1, 2, 2, 2))], r"NNEncLayer.*'bins'.*no_such"),
    (CL.NNEncLayer, "{k: 5}", [np.zeros((1, 2, 2, 2))], r"NNEncLayer: param_str is not valid JSON"),
    (CL.NNEncLayer, "[5]", [np.zeros((1, 2, 2, 2))], r"NNEncLayer: param_str must be a JSON object"),
    (CL.NonGrayMaskLayer, '{"threshold": "5"}', [np.zeros((1, 2, 2, 2))], r"NonGrayMaskLayer.*'threshold'"),
    (CL.AnnealedMeanLayer, '{"T": -0.1}', [np.zeros((1, 313, 2, 2))], r"AnnealedMeanLayer.*'T'"),
    (CL.AnnealedMeanLayer, '{"t": 0.38}', [np.zeros((1, 313, 2, 2))], r"AnnealedMeanLayer.*key 't'"),
    (CL.BGR2LabLayer, '{"x": 1}', [np.zeros((1, 3, 2, 2))], r"BGR2LabLayer: unknown param_str key 'x'"),
    (CL.BilinearUpsampleLayer, '{"size": [4]}', [np.zeros((1, 2, 2, 2))], r"BilinearUpsampleLayer.*'size'"),
    (CL.BilinearUpsampleLayer, '{"size": [4, 0]}', [np.zeros((1, 2, 2, 2))], r"BilinearUpsampleLayer.*'size'"),
    (CL.BilinearUpsampleLayer, "", [np.zeros((1, 2, 2, 2))], r"BilinearUpsampleLayer.*either"),
    (CL.BilinearUpsampleLayer, '{"size": [4, 4]}', [np.zeros((1, 2, 2, 2))] * 2, r"BilinearUpsampleLayer.*either"),
    (CL.BilinearUpsampleLayer, '{"size": [4, 4], "align_corners": 1}', [np.zeros((1, 2, 2, 2))],
     r"'align_corners'"),
    (CL.BGR2LabLayer, "", [np.zeros((1, 2, 2, 2))], r"BGR2LabLayer: bottom\[0\] must be N x 3 x H x W"),
    (CL.SoftmaxCrossEntropyLossLayer, "", [np.zeros((1, 313, 2, 2))], r"SoftmaxCrossEntropyLossLayer: expected 2"),
    (CL.SoftmaxCrossEntropyLossLayer, "", [np.zeros((1, 313, 2, 2)), np.zeros((1, 313, 2, 3))],
     r"SoftmaxCrossEntropyLossLayer: scores and target"),
])
def test_bad_params_and_shapes(cls, param_str, bottoms, match):
    with pytest.raises(ValueError, match=match):
        make_layer(cls, param_str, bottoms)


def test_empty_param_str_and_defaults():
    layer, _, _ = make_layer(CL.NNEncLayer, "", [np.zeros((1, 2, 2, 2))])
    assert (layer.k, layer.sigma) == (5, 5.0)
    layer, _, _ = make_layer(CL.AnnealedMeanLayer, "  ", [np.zeros((1, 313, 2, 2))])
    assert layer.T == 0.38
    layer, _, _ = make_layer(CL.NonGrayMaskLayer, "{}", [np.zeros((1, 2, 2, 2))])
    assert layer.threshold == 5.0


def test_fake_blob_reshape_keeps_numpy_semantics():
    b = FakeBlob(shape=(2, 3))
    b.reshape(1, 2, 3, 4)
    assert b.shape == (1, 2, 3, 4) and b.count == 24 and (b.num, b.channels, b.height, b.width) == (1, 2, 3, 4)


def test_prototxt_prior_resolves_in_a_second_checkout_not_the_installed_toolkit(tmp_path, monkeypatch):
    """Issue 10 item 8: a user in another clone, with its own data/prior_probs.npy, gets that file -- the
    committed prototxt names the prior relative to the working directory, as Caffe resolves every path."""
    from google.protobuf import text_format
    from torchcaffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    text_format.Merge((cic.DATA_DIR.parent / "prototxt" / "colorization_train_val.prototxt").read_text(), net)
    param_str = [l.python_param.param_str for l in net.layer if l.python_param.layer == "PriorBoostLayer"][0]
    clone = tmp_path / "second_clone"
    (clone / "data").mkdir(parents=True)
    p = np.random.default_rng(11).gamma(0.5, size=313)
    p /= p.sum()
    np.save(clone / "data" / "prior_probs.npy", p)
    monkeypatch.chdir(clone)
    layer, _, _ = make_layer(CL.PriorBoostLayer, param_str, [np.zeros((1, 313, 2, 2))])
    w = 1.0 / (0.5 * p + 0.5 / 313)
    assert np.allclose(np.asarray(layer.weights), w / (p * w).sum())
    monkeypatch.chdir(tmp_path)                        # elsewhere, with no prior: both places in the error
    with pytest.raises(FileNotFoundError) as e:
        make_layer(CL.PriorBoostLayer, param_str, [np.zeros((1, 313, 2, 2))])
    assert str(tmp_path / "data" / "prior_probs.npy") in str(e.value)
    assert str(cic.DATA_DIR / "data" / "prior_probs.npy") in str(e.value)
