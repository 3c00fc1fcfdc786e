"""Caffe-specific behaviour of the built-in layers: rounding rules, tie breaking, special cases, normalisers,
parameter checks and in-place use, each against an independent statement of what Caffe 1.0 does."""
import math

import numpy as np
import pytest
import torch

from layer_helpers import TEST, TRAIN, blob, close, make_layer, run
from torchcaffe.blob import Blob
from torchcaffe.layer import LayerError

rng = np.random.RandomState(99)
FLT_MAX = float(np.finfo(np.float32).max)


# -- Pooling --------------------------------------------------------------------------------------------------
def caffe_pool(x, k, s, p, mode):
    """Caffe 1.0's pooling_layer.cpp loops, written out in NumPy (forward, argmax mask, AVE divisors)."""
    N, C, H, W = x.shape
    oh = int(math.ceil(np.float32(H + 2 * p[0] - k[0]) / np.float32(s[0]))) + 1
    ow = int(math.ceil(np.float32(W + 2 * p[1] - k[1]) / np.float32(s[1]))) + 1
    if p[0] or p[1]:
        if (oh - 1) * s[0] >= H + p[0]:
            oh -= 1
        if (ow - 1) * s[1] >= W + p[1]:
            ow -= 1
    y = np.zeros((N, C, oh, ow))
    mask = -np.ones((N, C, oh, ow))
    for n in range(N):
        for c in range(C):
            for ph in range(oh):
                for pw in range(ow):
                    hs, ws = ph * s[0] - p[0], pw * s[1] - p[1]
                    if mode == "MAX":
                        he, we = min(hs + k[0], H), min(ws + k[1], W)
                        hs, ws = max(hs, 0), max(ws, 0)
                        best = -FLT_MAX
                        for h in range(hs, he):
                            for w in range(ws, we):
                                if x[n, c, h, w] > best:
                                    best, mask[n, c, ph, pw] = x[n, c, h, w], h * W + w
                        y[n, c, ph, pw] = best
                    else:
                        he, we = min(hs + k[0], H + p[0]), min(ws + k[1], W + p[1])
                        size = (he - hs) * (we - ws)
                        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
                        with np.errstate(invalid="ignore"):  # an empty window: 0 / 0, as in Caffe
                            y[n, c, ph, pw] = x[n, c, hs:he, ws:we].sum() / size
    return y, mask


@pytest.mark.parametrize("k,s,p", [((3, 3), (2, 2), (0, 0)), ((2, 2), (2, 2), (1, 1)), ((3, 3), (2, 2), (1, 1)),
                                   ((3, 2), (1, 2), (2, 1)), ((2, 2), (3, 3), (0, 0)), ((1, 1), (3, 3), (0, 0)),
                                   ((4, 4), (3, 3), (2, 2)), ((3, 3), (1, 1), (0, 0))])
@pytest.mark.parametrize("mode", ["MAX", "AVE"])
def test_pooling_matches_caffe_loops(k, s, p, mode):
    x = np.round(rng.randn(2, 2, 7, 9), 1)  # rounding creates ties
    text = (f'type: "Pooling" pooling_param {{ pool: {mode} kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} '
            f'stride_w: {s[1]} pad_h: {p[0]} pad_w: {p[1]} }}')
    layer = make_layer(text)
    ntops = 2 if mode == "MAX" else 1
    tops = run(layer, [blob(x)], ntops=ntops)
    y, mask = caffe_pool(x, k, s, p, mode)
    assert tops[0].shape == y.shape
    close(tops[0].data, y, rtol=1e-12, name="pooled")
    if mode == "MAX":
        np.testing.assert_array_equal(tops[1].data, mask)
        # the gradient goes to the first maximum of each window
        g = rng.randn(*y.shape)
        tops[0].diff_t = torch.from_numpy(g)
        bl = [blob(x)]
        layer2 = make_layer(text)
        t2 = run(layer2, bl, ntops=2)
        t2[0].diff_t = torch.from_numpy(g)
        layer2.backward(t2, [True], bl)
        expect = np.zeros(x.size).reshape(2, 2, -1)
        for n in range(2):
            for c in range(2):
                for idx, gv in zip(mask[n, c].ravel(), g[n, c].ravel()):
                    if idx >= 0:
                        expect[n, c, int(idx)] += gv
        close(bl[0].diff, expect.reshape(x.shape), rtol=1e-12, name="max-pool gradient")


