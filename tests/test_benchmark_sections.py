"""colorization.benchmark: the forward + backward section and the soft-encoding section per thread count
(tiny: proves they run, that both runtimes compute the same input gradient, and that the JSON and the table
carry the numbers; times nothing)."""
import json
from pathlib import Path

import numpy as np
import torch

from colorization import benchmark

REPO = Path(__file__).resolve().parents[1]


def test_deploy_forward_backward_keys_and_gradients():
    fb = benchmark.deploy_forward_backward(benchmark.DEPLOY, batch=1, repeats=1, size=32, log=lambda *a: None)
    assert sorted(fb["per_image_ms"]) == ["pytorch_reference", "torchcaffe"]
    assert all(v > 0 for v in fb["per_image_ms"].values()) and fb["ratio"] > 0
    assert fb["input_grad_max_rel_diff"] < 1e-2          # the same gradient (float32 rounding only)
    result = {"machine": benchmark.machine(), "deploy_backward": fb, "deploy_forward_backward_ms": fb["per_image_ms"]}
    assert "Forward + backward" in benchmark.markdown(result)
    json.dumps(result)


def test_to_module_is_differentiable_through_layers_without_a_torch_nn_counterpart():
    import torchcaffe as caffe
    from torchcaffe.fast import to_module

    net = caffe.Net(str(benchmark.DEPLOY), caffe.TEST)          # Scale and Softmax: no torch.nn module
    net.blobs["data_l"].reshape(1, 1, 32, 32)
    net.reshape()
    m = to_module(net, outputs=["class8_ab"])
    x = (torch.randn(1, 1, 32, 32) * 30).requires_grad_(True)
    y = m(x)
    next(iter(y.values())).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.no_grad():                                   # inference builds no graph
        assert not next(iter(m(x).values())).requires_grad


def test_soft_encoding_section_per_thread_count():
    s = benchmark.soft_encoding(repeats=1, log=lambda *a: None, threads=(1, 2), shape=(2, 2, 16, 16))
    assert sorted(s["by_threads"]) == ["1", "2"]
    for v in s["by_threads"].values():
        assert v["sklearn_ball_tree_ms"] > 0 and v["cic_ms"] > 0 and v["speedup"] > 0
        assert v["released_layer_forward_ms"] > 0 and v["speedup_vs_layer_forward"] > 0
    assert s["cic_ms"] == s["by_threads"]["1"]["cic_ms"]
    table = benchmark.markdown({"machine": benchmark.machine(), "soft_encoding": s})
    assert "1 thread(s)" in table and "2 thread(s)" in table
    json.dumps(s)


def test_released_encoder_computes_what_cic_computes():
    """The timed replica of the released layer (scikit-learn ball tree) and cic.soft_encode give the same
    encoding (pixels with an exact tie at the 10th neighbour, e.g. gray ones, may pick another bin)."""
    import cic

    ab = benchmark.real_ab_batch(shape=(3, 2, 24, 24))
    released = benchmark.ReleasedNNEncode(cic.load_bins())
    top = np.empty((3, 313, 24, 24), np.float32)
    released.layer_forward(ab, top)
    ours = cic.soft_encode(ab, k=10)
    same = np.abs(top - ours).max(axis=1) < 1e-5
    assert same.mean() > 0.9, same.mean()
    assert np.allclose(top.sum(1), 1, atol=1e-5)
