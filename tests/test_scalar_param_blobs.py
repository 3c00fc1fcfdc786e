"""A learned scalar (Scale/Bias with num_axes: 0) is a 0-axis blob; BVLC writes it as a BlobProto without a
``shape`` field.  tests/data/scale_scalar_bvlc.{caffemodel,h5} were written by BVLC Caffe's pycaffe
(Net.save / Net.save_hdf5) from tests/data/scale_scalar.prototxt (scale filled with 2, bias with 0)."""
import numpy as np

from conftest import REPO
import torchcaffe as caffe
from torchcaffe.proto import caffe_pb2

DATA = REPO / "tests" / "data"
NET = str(DATA / "scale_scalar.prototxt")


def test_bvlc_caffemodel_with_a_scalar_loads_and_copies_again():
    net = caffe.Net(NET, str(DATA / "scale_scalar_bvlc.caffemodel"), caffe.TEST)
    scale, bias = net.params["s"]
    assert scale.data.shape == () and bias.data.shape == ()
    assert float(scale.data) == 2.0
    net.copy_from(str(DATA / "scale_scalar_bvlc.caffemodel"))  # a second copy into the 0-axis blob
    assert scale.data.shape == ()
    net.blobs["x"].data[...] = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(net.forward()["y"], 2 * np.arange(6).reshape(2, 3))


def test_bvlc_hdf5_weights_with_a_scalar_load():
    net = caffe.Net(NET, caffe.TEST, weights=str(DATA / "scale_scalar_bvlc.h5"))
    assert net.params["s"][0].data.shape == () and float(net.params["s"][0].data) == 2.0


def test_saving_writes_what_bvlc_writes(tmp_path):
    net = caffe.Net(NET, str(DATA / "scale_scalar_bvlc.caffemodel"), caffe.TEST)
    out = tmp_path / "w.caffemodel"
    net.save(str(out))
    m = caffe_pb2.NetParameter.FromString(out.read_bytes())
    assert [b.HasField("shape") for b in m.layer[1].blobs] == [False, False]
    assert out.read_bytes() == (DATA / "scale_scalar_bvlc.caffemodel").read_bytes()