def test_pooling_global_and_errors():
    x = rng.randn(2, 3, 5, 4)
    t = run(make_layer('type: "Pooling" pooling_param { pool: AVE global_pooling: true }'), [blob(x)])
    close(t[0].data, x.mean(axis=(2, 3), keepdims=True), rtol=1e-12)
    t = run(make_layer('type: "Pooling" pooling_param { pool: MAX global_pooling: true }'), [blob(x)])
    close(t[0].data, x.max(axis=(2, 3), keepdims=True), rtol=1e-12)
    for text, msg in [
        ('pooling_param { pool: STOCHASTIC kernel_size: 3 pad: 1 }', "Padding implemented only"),
        ('pooling_param { pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2 }', "kernel_size OR"),
        ('pooling_param { pool: MAX global_pooling: true kernel_size: 2 }', "Global_pooling"),
        ('pooling_param { pool: MAX kernel_size: 2 pad: 2 }', "pad"),
        ('pooling_param { pool: MAX }', "kernel"),
    ]:
        with pytest.raises(LayerError, match=msg):
            run(make_layer(f'name: "p" type: "Pooling" {text}'), [blob(x)])
    with pytest.raises(LayerError, match="mask"):
        run(make_layer('type: "Pooling" pooling_param { pool: AVE kernel_size: 2 }'), [blob(x)], ntops=2)


