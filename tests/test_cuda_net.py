"""Whole nets on a CUDA device: the golden layer net through caffe.Net matches BVLC Caffe, and the demo deploy
net (Python layers on their fast path on the device) matches the CPU.  Skipped without CUDA."""
import numpy as np
import pytest
import torch

import torchcaffe as caffe
from conftest import GOLDEN, REPO, assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.skipif(not GOLDEN.is_dir(), reason="../shared/caffe_golden is not present")
@pytest.mark.parametrize("phase", ["train", "test"])
def test_golden_layer_net_through_net_on_cuda(phase):
    d = GOLDEN / "layers"
    z = np.load(d / "layers_golden.npz")
    weights = d / ("init.caffemodel" if phase == "train" else "after_train_forward.caffemodel")
    net = caffe.Net(str(d / "layers.prototxt"), caffe.TRAIN if phase == "train" else caffe.TEST,
                    weights=str(weights), device="cuda")
    net.blobs["data"].data[...] = z["input_data"]
    net.blobs["label"].data[...] = z["input_label"]
    net.forward()
    if phase == "train":
        net.backward()
    for name, blob in net.blobs.items():
        assert blob.data_t.device.type == "cuda"
        assert_close(blob.data, z[f"{phase}_data__{name}"], name=name)
        if phase == "train":
            assert_close(blob.diff, z[f"train_diff__{name}"], name=f"diff {name}")


def test_demo_deploy_net_with_python_layers_cuda_matches_cpu():
    proto = str(REPO / "prototxt" / "demo" / "colorization_deploy.prototxt")
    cpu = caffe.Net(proto, caffe.TEST)
    cuda = caffe.Net(proto, caffe.TEST, device="cuda")
    for name, blobs in cpu.params.items():
        for a, b in zip(blobs, cuda.params[name]):
            b.data[...] = a.data
    x = np.random.default_rng(0).uniform(-50, 50, cpu.blobs["data_l"].shape).astype(np.float32)
    out_cpu = cpu.forward(data_l=x)
    out_cuda = cuda.forward(data_l=x)
    for k in out_cpu:
        assert_close(out_cuda[k], out_cpu[k], rtol=1e-3, name=k)
