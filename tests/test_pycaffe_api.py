"""`import torchcaffe as caffe` offers pycaffe's names, so that pycaffe scripts run unchanged."""
import numpy as np
import pytest

import torchcaffe as caffe


@pytest.mark.parametrize("name", [
    "Net", "Layer", "TRAIN", "TEST", "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed",
    "get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
    "AdamSolver", "io", "NetSpec", "layers", "params", "to_proto", "init_log",
])
def test_pycaffe_names_exist(name):
    assert getattr(caffe, name) is not None


def test_proto_module_and_io_helpers():
    from torchcaffe.proto import caffe_pb2

    assert caffe.proto.caffe_pb2 is caffe_pb2
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    bp = caffe.io.array_to_blobproto(arr)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(bp), arr)
    datum = caffe.io.array_to_datum(np.arange(12, dtype=np.uint8).reshape(3, 2, 2), label=7)
    assert datum.label == 7
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), np.arange(12).reshape(3, 2, 2))


def test_netspec_builds_a_net_that_runs():
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[2, 3, 8, 8]))
    n.conv = caffe.layers.Convolution(n.data, num_output=4, kernel_size=3, weight_filler=dict(type="xavier"))
    n.pool = caffe.layers.Pooling(n.conv, pool=caffe.params.Pooling.MAX, kernel_size=2, stride=2)
    net = caffe.Net(n.to_proto(), caffe.TEST)
    assert net.forward()["pool"].shape == (2, 4, 3, 3)


def test_set_mode_gpu_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        caffe.set_mode_gpu()
    caffe.set_mode_cpu()