# -- Convolution / Deconvolution ------------------------------------------------------------------------------
def test_convolution_matches_explicit_sum_and_shapes():
    x = rng.randn(1, 4, 7, 6)
    layer = make_layer('type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 stride: 2 pad: 2 '
                       'dilation: 2 group: 2 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
    t = run(layer, [blob(x)])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert w.shape == (2, 2, 3, 3) and b.shape == (2,)
    oh, ow = (7 + 4 - 5) // 2 + 1, (6 + 4 - 5) // 2 + 1
    assert t[0].shape == (1, 2, oh, ow)
    xp = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    y = np.zeros((1, 2, oh, ow))
    for o in range(2):
        g = o  # one output per group
        for i in range(oh):
            for j in range(ow):
                patch = xp[0, 2 * g:2 * g + 2, 2 * i:2 * i + 5:2, 2 * j:2 * j + 5:2]
                y[0, o, i, j] = (patch * w[o]).sum() + b[o]
    close(t[0].data, y, rtol=1e-10)


def test_deconvolution_shapes_and_layout():
    x = rng.randn(2, 6, 3, 4)
    layer = make_layer('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 '
                       'group: 2 weight_filler { type: "gaussian" } }')
    t = run(layer, [blob(x)])
    assert layer.blobs[0].shape == (6, 2, 4, 4)  # (C_in, num_output / group, k, k)
    assert t[0].shape == (2, 4, 2 * 2 + 4 - 2, 2 * 3 + 4 - 2)
    # deconvolution is the adjoint of the matching convolution: <deconv(x), y> = <x, conv(y)>
    yv = rng.randn(*t[0].shape)
    conv = make_layer('type: "Convolution" convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 '
                      'group: 2 bias_term: false }')
    c = run(conv, [blob(yv)])
    conv.blobs[0].data_t = layer.blobs[0].data_t.clone()
    conv.forward([blob(yv)], c)
    lhs = (t[0].data - layer.blobs[1].data.reshape(1, -1, 1, 1)) * yv
    close(lhs.sum(), (x * c[0].data).sum(), rtol=1e-10)


def test_convolution_parameter_errors():
    x = blob(rng.randn(1, 4, 5, 5))
    for conv, msg in [("num_output: 2", "kernel_size"),
                      ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
                      ("num_output: 3 kernel_size: 3 group: 2", "group"),
                      ("num_output: 2 kernel_size: 3 group: 3", "group"),
                      ("num_output: 2 kernel_size: 3 axis: 4", "axis"),
                      ("kernel_size: 3", "num_output"),
                      ("num_output: 2 kernel_size: 3 stride: 1 stride: 2 stride: 3", "stride")]:
        with pytest.raises(LayerError, match=msg):
            run(make_layer(f'name: "c" type: "Convolution" convolution_param {{ {conv} }}'), [x])


def test_inline_blobs_skip_fillers():
    """Caffe skips the fillers when the weights are given in the layer (the net copies them)."""
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    layer = make_layer('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 '
                       'weight_filler { type: "gaussian" } } blobs { shape { dim: 2 dim: 1 dim: 1 dim: 1 } } '
                       'blobs { shape { dim: 2 } }')
    run(layer, [blob(rng.randn(1, 1, 2, 2))])
    assert [b.shape for b in layer.blobs] == [(2, 1, 1, 1), (2,)]
    assert torch.equal(torch.rand(3), a)  # no random number was drawn


# -- neurons --------------------------------------------------------------------------------------------------
def test_relu_gradient_at_zero_is_the_slope():
    layer = make_layer('type: "ReLU" relu_param { negative_slope: 0.25 }')
    bl = [blob([-1.0, 0.0, 2.0])]
    t = run(layer, bl)
    np.testing.assert_array_equal(t[0].data, [-0.25, 0.0, 2.0])
    t[0].diff_t = torch.ones(3, dtype=torch.float64)
    layer.backward(t, [True], bl)
    np.testing.assert_array_equal(bl[0].diff, [0.25, 0.25, 1.0])


@pytest.mark.parametrize("power,scale,shift", [(0, 2, 1), (2, 0, 3), (0, 0, 2), (1, 2, 3), (2, 1.5, 0.5),
                                               (3, 2, 0), (0.5, 1, 2)])
def test_power_special_cases(power, scale, shift):
    x = np.array([0.5, 1.0, 2.0, 3.0])
    layer = make_layer(f'type: "Power" power_param {{ power: {power} scale: {scale} shift: {shift} }}')
    bl = [blob(x)]
    t = run(layer, bl)
    expect = np.full_like(x, 1.0 if power == 0 else shift ** power) if power * scale == 0 else \
        (shift + scale * x) ** power
    close(t[0].data, expect, rtol=1e-12)
    g = np.array([1.0, -2.0, 0.5, 3.0])
    t[0].diff_t = torch.from_numpy(g)
    layer.backward(t, [True], bl)
    dexp = np.zeros_like(x) if power * scale == 0 else g * power * scale * (shift + scale * x) ** (power - 1)
    close(bl[0].diff, dexp, rtol=1e-12)


def test_dropout_statistics_and_scale():
    torch.manual_seed(3)
    x = np.ones((200, 100))
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', TRAIN)
    bl = [blob(x, dtype=torch.float32)]
    t = run(layer, bl)
    y = t[0].data
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], np.float32(1 / 0.7), rtol=1e-7)
    t[0].diff_t = torch.full((200, 100), 2.0)
    layer.backward(t, [True], bl)
    np.testing.assert_allclose(bl[0].diff, np.where(kept, 2 * np.float32(1 / 0.7), 0), rtol=1e-6)
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', TEST)
    np.testing.assert_array_equal(run(layer, [blob(x)])[0].data, x)


def test_threshold_and_absval_in_place():
    t = run(make_layer('type: "Threshold" threshold_param { threshold: 0.5 }'), [blob([0.2, 0.5, 0.7])])
    np.testing.assert_array_equal(t[0].data, [0, 0, 1])
    b = blob([1.0, -2.0])
    with pytest.raises(LayerError, match="in-place"):
        run(make_layer('type: "AbsVal"'), [b], tops=[b])


