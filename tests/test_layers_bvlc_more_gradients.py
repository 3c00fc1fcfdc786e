"""Finite-difference gradient checks (float64) of the layer types added for BVLC parity: Clip, Swish, PReLU,
the sigmoid / contrastive / hinge / infogain / multinomial-logistic losses, Reduction, Tile, Embed,
BatchReindex and Filter.  Their forward values are checked against BVLC Caffe itself in
test_bvlc_golden_layers.py."""
import numpy as np
import pytest
import torch

from layer_helpers import TRAIN, blob, gradient_check, make_layer, run
from torchcaffe.layer import LayerError

rng = np.random.RandomState(4321)


def randn(*shape, away_from=(), margin=0.03):
    x = rng.randn(*shape)
    for k in away_from:  # keep clear of kinks
        x = np.where(np.abs(x - k) < margin, x + 3 * margin * np.sign(x - k + 1e-12), x)
    return x


def check(text, bottoms, **kw):
    if "Loss" in text:  # a scalar top: weigh it as a loss weight
        kw.setdefault("top_weights", [np.array(1.3)])
    return gradient_check(lambda: make_layer(text, TRAIN), bottoms, **kw)


@pytest.mark.parametrize("text,kinks", [
    ('type: "Clip" clip_param { min: -0.5 max: 0.7 }', (-0.5, 0.7)),
    ('type: "Swish"', ()),
    ('type: "Swish" swish_param { beta: 1.7 }', ()),
    ('type: "PReLU" prelu_param { filler { type: "uniform" min: 0.1 max: 0.5 } }', (0,)),
    ('type: "PReLU" prelu_param { channel_shared: true }', (0,)),
])
def test_neurons(text, kinks):
    check(text, [randn(2, 3, 4, 2, away_from=kinks)])


def test_clip_gradient_includes_the_bounds():
    layer = make_layer('type: "Clip" clip_param { min: -1 max: 1 }')
    x = blob(np.array([-2.0, -1.0, 0.0, 1.0, 2.0]))
    (t,) = run(layer, [x])
    np.testing.assert_array_equal(t.data, [-1, -1, 0, 1, 1])
    t.diff_t = torch.ones(5, dtype=torch.float64)
    layer.backward([t], [True], [x])
    np.testing.assert_array_equal(x.diff, [0, 1, 1, 1, 0])


def test_prelu_channel_shared_slope_is_a_scalar():
    layer = make_layer('type: "PReLU" prelu_param { channel_shared: true }')
    run(layer, [blob(randn(2, 3, 2))])
    assert layer.blobs[0].shape == () and float(layer.blobs[0].data) == 0.25


def labels(n, c, ignore=None):
    lab = rng.randint(0, c, size=n).astype(float)
    if ignore is not None:
        lab[::3] = ignore
    return lab


@pytest.mark.parametrize("lp", ["", "loss_param { ignore_label: -1 normalization: VALID }",
                                "loss_param { normalization: FULL }", "loss_param { normalization: NONE }",
                                "loss_param { normalize: true }"])
def test_sigmoid_cross_entropy(lp):
    t = rng.rand(3, 4)
    if "ignore" in lp:
        t[0, :2] = -1
    check(f'type: "SigmoidCrossEntropyLoss" {lp}', [randn(3, 4), t], check_bottoms=[0])


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive_loss(legacy):
    a, b = randn(6, 3), randn(6, 3)
    b[3:] = a[3:] + 0.3 * randn(3, 3)  # some dissimilar pairs inside the margin
    sim = np.array([1, 0, 1, 0, 0, 0.0])
    # Caffe's non-legacy gradient divides by (d + 1e-4) instead of d
    check(f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 1.5 legacy_version: {legacy} }}',
          [a, b, sim], check_bottoms=[0, 1], tol=1e-6 if legacy == "true" else 2e-3)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):
    check(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [randn(4, 5, away_from=(-1, 1)), labels(4, 5)],
          check_bottoms=[0])


def test_hinge_loss_leaves_the_margins_in_the_bottom_diff():
    layer = make_layer('type: "HingeLoss"')
    x = blob(np.array([[0.5, -2.0, 0.2]]))
    (t,) = run(layer, [x, blob(np.array([0.0]))])
    assert float(t.data) == pytest.approx(0.5 + 0 + 1.2)
    np.testing.assert_allclose(x.diff, [[0.5, 0, 1.2]])


