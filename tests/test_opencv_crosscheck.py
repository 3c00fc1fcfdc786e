"""OpenCV's independent Caffe importer (cv2.dnn.readNetFromCaffe) reads what torchcaffe writes, and agrees."""
import numpy as np
import pytest

import torchcaffe as caffe
from conftest import REPO, assert_close
from colorization.colorizer import random_colorization_weights

cv2 = pytest.importorskip("cv2")


def _opencv_forward(prototxt, caffemodel, x, blob):
    cvnet = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    cvnet.setInput(x)
    return cvnet.forward(blob)


def test_full_width_release_deploy_written_by_torchcaffe_runs_in_opencv(tmp_path):
    prototxt = REPO / "prototxt" / "release_v2" / "colorization_deploy_v2.prototxt"
    net = caffe.Net(str(prototxt), caffe.TEST)
    assert net.blobs["data_l"].shape == (1, 1, 224, 224)
    random_colorization_weights(net, seed=1)
    model = tmp_path / "random_release_v2.caffemodel"
    net.save(str(model))
    assert model.stat().st_size > 100 * 2**20  # the full-width net: ~129 MB, past protobuf's old 64 MB limit
    x = np.random.default_rng(1).uniform(-50, 50, (1, 1, 224, 224)).astype(np.float32)
    net.forward(data_l=x)  # the released file ends in a Silence layer: read the blob itself
    ours = net.blobs["class8_ab"].data.copy()
    theirs = _opencv_forward(prototxt, model, x, "class8_ab")
    assert ours.shape == (1, 2, 56, 56)
    assert_close(ours, theirs, rtol=1e-4, name="class8_ab vs OpenCV")
    assert_close(net.blobs["conv8_313"].data, _opencv_forward(prototxt, model, x, "conv8_313"), rtol=1e-4,
                 name="conv8_313 vs OpenCV")
    # and torchcaffe reads its own 129 MB file back
    again = caffe.Net(str(prototxt), caffe.TEST, weights=str(model))
    again.forward(data_l=x)
    assert_close(again.blobs["class8_ab"].data, ours, rtol=1e-6, name="reloaded")


def test_narrow_colornet_agrees_with_opencv(golden):
    d = golden / "data_and_colornet"
    z = np.load(d / "narrow_colornet_golden.npz")
    net = caffe.Net(str(d / "narrow_colornet_deploy.prototxt"), caffe.TEST, weights=str(d / "narrow_colornet.caffemodel"))
    ours = net.forward(data_l=z["input_data_l"])["class8_ab"]
    theirs = _opencv_forward(d / "narrow_colornet_deploy.prototxt", d / "narrow_colornet.caffemodel",
                             z["input_data_l"], "class8_ab")
    caffe_ab = z["blob__class8_ab"]
    err = lambda a: np.abs(a - caffe_ab).max() / np.abs(caffe_ab).max()
    # OpenCV itself is ~1e-4 (normwise) from BVLC Caffe here; torchcaffe must be at least as close.
    assert err(ours) <= err(theirs) + 1e-6, (err(ours), err(theirs))
    assert_close(ours, theirs, rtol=2e-4, name="class8_ab vs OpenCV")