@pytest.mark.parametrize("text", ['type: "ReLU" relu_param { negative_slope: 0.1 }', 'type: "Sigmoid"',
                                  'type: "TanH"', 'type: "Scale" scale_param { bias_term: true '
                                  'filler { type: "gaussian" } bias_filler { type: "gaussian" } }',
                                  'type: "BatchNorm"', 'type: "Dropout"', 'type: "Power" power_param { power: 2 }',
                                  'type: "ELU"', 'type: "BNLL"'])
def test_in_place_equals_out_of_place(text):
    """top == bottom (one Blob): the forward value and the gradient w.r.t. the layer input are unchanged."""
    x = rng.randn(2, 3, 2, 2)
    g = rng.randn(2, 3, 2, 2)
    results = []
    for inplace in (False, True):
        torch.manual_seed(11)
        layer = make_layer(text, TRAIN)
        b = blob(x)
        tops = [b] if inplace else None
        t = run(layer, [b], tops=tops)
        y = t[0].data.copy()
        t[0].diff_t = torch.from_numpy(g)
        layer.backward(t, [True], [b])
        results.append((y, b.diff.copy()))
    close(results[1][0], results[0][0], rtol=1e-12)
    close(results[1][1], results[0][1], rtol=1e-12)


# -- BatchNorm ------------------------------------------------------------------------------------------------
def test_batchnorm_statistics_update_and_global_use():
    x = rng.randn(4, 3, 2, 5) * 3 + 2
    layer = make_layer('type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 }', TRAIN)
    bl = [blob(x)]
    t = run(layer, bl)
    layer.forward(bl, t)  # a second forward: the statistics accumulate
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=(0, 2, 3))
    var = ((x - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
    close(t[0].data, (x - mean[None, :, None, None]) / np.sqrt(var + 0.001)[None, :, None, None], rtol=1e-10)
    f = np.float32(0.9)
    close(layer.blobs[2].data, [1 * f + 1], rtol=1e-7)
    close(layer.blobs[0].data, mean * f + mean, rtol=1e-7)
    close(layer.blobs[1].data, (var * m / (m - 1)) * f + var * m / (m - 1), rtol=1e-7)
    # TEST: mean = b0 / b2, var = b1 / b2
    test = make_layer('type: "BatchNorm" batch_norm_param { eps: 0.001 }', TEST)
    tt = run(test, [blob(x)])
    for src, dst in zip(layer.blobs, test.blobs):
        dst.data_t = src.data_t.clone()
    test.forward([blob(x)], tt)
    s = 1 / layer.blobs[2].data[0]
    close(tt[0].data, (x - (layer.blobs[0].data * s)[None, :, None, None])
          / np.sqrt(layer.blobs[1].data * s + 0.001)[None, :, None, None], rtol=1e-7)
    # a zero scale factor means zero statistics
    fresh = make_layer('type: "BatchNorm"', TEST)
    close(run(fresh, [blob(x)])[0].data, x / np.sqrt(np.float32(1e-5)), rtol=1e-6)


# -- Eltwise, ArgMax, Accuracy, losses ------------------------------------------------------------------------
def test_eltwise_max_ties_follow_caffe():
    a, b, c = [blob(v) for v in ([1.0, 2.0, 5.0], [1.0, 3.0, 5.0], [0.0, 3.0, 5.0])]
    layer = make_layer('type: "Eltwise" eltwise_param { operation: MAX }')
    t = run(layer, [a, b, c])
    np.testing.assert_array_equal(t[0].data, [1, 3, 5])
    t[0].diff_t = torch.ones(3, dtype=torch.float64)
    layer.backward(t, [True, True, True], [a, b, c])
    # a tie of bottoms 0 and 1 goes to 1; a later bottom must be strictly greater
    np.testing.assert_array_equal(a.diff, [0, 0, 0])
    np.testing.assert_array_equal(b.diff, [1, 1, 1])
    np.testing.assert_array_equal(c.diff, [0, 0, 0])
    with pytest.raises(LayerError, match="coefficient"):
        run(make_layer('type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }'), [a, b])
    with pytest.raises(LayerError, match="one coefficient per bottom"):
        run(make_layer('type: "Eltwise" eltwise_param { coeff: 1 }'), [a, b])


def test_argmax_ties_and_layouts():
    x = np.array([[1.0, 3.0, 3.0, 0.0, 2.0], [5.0, 5.0, 1.0, 5.0, 0.0]])
    t = run(make_layer('type: "ArgMax" argmax_param { top_k: 2 }'), [blob(x)])
    assert t[0].shape == (2, 1, 2)
    np.testing.assert_array_equal(t[0].data.reshape(2, 2), [[2, 1], [3, 1]])  # larger index first on ties
    t = run(make_layer('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }'), [blob(x)])
    assert t[0].shape == (2, 2, 2)
    np.testing.assert_array_equal(t[0].data, [[[2, 1], [3, 3]], [[3, 1], [5, 5]]])
    x3 = rng.randn(2, 4, 3)
    t = run(make_layer('type: "ArgMax" argmax_param { axis: 1 }'), [blob(x3)])
    np.testing.assert_array_equal(t[0].data, x3.argmax(axis=1)[:, None, :])
    t = run(make_layer('type: "ArgMax" argmax_param { axis: 1 out_max_val: true top_k: 2 }'), [blob(x3)])
    np.testing.assert_array_equal(t[0].data, -np.sort(-x3, axis=1)[:, :2, :])


def test_accuracy_top_k_ties_ignore_and_per_class():
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [0.9, 0.0, 0.05, 0.05], [0.3, 0.2, 0.4, 0.1], [0.0, 0.0, 1.0, 0.0]])
    labels = np.array([1.0, 0.0, 0.0, 3.0])
    t = run(make_layer('type: "Accuracy"'), [blob(scores), blob(labels)], ntops=2, need_backward=False)
    # sample 0: label 1 ties with class 2 -> counts against it (Caffe's >= rule); sample 1 correct
    close(t[0].data, 1 / 4, rtol=1e-12)
    np.testing.assert_allclose(t[1].data, [0.5, 0.0, 0.0, 0.0])
    t = run(make_layer('type: "Accuracy" accuracy_param { top_k: 2 ignore_label: 3 }'), [blob(scores), blob(labels)],
            need_backward=False)
    close(t[0].data, 3 / 3, rtol=1e-12)
    t = run(make_layer('type: "Accuracy" accuracy_param { ignore_label: 0 }'), [blob(scores[1:2]), blob([0.0])],
            need_backward=False)
    assert float(t[0].data) == 0.0


