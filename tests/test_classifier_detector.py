"""caffe.Classifier and caffe.Detector on a tiny net written here with chosen weights: predictions are
computed by hand (slicing, numpy pre-processing, inner product and softmax in float64)."""
from __future__ import annotations

import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe import io as cio
from torchcaffe.classifier import Classifier
from torchcaffe.detector import Detector
from torchcaffe.net_spec import NetSpec, layers as L

pytestmark = pytest.mark.skipif(not hasattr(caffe.Net, "forward_all"),
                                reason="Net.forward_all (pycaffe's batching, which these classes call) is not "
                                       "in this torchcaffe yet")

K = 4          # classes
MEAN = np.array([104.0, 117.0, 123.0])


def tiny_net(tmp_path, batch):
    """Input batch x 3 x 8 x 8 -> InnerProduct(K) -> Softmax, saved with seeded weights; returns
    (prototxt, caffemodel, W (K x 192), b (K,))."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, 8, 8]))
    n.score = L.InnerProduct(n.data, num_output=K)
    n.prob = L.Softmax(n.score)
    proto = tmp_path / "net.prototxt"
    proto.write_text(str(n.to_proto()))
    net = caffe.Net(str(proto), caffe.TEST)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((K, 192)).astype(np.float32) * 0.01
    b = rng.standard_normal(K).astype(np.float32)
    net.params["score"][0].data[...] = w
    net.params["score"][1].data[...] = b
    model = tmp_path / "net.caffemodel"
    net.save(str(model))
    return str(proto), str(model), w.astype(np.float64), b.astype(np.float64)


def by_hand(crop_hwc, w, b):
    """Class probabilities of one H x W x 3 RGB crop in [0, 1]: BGR, x255, minus mean, IP, softmax."""
    x = crop_hwc.astype(np.float64).transpose(2, 0, 1)[::-1] * 255 - MEAN[:, None, None]
    s = w @ x.ravel() + b
    e = np.exp(s - s.max())
    return e / e.sum()


def test_classifier_center_crop_and_oversample(tmp_path):
    proto, model, w, b = tiny_net(tmp_path, batch=10)
    clf = Classifier(proto, model, image_dims=(10, 12), mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))
    assert clf.phase == caffe.TEST and tuple(clf.crop_dims) == (8, 8)
    rng = np.random.default_rng(8)
    images = [rng.random((10, 12, 3)).astype(np.float32) for _ in range(3)]   # already image_dims: no resize
    center = clf.predict(images, oversample=False)
    assert center.shape == (3, K)
    for i, im in enumerate(images):
        np.testing.assert_allclose(center[i], by_hand(im[1:9, 2:10], w, b), rtol=1e-5, atol=1e-6)
    over = clf.predict(images)                           # 10 crops each, averaged
    assert over.shape == (3, K)
    for i, im in enumerate(images):
        boxes = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]
        crops = [im[y:y + 8, x:x + 8] for y, x in boxes]
        crops += [c[:, ::-1] for c in crops]
        expected = np.mean([by_hand(c, w, b) for c in crops], axis=0)
        np.testing.assert_allclose(over[i], expected, rtol=1e-5, atol=1e-6)
    # images of another size are resized to image_dims first
    small = [cio.resize_image(im, (5, 6)) for im in images]
    np.testing.assert_allclose(clf.predict(small, oversample=False),
                               clf.predict([cio.resize_image(s, (10, 12)) for s in small], oversample=False),
                               rtol=1e-5, atol=1e-6)


def test_classifier_default_image_dims_is_the_input(tmp_path):
    proto, model, w, b = tiny_net(tmp_path, batch=2)
    clf = Classifier(proto, model, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))
    im = np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(clf.predict([im], oversample=False)[0], by_hand(im, w, b), rtol=1e-5, atol=1e-6)


def write_png(path, rgb01):
    import skimage.io

    skimage.io.imsave(str(path), (rgb01 * 255).round().astype(np.uint8), check_contrast=False)
    return str(path)


def test_detector_windows(tmp_path):
    proto, model, w, b = tiny_net(tmp_path, batch=3)
    det = Detector(proto, model, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))
    rng = np.random.default_rng(2)
    files = [write_png(tmp_path / f"im{i}.png", rng.random((20, 24, 3))) for i in range(2)]
    windows = [[np.array([0, 0, 8, 8]), np.array([5, 9, 13, 17])], [np.array([12, 16, 20, 24])]]
    dets = det.detect_windows(list(zip(files, windows)))
    assert [d["filename"] for d in dets] == [files[0], files[0], files[1]]
    k = 0
    for f, ws in zip(files, windows):
        im = cio.load_image(f)
        for win in ws:
            assert np.array_equal(dets[k]["window"], win)
            crop = im[win[0]:win[2], win[1]:win[3]]           # 8 x 8: the net's input, no warping
            np.testing.assert_allclose(dets[k]["prediction"], by_hand(crop, w, b), rtol=1e-5, atol=1e-6)
            k += 1


def test_detector_context_pad_fills_beyond_the_image_with_the_mean(tmp_path):
    proto, model, _, _ = tiny_net(tmp_path, batch=1)
    det = Detector(proto, model, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0), context_pad=2)
    assert tuple(det.crop_dims) == (8, 8, 3)
    np.testing.assert_allclose(det.crop_mean.reshape(3), MEAN[::-1] / 255)   # raw RGB space
    im = np.random.default_rng(4).random((20, 20, 3)).astype(np.float32)
    out = det.crop(im, np.array([0, 0, 7, 7]))
    # by hand: crop 8, pad 2 -> scale 2; box (-4, -4, 12, 12), 17 px -> 8 px; 2 px of outside on top/left,
    # the image's rows/cols 0..11 resized into the remaining 6 x 6
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out[:2], np.broadcast_to(MEAN[::-1] / 255, (2, 8, 3)), rtol=1e-6)
    np.testing.assert_allclose(out[:, :2], np.broadcast_to(MEAN[::-1] / 255, (8, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(out[2:, 2:], cio.resize_image(im[0:12, 0:12], (6, 6)), rtol=1e-6)
    with pytest.raises(ValueError, match="outside"):
        det.crop(im, np.array([40, 40, 47, 47]))
