"""The built-in layers on a CUDA device: CPU vs CUDA forward/backward per layer type (the golden net on CUDA is in
tests/test_cuda_net.py).  Skipped where torch sees no CUDA device."""
import os

import numpy as np
import pytest
import torch

from layer_helpers import TRAIN, blob, close, make_layer, run

# tools/device_check.sh sets TORCHCAFFE_REQUIRE_CUDA=1: there a missing device fails instead of skipping
pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and not os.environ.get("TORCHCAFFE_REQUIRE_CUDA"),
                                reason="no CUDA device")
rng = np.random.RandomState(3)


CASES = [
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 group: 2 '
     'weight_filler { type: "msra" } bias_filler { type: "gaussian" } }', [(2, 4, 6, 7)]),
    ('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 '
     'weight_filler { type: "bilinear" } }', [(2, 4, 3, 4)]),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }', [(2, 3, 7, 8)]),
    ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }', [(2, 3, 7, 8)]),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 3 }', [(2, 3, 7, 8)]),
    ('type: "BatchNorm"', [(3, 4, 2, 3)]),
    ('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } }', [(2, 3, 4)]),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', [(2, 3, 4)]),
    ('type: "Power" power_param { power: 2 shift: 1 scale: 0.5 }', [(2, 3)]),
    ('type: "Eltwise" eltwise_param { operation: MAX }', [(2, 3), (2, 3), (2, 3)]),
    ('type: "Eltwise" eltwise_param { operation: PROD }', [(2, 3), (2, 3)]),
    ('type: "Concat"', [(2, 3), (2, 2)]),
    ('type: "InnerProduct" inner_product_param { num_output: 3 weight_filler { type: "xavier" } }', [(2, 3, 2)]),
    ('type: "Softmax"', [(2, 5, 3)]),
    ('type: "SoftmaxCrossEntropyLoss"', [(2, 5, 2, 2), (2, 5, 2, 2)]),
    ('type: "EuclideanLoss"', [(2, 5), (2, 5)]),
]


@pytest.mark.parametrize("text,shapes", CASES)
def test_cpu_and_cuda_agree(text, shapes):
    xs = [rng.randn(*s) for s in shapes]
    results = []
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        layer = make_layer(text, TRAIN, device=dev)
        bl = [blob(x, device=dev) for x in xs]
        tops = run(layer, bl)
        g = torch.from_numpy(np.asarray(np.random.RandomState(1).randn(*tops[0].shape)))
        tops[0].diff_t = g
        layer.backward(tops, [layer.allow_force_backward(i) for i in range(len(bl))], bl)
        results.append([tops[0].data.copy()] + [b.diff.copy() for b in bl] + [p.diff.copy() for p in layer.blobs])
    for a, b in zip(*results):
        close(b, a, rtol=1e-9)


def test_loss_labels_dropout_and_data_layers_on_cuda():
    x = blob(rng.randn(4, 5, 3), device="cuda")
    lab = blob(rng.randint(0, 5, size=(4, 3)), device="cuda")
    for text in ['type: "SoftmaxWithLoss" loss_param { ignore_label: 1 }', 'type: "Accuracy" accuracy_param { top_k: 2 }']:
        t = run(make_layer(text, device="cuda"), [x, lab], need_backward=False)
        assert t[0].data_t.device.type == "cuda" and np.isfinite(t[0].data).all()
    t = run(make_layer('type: "Dropout"', device="cuda"), [blob(np.ones((100, 100)), device="cuda")])
    assert abs((t[0].data != 0).mean() - 0.5) < 0.03
    from torchcaffe.blob import Blob
    layer = make_layer('type: "DummyData" dummy_data_param { shape { dim: 2 } data_filler { type: "gaussian" } }',
                       device="cuda")
    tops = [Blob((), device="cuda")]
    layer.setup([], tops)
    layer.forward([], tops)
    assert tops[0].data_t.device.type == "cuda" and tops[0].shape == (2,)