@pytest.mark.parametrize("lp", ["", "loss_param { ignore_label: 2 }", "loss_param { normalization: BATCH_SIZE }"])
def test_infogain_loss_bottom_matrix(lp):
    H = np.abs(randn(4, 4)) + np.eye(4)
    check(f'type: "InfogainLoss" {lp}', [randn(3, 4), labels(3, 4), H], check_bottoms=[0])


def test_infogain_loss_source_file_and_axis(tmp_path):
    from torchcaffe.protoio import array_to_proto, write_binaryproto
    H = np.abs(randn(3, 3)) + np.eye(3)
    write_binaryproto(array_to_proto(H.astype(np.float32).reshape(1, 1, 3, 3)), tmp_path / "H.binaryproto")
    text = (f'type: "InfogainLoss" infogain_loss_param {{ source: "{tmp_path / "H.binaryproto"}" axis: 2 }}')
    check(text, [randn(2, 2, 3, 2), labels(8, 3).reshape(2, 2, 2)], check_bottoms=[0])


def test_infogain_loss_identity_matrix_is_the_softmax_loss():
    x, lab = randn(5, 4), labels(5, 4)
    ig = make_layer('type: "InfogainLoss"')
    (a,) = run(ig, [blob(x), blob(lab), blob(np.eye(4))])
    sm = make_layer('type: "SoftmaxWithLoss"')
    (b,) = run(sm, [blob(x), blob(lab)])
    assert float(a.data) == pytest.approx(float(b.data))


def test_multinomial_logistic_loss():
    p = rng.rand(4, 5) + 0.1
    check('type: "MultinomialLogisticLoss"', [p, labels(4, 5).reshape(4, 1, 1, 1)], check_bottoms=[0])


@pytest.mark.parametrize("text", [
    "operation: SUM", "operation: ASUM axis: 1", "operation: SUMSQ axis: 2 coeff: -0.5",
    "operation: MEAN axis: -1 coeff: 3", "operation: SUM axis: 0"])
def test_reduction(text):
    scalar = "axis" not in text or "axis: 0" in text  # reduction_param.axis defaults to 0: a scalar top
    check(f'type: "Reduction" reduction_param {{ {text} }}', [randn(2, 3, 4, away_from=(0,))],
          top_weights=[np.array(0.8)] if scalar else None)


@pytest.mark.parametrize("text", ["tiles: 3", "axis: 0 tiles: 2", "axis: -1 tiles: 2"])
def test_tile(text):
    check(f'type: "Tile" tile_param {{ {text} }}', [randn(2, 3, 2)])


def test_tile_copies_the_block_from_the_axis_on():
    (t,) = run(make_layer('type: "Tile" tile_param { axis: 1 tiles: 2 }'), [blob(np.arange(4.0).reshape(1, 2, 2))])
    np.testing.assert_array_equal(t.data[0], [[0, 1], [2, 3], [0, 1], [2, 3]])


def test_embed():
    idx = np.array([[1, 4, 1], [0, 2, 3.0]])
    layer = check('type: "Embed" embed_param { num_output: 3 input_dim: 5 weight_filler { type: "gaussian" } '
                  'bias_filler { type: "gaussian" } }', [idx], check_bottoms=[])
    assert layer.blobs[0].shape == (5, 3)
    with pytest.raises(LayerError, match="Can't backpropagate"):
        layer.backward([blob(np.zeros((2, 3, 3)))], [True], [blob(idx)])


def test_batch_reindex():
    check('type: "BatchReindex"', [randn(3, 2, 2), np.array([2, 0, 2, 1.0])], check_bottoms=[0])
    with pytest.raises(LayerError, match="greater than batch size"):
        run(make_layer('type: "BatchReindex"'), [blob(randn(3, 2)), blob(np.array([3.0]))])


def test_filter():
    sel = np.array([1, 0, 1, 1.0]).reshape(4, 1)
    layer = check('type: "Filter"', [randn(4, 3), randn(4, 2, 2), sel], check_bottoms=[0, 1], ntops=2)
    assert layer._indices.tolist() == [0, 2, 3]


def test_parameter_layer_top_shares_the_blob():
    layer = make_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }')
    (t,) = run(layer, [])
    assert t.shape == (2, 3) and not t.data.any()
    layer.blobs[0].data[...] = 5
    assert (t.data == 5).all()
    t.diff[...] = 2
    assert (layer.blobs[0].diff == 2).all()


def _windows(x, k, s, out):
    """Caffe's unpadded pooling windows [o * s, min(o * s + k, H)) per output position (brute force)."""
    H, W = x.shape[2:]
    for i in range(out[0]):
        for j in range(out[1]):
            yield i, j, x[:, :, i * s:min(i * s + k, H), j * s:min(j * s + k, W)]


