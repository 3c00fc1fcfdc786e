"""Finite-difference gradient checks (Caffe's GradientChecker, float64) for every built-in layer with a backward,
bottoms and parameters alike."""
import numpy as np
import pytest
import torch

from layer_helpers import TEST, TRAIN, gradient_check, make_layer

rng = np.random.RandomState(1234)


def randn(*shape, away_from=None, margin=0.02):
    x = rng.randn(*shape)
    if away_from is not None:  # keep clear of kinks (ReLU at 0, ...)
        x = np.where(np.abs(x - away_from) < margin, x + 3 * margin * np.sign(x - away_from + 1e-12), x)
    return x


def check(text, bottoms, phase=TRAIN, **kw):
    return gradient_check(lambda: make_layer(text, phase), bottoms, **kw)


W = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 }'


@pytest.mark.parametrize("conv", [
    "num_output: 4 kernel_size: 3",
    "num_output: 4 kernel_size: 3 pad: 1 stride: 2",
    "num_output: 4 kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2",
    "num_output: 4 kernel_size: 3 pad: 2 dilation: 2 group: 2",
    "num_output: 2 kernel_size: 1 bias_term: false",
])
def test_convolution(conv):
    check(f'type: "Convolution" convolution_param {{ {conv} {W} }}', [randn(2, 4, 6, 7)])


def test_convolution_two_bottoms_share_weights():
    check(f'type: "Convolution" convolution_param {{ num_output: 3 kernel_size: 2 {W} }}',
          [randn(2, 2, 4, 5), randn(2, 2, 4, 5)], ntops=2)


@pytest.mark.parametrize("conv", [
    "num_output: 3 kernel_size: 4 stride: 2 pad: 1",
    "num_output: 4 kernel_size: 3 group: 2 dilation: 2",
    "num_output: 2 kernel_size: 2 stride: 2 bias_term: false",
])
def test_deconvolution(conv):
    check(f'type: "Deconvolution" convolution_param {{ {conv} {W} }}', [randn(2, 4, 3, 4)])


@pytest.mark.parametrize("pool", [
    "pool: MAX kernel_size: 3 stride: 2",
    "pool: MAX kernel_size: 3 stride: 2 pad: 1",
    "pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 1",
    "pool: AVE kernel_size: 3 stride: 2",
    "pool: AVE kernel_size: 2 stride: 2 pad: 1",
    "pool: AVE kernel_size: 3 stride: 1 pad: 2",
    "pool: MAX global_pooling: true",
    "pool: AVE global_pooling: true",
])
def test_pooling(pool):
    check(f'type: "Pooling" pooling_param {{ {pool} }}', [randn(2, 3, 7, 8)])


def test_pooling_with_mask_top():
    # the mask top is not differentiable: weight it by zero
    x = randn(1, 2, 5, 5)
    gradient_check(lambda: make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }'),
                   [x], ntops=2, top_weights=[np.ones((1, 2, 3, 3)), np.zeros((1, 2, 3, 3))])


@pytest.mark.parametrize("text,kink", [
    ('type: "ReLU"', 0.0),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', 0.0),
    ('type: "Sigmoid"', None),
    ('type: "TanH"', None),
    ('type: "AbsVal"', 0.0),
    ('type: "ELU" elu_param { alpha: 0.7 }', 0.0),
    ('type: "BNLL"', None),
    ('type: "Exp"', None),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.3 }', None),
])
def test_neurons(text, kink):
    check(text, [randn(2, 3, 4, away_from=kink)])


@pytest.mark.parametrize("text", [
    'type: "Log"',
    'type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }',
    'type: "Power" power_param { power: 2.5 scale: 1.5 shift: 0.5 }',
    'type: "Power" power_param { power: 3 }',
    'type: "Power" power_param { power: 2 scale: -0.5 shift: 1 }',
    'type: "Power" power_param { power: 1 scale: 3 shift: 2 }',
    'type: "Power" power_param { power: -1.5 scale: 2 }',
])
def test_positive_domain_neurons(text):
    check(text, [np.abs(randn(2, 3, 4)) + 0.5])


def test_dropout_train_same_mask():
    check('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', [randn(3, 5, 4)], reseed=5)


def test_dropout_test_is_identity():
    check('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', [randn(3, 5)], phase=TEST)


@pytest.mark.parametrize("phase,extra", [(TRAIN, ""), (TEST, ""), (TRAIN, "batch_norm_param { use_global_stats: true }"),
                                         (TRAIN, "batch_norm_param { eps: 0.1 }")])
def test_batchnorm(phase, extra):
    x = randn(3, 4, 2, 3) * 2 + 1

    def make():
        layer = make_layer(f'type: "BatchNorm" {extra}', phase)
        return layer

    def make_with_stats():
        layer = make()
        orig = layer.layer_setup

        def setup(bottom, top):
            orig(bottom, top)
            layer.blobs[0].data_t = torch.tensor([0.5, -1.0, 2.0, 0.1], dtype=torch.float64)
            layer.blobs[1].data_t = torch.tensor([1.5, 0.3, 2.0, 0.7], dtype=torch.float64)
            layer.blobs[2].data_t = torch.tensor([0.9], dtype=torch.float64)
        layer.layer_setup = setup
        return layer
    # the statistics are not parameters with gradients: Caffe leaves their diffs at zero
    layer = gradient_check(make_with_stats, [x], params=False)
    for b in layer.blobs:
        assert float(b.diff_t.abs().max()) == 0.0