def test_softmax_loss_normalizers_and_flt_min():
    x = np.array([[[0.0, 200.0]], [[1.0, 2.0]], [[3.0, 0.0]]]).transpose(1, 2, 0)  # (1, 2, 3): 3 pixels
    x = np.concatenate([x, x], axis=0)  # N = 2
    label = np.array([[0, 1, 1], [2, 2, 0]], dtype=np.float64)  # label 2 = ignored
    prob = np.exp(x - x.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    picked = [prob[0, 0, 0], prob[0, 1, 1], prob[0, 1, 2], prob[1, 0, 2]]
    nll = -sum(np.log(max(p, float(np.finfo(np.float32).tiny))) for p in picked)
    for norm, d in [("VALID", 4), ("FULL", 6), ("BATCH_SIZE", 2), ("NONE", 1)]:
        layer = make_layer(f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: 2 normalization: {norm} }}')
        t = run(layer, [blob(x), blob(label)])
        close(t[0].data, nll / d, rtol=1e-10, name=norm)
    layer = make_layer('type: "SoftmaxWithLoss" loss_param { ignore_label: 2 normalize: false }')
    close(run(layer, [blob(x), blob(label)])[0].data, nll / 2, rtol=1e-10)
    # every label ignored: normalizer max(1, 0) = 1 and loss 0
    layer = make_layer('type: "SoftmaxWithLoss" loss_param { ignore_label: 2 }')
    assert float(run(layer, [blob(x), blob(np.full((2, 3), 2.0))])[0].data) == 0.0
    with pytest.raises(LayerError, match="out of range"):
        run(make_layer('type: "SoftmaxWithLoss"'), [blob(x), blob(np.full((2, 3), 5.0))])
    with pytest.raises(LayerError, match="Number of labels"):
        run(make_layer('type: "SoftmaxWithLoss"'), [blob(x), blob(np.zeros((2, 2)))])


