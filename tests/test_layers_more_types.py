"""LRN, MVN, Im2col, SPP, LSTM, RNN, LSTMUnit: finite-difference gradients (float64, Caffe's GradientChecker)
and clear errors for bad parameters.  Their values against BVLC Caffe: tests/test_bvlc_golden_layers.py."""
import numpy as np
import pytest
import torch

from layer_helpers import blob, gradient_check, make_layer, run
from torchcaffe.layer import LayerError

rng = np.random.RandomState(99)
W = 'weight_filler { type: "uniform" min: -0.5 max: 0.5 } bias_filler { type: "uniform" min: -0.5 max: 0.5 }'


@pytest.mark.parametrize("text", [
    'type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }',
    'type: "LRN" lrn_param { local_size: 7 alpha: 0.8 beta: 0.5 }',
    'type: "LRN" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL alpha: 0.5 beta: 0.6 }',
    'type: "MVN"',
    'type: "MVN" mvn_param { across_channels: true }',
    'type: "MVN" mvn_param { normalize_variance: false across_channels: true }',
    'type: "Im2col" convolution_param { kernel_size: 3 stride: 2 pad: 1 dilation: 2 }',
    'type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 3 pad_w: 1 }',
    'type: "SPP" spp_param { pyramid_height: 3 pool: AVE }',
    'type: "SPP" spp_param { pyramid_height: 2 pool: MAX }',
])
def test_gradients(text):
    gradient_check(lambda: make_layer(text), [rng.randn(2, 4, 6, 7)])


def _cont(T, N):
    c = rng.randint(0, 2, size=(T, N)).astype(np.float64)
    c[0] = 0  # the first step starts the sequences: no carried state in the repeated forwards of the checker
    return c


@pytest.mark.parametrize("typ", ["LSTM", "RNN"])
@pytest.mark.parametrize("static", [False, True])
def test_recurrent_gradients(typ, static):
    T, N = 3, 2
    bottoms = [rng.randn(T, N, 2, 2), _cont(T, N)] + ([rng.randn(N, 3)] if static else [])
    gradient_check(lambda: make_layer(f'type: "{typ}" recurrent_param {{ num_output: 3 {W} }}'), bottoms,
                   check_bottoms=[0] + ([2] if static else []))


@pytest.mark.parametrize("typ,nstate", [("LSTM", 2), ("RNN", 1)])
def test_recurrent_exposed_state(typ, nstate):
    """With expose_hidden the initial state comes in as bottoms and the final state goes out as tops; as in
    BVLC no gradient flows into those bottoms or from those tops."""
    T, N, H = 3, 2, 3
    c = np.ones((T, N))
    states = [rng.randn(1, N, H) for _ in range(nstate)]
    text = f'type: "{typ}" recurrent_param {{ num_output: {H} expose_hidden: true {W} }}'
    layer = make_layer(text)
    bl = [blob(rng.randn(T, N, 4)), blob(c)] + [blob(s) for s in states]
    tops = run(layer, bl, ntops=1 + nstate)
    # the exposed final state is the last timestep's h (the LSTM's top; the RNN's top is o = tanh(W_ho h + b_o))
    h_T = tops[1].data_t[0]
    last = h_T if typ == "LSTM" else torch.tanh(h_T @ layer.blobs[-2].data_t.T + layer.blobs[-1].data_t)
    np.testing.assert_allclose(last.numpy(), tops[0].data[-1], rtol=1e-12, atol=0)
    for t in tops:
        t.diff_t = torch.ones_like(t.data_t)
    layer.backward(tops, [True, False] + [True] * nstate, bl)
    for b in bl[2:]:
        assert not b.diff.any()
    # the same layer from a different initial state gives a different output (cont = 1 at t = 0)
    first = tops[0].data.copy()
    bl2 = [bl[0], bl[1]] + [blob(s + 1) for s in states]
    layer.reshape(bl2, tops)
    layer.forward(bl2, tops)
    assert np.abs(tops[0].data - first).max() > 1e-3


def test_lstm_unit_gradient():
    gradient_check(lambda: make_layer('type: "LSTMUnit"'),
                   [rng.randn(1, 3, 4), rng.randn(1, 3, 16), np.array([[1.0, 0.0, 1.0]])], check_bottoms=[0, 1], ntops=2)


@pytest.mark.parametrize("text,bottoms,match", [
    ('type: "LRN" lrn_param { local_size: 4 }', [(2, 3, 4, 4)], "odd values for local_size"),
    ('type: "LRN"', [(2, 3, 4)], "4 axes"),
    ('type: "MVN"', [(2, 3, 4, 4, 2)], "at most 4 axes"),
    ('type: "Im2col" convolution_param { kernel_h: 2 kernel_w: 2 }', [(2, 3, 4)], "2D"),
    ('type: "Im2col" convolution_param { kernel_size: 5 }', [(2, 3, 4, 4)], "empty"),
    ('type: "SPP" spp_param { pyramid_height: 3 }', [(1, 2, 5, 5)], "pyramid level 2 .*pad"),
    ('type: "SPP" spp_param { pyramid_height: 2 pool: STOCHASTIC }', [(1, 2, 5, 5)], "level 1 .*Padding"),
    ('type: "LSTM" recurrent_param { num_output: 0 }', [(3, 2, 4), (3, 2)], "num_output must be positive"),
    ('type: "RNN" recurrent_param { num_output: 2 }', [(3, 2, 4), (3, 3)], "cont"),
    ('type: "RNN" recurrent_param { num_output: 2 expose_hidden: true }', [(3, 2, 4), (3, 2)], "at least 3 bottom"),
    ('type: "LSTMUnit"', [(1, 3, 4), (1, 3, 15), (1, 3)], "4 x bottom"),
])
def test_bad_parameters_are_clear_errors(text, bottoms, match):
    with pytest.raises(LayerError, match=match):
        run(make_layer(f'name: "L" {text}'), [blob(np.zeros(s)) for s in bottoms],
            ntops=2 if "LSTMUnit" in text else 1)


def test_recurrent_refuses_a_gradient_to_cont_and_a_new_length():
    layer = make_layer(f'name: "L" type: "LSTM" recurrent_param {{ num_output: 2 {W} }}')
    bl = [blob(rng.randn(3, 2, 4)), blob(np.ones((3, 2)))]
    tops = run(layer, bl)
    with pytest.raises(LayerError, match="sequence indicators"):
        layer.backward(tops, [True, True], bl)
    with pytest.raises(LayerError, match="timesteps changed"):
        layer.reshape([blob(rng.randn(4, 2, 4)), blob(np.ones((4, 2)))], tops)