def test_batchnorm_2d_and_1d_bottoms():
    check('type: "BatchNorm"', [randn(5, 3)], params=False)
    check('type: "BatchNorm"', [randn(6)], params=False)


@pytest.mark.parametrize("text,bottoms", [
    ('type: "Scale"', [(2, 3, 4)]),
    ('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } bias_filler { type: "gaussian" } }',
     [(2, 3, 4, 2)]),
    ('type: "Scale" scale_param { axis: 0 num_axes: 2 bias_term: true bias_filler { type: "uniform" } }', [(2, 3, 4)]),
    ('type: "Scale" scale_param { num_axes: -1 }', [(2, 3, 4)]),
    ('type: "Scale" scale_param { num_axes: 0 bias_term: true }', [(2, 3, 4)]),
    ('type: "Scale"', [(2, 3, 4, 5), (3, 4)]),
    ('type: "Scale" scale_param { axis: 0 bias_term: true bias_filler { type: "uniform" } }', [(2, 3, 4), (2,)]),
    ('type: "Scale" scale_param { axis: -1 }', [(2, 3, 4), (4,)]),
    ('type: "Bias" bias_param { filler { type: "gaussian" } }', [(2, 3, 4)]),
    ('type: "Bias" bias_param { axis: 0 num_axes: 2 filler { type: "gaussian" } }', [(2, 3, 4)]),
    ('type: "Bias"', [(2, 3, 4, 5), (3, 4)]),
])
def test_scale_bias(text, bottoms):
    check(text, [randn(*s) for s in bottoms])


def test_concat_slice_split_flatten_reshape_crop():
    check('type: "Concat"', [randn(2, 3, 4), randn(2, 1, 4), randn(2, 2, 4)])
    check('type: "Concat" concat_param { axis: -1 }', [randn(2, 3, 1), randn(2, 3, 2)])
    check('type: "Concat"', [randn(2, 3)])
    check('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 4 }', [randn(2, 5, 3)], ntops=3)
    check('type: "Slice" slice_param { axis: 0 }', [randn(4, 2)], ntops=2)
    check('type: "Slice" slice_param { slice_dim: 2 }', [randn(1, 2, 6)], ntops=3)
    check('type: "Split"', [randn(2, 3)], ntops=3)
    check('type: "Split"', [randn(2, 3)], ntops=1)
    check('type: "Flatten"', [randn(2, 3, 4, 2)])
    check('type: "Flatten" flatten_param { axis: 2 end_axis: 3 }', [randn(2, 3, 4, 2)])
    check('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 2 } }', [randn(2, 3, 4)])
    check('type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }', [randn(2, 3, 5, 6), randn(2, 3, 3, 3)],
          check_bottoms=[0])


@pytest.mark.parametrize("text", [
    'type: "Eltwise"',
    'type: "Eltwise" eltwise_param { coeff: 1 coeff: -0.5 coeff: 2 }',
    'type: "Eltwise" eltwise_param { operation: PROD }',
    'type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }',
    'type: "Eltwise" eltwise_param { operation: MAX }',
])
def test_eltwise(text):
    check(text, [randn(2, 3, 4), randn(2, 3, 4), randn(2, 3, 4)])


@pytest.mark.parametrize("ip", ["num_output: 4", "num_output: 3 axis: 2", "num_output: 4 transpose: true",
                                "num_output: 2 bias_term: false axis: -1"])
def test_inner_product(ip):
    check(f'type: "InnerProduct" inner_product_param {{ {ip} {W} }}', [randn(2, 3, 2, 2)])


def test_softmax():
    check('type: "Softmax"', [randn(2, 4, 3)])
    check('type: "Softmax" softmax_param { axis: -1 }', [randn(2, 4, 3)])


@pytest.mark.parametrize("loss_param", ["", "loss_param { ignore_label: 2 }",
                                        "loss_param { ignore_label: 2 normalization: FULL }",
                                        "loss_param { normalization: BATCH_SIZE }",
                                        "loss_param { ignore_label: 0 normalization: NONE }",
                                        "loss_param { normalize: false }"])
def test_softmax_with_loss(loss_param):
    label = rng.randint(0, 4, size=(2, 1, 3, 2)).astype(np.float64)
    check(f'type: "SoftmaxWithLoss" {loss_param}', [randn(2, 4, 3, 2), label], check_bottoms=[0],
          top_weights=[np.array(1.5)])


def test_softmax_with_loss_prob_top():
    label = rng.randint(0, 4, size=(3,)).astype(np.float64)
    check('type: "SoftmaxWithLoss" softmax_param { axis: 1 }', [randn(3, 4), label], check_bottoms=[0], ntops=2,
          top_weights=[np.array(0.7), np.zeros((3, 4))])


def test_euclidean_loss_both_bottoms():
    check('type: "EuclideanLoss"', [randn(3, 4), randn(3, 4)], top_weights=[np.array(2.0)])


def test_softmax_cross_entropy_loss():
    t = np.abs(randn(2, 5, 2, 3))
    t /= t.sum(axis=1, keepdims=True)  # a distribution per pixel, as the colorization targets are
    check('type: "SoftmaxCrossEntropyLoss"', [randn(2, 5, 2, 3), t], check_bottoms=[0], top_weights=[np.array(1.3)])