def test_euclidean_and_cross_entropy_values():
    a, b = rng.randn(3, 4), rng.randn(3, 4)
    t = run(make_layer('type: "EuclideanLoss"'), [blob(a), blob(b)])
    close(t[0].data, ((a - b) ** 2).sum() / 3 / 2, rtol=1e-12)
    s = rng.randn(2, 3, 2, 2)
    q = np.abs(rng.randn(2, 3, 2, 2))
    q /= q.sum(axis=1, keepdims=True)
    layer = make_layer('type: "SoftmaxCrossEntropyLoss"')
    bl = [blob(s), blob(q)]
    t = run(layer, bl)
    logp = s - s.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    close(t[0].data, -(q * logp).sum() / 2, rtol=1e-12)
    t[0].diff_t = torch.tensor(3.0, dtype=torch.float64)
    layer.backward(t, [True, False], bl)
    close(bl[0].diff, (np.exp(logp) - q) * 3 / 2, rtol=1e-12)
    with pytest.raises(LayerError, match="label"):
        layer.backward(t, [True, True], bl)
    assert not layer.allow_force_backward(1)


def test_scale_defaults_and_blob_layout():
    x = rng.randn(2, 3, 4)
    layer = make_layer('type: "Scale" scale_param { bias_term: true }')
    t = run(layer, [blob(x)])
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    np.testing.assert_array_equal(layer.blobs[0].data, 1)  # default filler: constant 1
    np.testing.assert_array_equal(layer.blobs[1].data, 0)
    close(t[0].data, x, rtol=0)
    layer = make_layer('type: "Scale" scale_param { bias_term: true }')
    run(layer, [blob(x), blob(rng.randn(3, 4))])
    assert [b.shape for b in layer.blobs] == [(3, 4)]  # the bias alone
    with pytest.raises(LayerError, match="dimension mismatch"):
        run(make_layer('type: "Scale"'), [blob(x), blob(rng.randn(4))])


def test_concat_slice_reshape_flatten_crop_shapes():
    t = run(make_layer('type: "Slice" slice_param { axis: 1 slice_point: 2 }'), [blob(rng.randn(2, 5))], ntops=2)
    assert [b.shape for b in t] == [(2, 2), (2, 3)]
    with pytest.raises(LayerError, match="divisible"):
        run(make_layer('type: "Slice"'), [blob(rng.randn(2, 5))], ntops=2)
    t = run(make_layer('type: "Reshape" reshape_param { shape { dim: -1 dim: 0 } axis: 1 }'), [blob(rng.randn(2, 3, 4))])
    assert t[0].shape == (2, 3, 4)  # 0 copies bottom axis axis + i
    t = run(make_layer('type: "Reshape" reshape_param { shape { dim: 0 dim: 2 dim: -1 } }'), [blob(rng.randn(2, 3, 4))])
    assert t[0].shape == (2, 2, 6)
    t = run(make_layer('type: "Reshape" reshape_param { shape { dim: 1 } axis: -1 num_axes: 0 }'),
            [blob(rng.randn(2, 3))])
    assert t[0].shape == (2, 3, 1)
    t = run(make_layer('type: "Reshape" reshape_param { shape { dim: 6 } axis: 1 num_axes: 2 }'),
            [blob(rng.randn(2, 3, 2, 5))])
    assert t[0].shape == (2, 6, 5)
    t = run(make_layer('type: "Flatten" flatten_param { axis: 1 end_axis: -2 }'), [blob(rng.randn(2, 3, 4, 5))])
    assert t[0].shape == (2, 12, 5)
    x = rng.randn(2, 3, 6, 7)
    t = run(make_layer('type: "Crop" crop_param { axis: 2 offset: 1 }'), [blob(x), blob(np.zeros((1, 1, 4, 4)))])
    np.testing.assert_array_equal(t[0].data, x[:, :, 1:5, 1:5])
    t = run(make_layer('type: "Crop" crop_param { axis: 1 offset: 1 offset: 0 offset: 2 }'),
            [blob(x), blob(np.zeros((1, 2, 4, 4)))])
    np.testing.assert_array_equal(t[0].data, x[:, 1:3, 0:4, 2:6])
    with pytest.raises(LayerError, match="crop"):
        run(make_layer('type: "Crop" crop_param { axis: 2 offset: 3 }'), [blob(x), blob(np.zeros((1, 1, 4, 5)))])


