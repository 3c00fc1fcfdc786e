"""colorization/colorizer.py: released-style weights without the fixed layers are completed as OpenCV's sample does."""
import sys

import numpy as np

import torchcaffe as caffe
from conftest import REPO, assert_close
from torchcaffe.protoio import read_net_weights, write_binaryproto

from colorization.colorizer import Colorizer, fill_fixed_layers


def test_weights_without_bin_centres_are_completed(golden, tmp_path):
    d = golden / "data_and_colornet"
    weights = read_net_weights(str(d / "narrow_colornet.caffemodel"))
    stripped = [l.name for l in weights.layer if l.name == "class8_ab" and len(l.blobs)]
    assert stripped == ["class8_ab"]
    # a caffemodel without the bin-centre layer (a layer of that name with no blobs would stop the copy with
    # Caffe's "Incompatible number of blobs for layer class8_ab")
    keep = [l for l in weights.layer if l.name != "class8_ab"]
    del weights.layer[:]
    weights.layer.extend(keep)
    model = tmp_path / "no_centres.caffemodel"
    write_binaryproto(weights, str(model))
    colorizer = Colorizer(d / "narrow_colornet_deploy.prototxt", model)
    assert colorizer.filled == ["class8_ab"]  # the scale has a filler (2.606) in this prototxt: kept
    z = np.load(d / "narrow_colornet_golden.npz")
    colorizer.net.forward(data_l=z["input_data_l"])
    assert_close(colorizer.net.blobs["class8_ab"].data, z["blob__class8_ab"], name="class8_ab")


def test_scale_without_filler_gets_the_released_value():
    text = """
    layer { name: "x" type: "Input" top: "conv8_313" input_param { shape { dim: 1 dim: 313 dim: 2 dim: 2 } } }
    layer { name: "conv8_313_rh" type: "Scale" bottom: "conv8_313" top: "conv8_313_rh" }
    """
    from google.protobuf import text_format
    from torchcaffe.proto import caffe_pb2

    p = caffe_pb2.NetParameter()
    text_format.Merge(text, p)
    net = caffe.Net(p, caffe.TEST)
    assert fill_fixed_layers(net) == ["conv8_313_rh"]
    np.testing.assert_allclose(net.params["conv8_313_rh"][0].data, 2.606, rtol=1e-7)
    assert fill_fixed_layers(net, copied=["conv8_313_rh"]) == []


def test_colorize_keeps_size_and_lightness(tmp_path):
    import skimage.data
    from skimage.color import rgb2lab

    colorizer = Colorizer(REPO / "prototxt" / "demo" / "colorization_deploy.prototxt")
    rgb = skimage.data.coffee()[:101, :157]
    out = colorizer.colorize(rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # the output's L is the input's own (up to 8-bit rounding and gamut clipping)
    dl = np.abs(rgb2lab(out)[..., 0] - rgb2lab(rgb)[..., 0])
    assert np.median(dl) < 0.5


def test_colorize_image_command(tmp_path):
    import subprocess

    import cv2
    import skimage.data

    src = tmp_path / "in.png"
    cv2.imwrite(str(src), skimage.data.chelsea()[..., ::-1])
    dst = tmp_path / "out.png"
    deploy = REPO / "prototxt" / "demo" / "colorization_deploy.prototxt"
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))
    cmd = [sys.executable, str(REPO / "tools" / "colorize_image.py"), "-img_in", str(src), "-img_out", str(dst),
           "-prototxt", str(deploy), "-caffemodel", str(weights)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(dst)).shape == (300, 451, 3)
    r = subprocess.run(cmd[:3] + [str(tmp_path / "missing.jpg")] + cmd[4:], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and "missing.jpg: no such file" in r.stderr
