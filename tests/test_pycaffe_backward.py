"""Net.backward as in BVLC Caffe: from the blobs' current data and diffs, with or without a forward before it,
any number of times, over a start..end range; and the before/after forward/backward hooks."""
import numpy as np
import pytest
from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe.proto import caffe_pb2

NET = """
name: "bw"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "sig" type: "Sigmoid" bottom: "ip" top: "sig" }
layer { name: "pow" type: "Power" bottom: "sig" top: "pw" power_param { power: 2 scale: 1.5 } }
layer { name: "out" type: "InnerProduct" bottom: "pw" top: "out"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""


def make_net(text=NET, phase=caffe.TEST):
    p = caffe_pb2.NetParameter()
    text_format.Parse(text, p)
    caffe.set_random_seed(11)
    return caffe.Net(p, phase)


def numpy_backward(net, x, g):
    """dL/dx, dL/dW(ip) of the net above for output diff g, in float64."""
    w1, b1 = (b.data.astype(np.float64) for b in net.params["ip"])
    w2 = net.params["out"][0].data.astype(np.float64)
    a = x @ w1.T + b1
    s = 1 / (1 + np.exp(-a))
    gs = g @ w2                                   # d/d(pow output)
    gsig = gs * 2 * 1.5 * (1.5 * s)               # Power: y = (1.5 s)^2
    ga = gsig * s * (1 - s)
    return ga @ w1, ga.T @ x


def test_backward_without_forward_reads_the_current_blobs():
    """Caffe's backward needs no forward before it: a net whose blobs hold a forward's data gives the
    same diffs as the net that ran it."""
    rng = np.random.RandomState(0)
    x, g = rng.randn(3, 4), rng.randn(3, 2)
    a = make_net()
    a.forward(data=x)
    ref = a.backward(out=g)["data"].copy()
    b = make_net()  # same seed: same weights
    for name in a.blobs:
        b.blobs[name].data[...] = a.blobs[name].data
    got = b.backward(out=g)["data"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, numpy_backward(a, x, g)[0], rtol=1e-4, atol=1e-5)


def test_backward_only_on_a_fresh_net_gives_zero_input_diff_like_caffe():
    """Real BVLC Caffe (checked with its pycaffe): backward() on a fresh net with ReLU reads zero data."""
    net = make_net(NET.replace('type: "Sigmoid"', 'type: "ReLU"'))
    out = net.backward(out=np.ones((3, 2), np.float32))
    assert (out["data"] == 0).all()


def test_second_backward_after_one_forward_repeats_it_and_accumulates_param_diffs():
    rng = np.random.RandomState(1)
    x, g = rng.randn(3, 4), rng.randn(3, 2)
    net = make_net()
    net.forward(data=x)
    first = net.backward(out=g)["data"].copy()
    dw = net.params["ip"][0].diff.copy()
    second = net.backward(out=g)["data"]
    np.testing.assert_allclose(second, first, rtol=1e-6)
    np.testing.assert_allclose(net.params["ip"][0].diff, 2 * dw, rtol=1e-5)  # Caffe adds into param diffs
    np.testing.assert_allclose(dw, numpy_backward(net, x, g)[1], rtol=1e-4, atol=1e-5)


def test_backward_after_an_update_uses_the_updated_weights():
    rng = np.random.RandomState(2)
    x, g = rng.randn(3, 4), rng.randn(3, 2)
    net = make_net()
    net.forward(data=x)
    net.backward(out=g)
    net.params["ip"][0].diff[...] = 0.25
    net.params["ip"][1].diff[...] = 0
    net.params["out"][0].diff[...] = 0
    net.params["out"][1].diff[...] = 0
    net.update()  # weights change in place after the forward
    net.forward(start="data", end="data")  # nothing recomputed above the input
    got = net.backward(out=g, start="ip", end="ip")
    # ip's backward alone: dx = dy(ip) . W with the *current* W, from the current ip diff
    np.testing.assert_allclose(got["data"], net.blobs["ip"].diff @ net.params["ip"][0].data, rtol=1e-5,
                               atol=1e-6)


def test_backward_start_end_as_bvlc_test_net():
    net = make_net()
    net.forward(data=np.random.RandomState(3).randn(3, 4))
    sample = np.random.RandomState(4).uniform(size=net.blobs["out"].data.shape).astype(np.float32)
    net.blobs["out"].diff[:] = sample
    got = net.backward(start="out", end="out")
    assert "pw" in got
    np.testing.assert_allclose(net.blobs["pw"].diff, sample @ net.params["out"][0].data, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("hold", [False, True])
@pytest.mark.parametrize("layer", ['type: "Power" bottom: "sig" top: "sig" power_param { power: 2 scale: 1.5 }',
                                   'type: "Scale" bottom: "sig" top: "sig" '
                                   'scale_param { filler { type: "constant" value: 1.5 } } param { lr_mult: 0 }'])
def test_in_place_layers_backward_uses_the_input_forward_saw(hold, layer):
    """An in-place layer (Power, hand-written; Scale, by autograd) keeps the input its forward saw for its
    backward, whether its memory is replaced (nobody holds it) or written into (a user holds a view)."""
    rng = np.random.RandomState(5)
    x, g = rng.randn(3, 4), rng.randn(3, 2)
    text = NET.replace('top: "pw"', 'top: "sig"').replace('bottom: "pw"', 'bottom: "sig"')
    scale = "Scale" in layer
    text = text.replace('type: "Power" bottom: "sig" top: "sig" power_param { power: 2 scale: 1.5 }', layer)
    assert layer in text
    net = make_net(text)
    held = net.blobs["sig"].data if hold else None
    out = net.forward(data=x)["out"]
    if hold:
        np.testing.assert_array_equal(held, net.blobs["sig"].data)
    w1, b1 = (b.data.astype(np.float64) for b in net.params["ip"])
    s = 1 / (1 + np.exp(-(x @ w1.T + b1)))
    y = 1.5 * s if scale else (1.5 * s) ** 2
    np.testing.assert_allclose(net.blobs["sig"].data, y, rtol=1e-5)
    np.testing.assert_allclose(out, y @ net.params["out"][0].data.T + net.params["out"][1].data, rtol=1e-4,
                               atol=1e-5)
    gs = g @ net.params["out"][0].data
    gsig = gs * 1.5 if scale else gs * 2 * 1.5 * (1.5 * s)
    want = (gsig * s * (1 - s)) @ w1
    np.testing.assert_allclose(net.backward(out=g)["data"], want, rtol=1e-4, atol=1e-5)
    if scale:  # d/dscale reads the input the forward saw
        np.testing.assert_allclose(net.params["pow"][0].diff, (gs * s).sum(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(net.backward(out=g)["data"], want, rtol=1e-4, atol=1e-5)


BN_NET = """
name: "bn"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 2 dim: 2 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
layer { name: "drop" type: "Dropout" bottom: "bn" top: "out" dropout_param { dropout_ratio: 0.5 } }
"""


def test_backward_without_forward_leaves_no_trace():
    """Recomputing a layer for its backward updates no statistics and draws nothing from the generators."""
    import torch

    net = make_net(BN_NET, caffe.TRAIN)
    net.blobs["data"].data[...] = np.random.RandomState(6).randn(4, 3, 2, 2)
    stats = [b.data.copy() for b in net.params["bn"]]
    state = torch.get_rng_state()
    net.blobs["out"].diff[...] = 1
    net.backward()
    for before, b in zip(stats, net.params["bn"]):
        np.testing.assert_array_equal(b.data, before)
    assert torch.equal(torch.get_rng_state(), state)


def test_hooks_run_around_each_layer_in_caffes_order():
    net = make_net()
    calls = []
    net.before_forward(lambda i: calls.append(("bf", i)))
    net.after_forward(lambda i: calls.append(("af", i)))
    net.before_backward(lambda i: calls.append(("bb", i)))
    net.after_backward(lambda i: calls.append(("ab", i)))
    net.forward()
    net.backward()
    n = len(net.layers)
    # the order BVLC Caffe 1.0's pycaffe gives (checked against it): every layer of the range, need or not
    want = [(k, i) for i in range(n) for k in ("bf", "af")] + \
           [(k, i) for i in range(n - 1, -1, -1) for k in ("bb", "ab")]
    assert calls == want
    calls.clear()
    net.forward(start="sig", end="pow")
    assert calls == [("bf", 2), ("af", 2), ("bf", 3), ("af", 3)]


def test_hook_sees_the_layers_output():
    net = make_net()
    seen = {}
    names = net.layer_names

    def after(i):
        seen[names[i]] = net.blobs[net.top_names[names[i]][0]].data.copy() if net.top_names[names[i]] else None

    net.after_forward(after)
    net.forward(data=np.ones((3, 4)))
    np.testing.assert_array_equal(seen["out"], net.blobs["out"].data)
    np.testing.assert_array_equal(seen["sig"], net.blobs["sig"].data)