def test_split_shares_data_and_sums_diffs():
    b = blob(rng.randn(2, 3))
    layer = make_layer('type: "Split"')
    tops = run(layer, [b], ntops=3)
    assert all(np.shares_memory(t.data, b.data) for t in tops)
    for i, t in enumerate(tops):
        t.diff_t = torch.full((2, 3), float(i + 1), dtype=torch.float64)
    layer.backward(tops, [True], [b])
    np.testing.assert_array_equal(b.diff, 6.0)
    s = make_layer('type: "Silence"')
    run(s, [b], ntops=0)
    s.backward([], [True], [b])
    np.testing.assert_array_equal(b.diff, 0.0)


def test_inner_product_transpose_layout():
    x = rng.randn(2, 3, 2)
    ip = make_layer('type: "InnerProduct" inner_product_param { num_output: 4 transpose: true '
                    'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
    t = run(ip, [blob(x)])
    assert ip.blobs[0].shape == (6, 4)
    close(t[0].data, x.reshape(2, 6) @ ip.blobs[0].data + ip.blobs[1].data, rtol=1e-12)


# -- input layers ---------------------------------------------------------------------------------------------
def test_input_and_dummy_data():
    t = run(make_layer('type: "Input" input_param { shape { dim: 2 dim: 3 } shape { dim: 4 } }'), [], ntops=2)
    assert [b.shape for b in t] == [(2, 3), (4,)]
    with pytest.raises(LayerError, match="shape"):
        run(make_layer('type: "Input" input_param { shape { dim: 2 } shape { dim: 4 } }'), [], ntops=3)
    torch.manual_seed(0)
    layer = make_layer('type: "DummyData" dummy_data_param { num: 2 channels: 3 height: 4 width: 5 '
                       'num: 1 channels: 1 height: 1 width: 2 '
                       'data_filler { type: "constant" value: 7 } data_filler { type: "uniform" min: 2 max: 3 } }')
    t = [Blob(()), Blob(())]
    layer.setup([], t)
    assert [b.shape for b in t] == [(2, 3, 4, 5), (1, 1, 1, 2)]
    np.testing.assert_array_equal(t[0].data, 7)
    np.testing.assert_array_equal(t[1].data, 0)  # random tops are filled by forward, not setup
    layer.forward([], t)
    first = t[1].data.copy()
    assert ((first >= 2) & (first < 3)).all()
    t[0].data[...] = 1  # a constant top is never refilled
    layer.forward([], t)
    np.testing.assert_array_equal(t[0].data, 1)
    assert not np.array_equal(t[1].data, first)
    layer = make_layer('type: "DummyData" dummy_data_param { shape { dim: 3 } }')
    t = [Blob(())]
    layer.setup([], t)
    np.testing.assert_array_equal(t[0].data, [0, 0, 0])