def test_stochastic_pooling_test_phase_is_the_weighted_average():
    from layer_helpers import TEST
    x = np.abs(randn(2, 2, 6, 6))
    x[0, 0, :3, :3] = 0  # an all-zero window gives 0
    layer = make_layer('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }', TEST)
    (t,) = run(layer, [blob(x)], need_backward=False)
    assert t.shape == (2, 2, 3, 3)  # ceil((6 - 3) / 2) + 1; the last windows are clipped to 2 rows/columns
    for i, j, w in _windows(x, 3, 2, (3, 3)):
        s = w.sum(axis=(2, 3))
        want = np.where(s > 0, (w * w).sum(axis=(2, 3)) / np.where(s > 0, s, 1), 0)
        np.testing.assert_allclose(t.data[:, :, i, j], want, rtol=1e-12)


def test_stochastic_pooling_train_samples_in_proportion_and_routes_the_gradient():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0] = [[1.0, 3.0], [0.0, 4.0]]
    layer = make_layer('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 }')
    b = blob(x)
    torch.manual_seed(0)
    picks = []
    for _ in range(400):
        (t,) = run(layer, [b])
        picks.append(float(t.data.ravel()[0]))
    freq = {v: picks.count(v) / len(picks) for v in (1.0, 3.0, 4.0)}
    assert sum(freq.values()) == 1.0  # never the zero (probability 0)
    assert abs(freq[1.0] - 0.125) < 0.06 and abs(freq[3.0] - 0.375) < 0.08 and abs(freq[4.0] - 0.5) < 0.08
    t.diff_t = torch.full((1, 1, 1, 1), 2.0, dtype=torch.float64)
    layer.backward([t], [True], [b])
    assert b.diff.sum() == 2.0 and b.diff.ravel()[[1.0, 3.0, 0.0, 4.0].index(picks[-1])] == 2.0


def test_stochastic_pooling_refuses_padding():
    with pytest.raises(LayerError, match="Padding implemented only"):
        run(make_layer('type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 pad: 1 }'),
            [blob(randn(1, 1, 4, 4))])


def test_parameter_layer_learns_through_the_solver(tmp_path):
    """A Parameter blob trained toward a constant by SGD: p_k = 2 (1 - 0.75^k); BVLC Caffe's pycaffe gives
    1.9936575 after 20 iterations of this solver."""
    import torchcaffe as caffe
    net = tmp_path / "net.prototxt"
    net.write_text(
        'layer { name: "t" type: "DummyData" top: "t" dummy_data_param { shape { dim: 2 dim: 3 } '
        'data_filler { type: "constant" value: 2 } } }\n'
        'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "t" top: "loss" }\n')
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}" base_lr: 0.5 lr_policy: "fixed" max_iter: 20 solver_mode: CPU\n')
    s = caffe.SGDSolver(str(solver))
    s.step(20)
    np.testing.assert_allclose(s.net.params["p"][0].data, np.full((2, 3), 2 * (1 - 0.75 ** 20)), rtol=1e-6)
    np.testing.assert_allclose(s.net.params["p"][0].data, 1.9936575, rtol=1e-6)


def test_net_spec_writes_the_new_parameters():
    import torchcaffe as caffe
    from torchcaffe import layers as L
    n = caffe.NetSpec()
    n.x = L.Input(input_param=dict(shape=dict(dim=[2, 3, 4, 4])))
    n.c = L.Clip(n.x, clip_param=dict(min=-1, max=1))
    n.p = L.Pooling(n.c, pooling_param=dict(kernel_size=3, stride=2, round_mode=caffe.params.Pooling.FLOOR))
    text = str(n.to_proto())
    assert "round_mode: FLOOR" in text and "clip_param" in text


def test_spp_stochastic_levels_without_padding():
    from layer_helpers import TEST
    x = np.abs(randn(1, 2, 4, 4))
    (t,) = run(make_layer('type: "SPP" spp_param { pyramid_height: 2 pool: STOCHASTIC }', TEST), [blob(x)],
               need_backward=False)
    level0 = (x * x).sum(axis=(2, 3)) / x.sum(axis=(2, 3))
    q = x.reshape(1, 2, 2, 2, 2, 2)  # 2x2 bins of 2x2
    level1 = ((q * q).sum(axis=(3, 5)) / q.sum(axis=(3, 5))).reshape(1, 2, 4)
    np.testing.assert_allclose(t.data, np.concatenate([level0, level1.reshape(1, 8)], axis=1), rtol=1e-12)
