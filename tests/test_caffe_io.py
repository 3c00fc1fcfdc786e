"""torchcaffe.io: pycaffe's caffe.io (images, Transformer, BlobProto / Datum conversion)."""
import cv2
import numpy as np
import pytest

from torchcaffe import io as cio
from torchcaffe.proto import caffe_pb2

from format_helpers import golden


# ---------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------

def _write_png(path, rgb_or_gray):
    a = np.asarray(rgb_or_gray)
    if a.ndim == 3 and a.shape[2] == 3:
        a = a[:, :, ::-1]            # cv2 writes BGR
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, [2, 1, 0, 3]]
    assert cv2.imwrite(str(path), a)


def test_load_image_color_gray_alpha(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)          # red, top left
    rgb[4, 6] = (0, 0, 51)
    _write_png(tmp_path / "c.png", rgb)
    img = cio.load_image(str(tmp_path / "c.png"))
    assert img.shape == (5, 7, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[0, 0], [1, 0, 0])            # RGB order
    np.testing.assert_allclose(img[4, 6], [0, 0, 0.2], atol=1e-7)
    gray_of_color = cio.load_image(str(tmp_path / "c.png"), color=False)
    assert gray_of_color.shape == (5, 7, 1) and 0 < gray_of_color[0, 0, 0] < 1

    g = (np.arange(35, dtype=np.uint8) * 7).reshape(5, 7)
    _write_png(tmp_path / "g.png", g)
    tiled = cio.load_image(str(tmp_path / "g.png"))
    assert tiled.shape == (5, 7, 3)
    np.testing.assert_allclose(tiled[:, :, 1], g / 255.0, atol=1e-7)
    assert np.array_equal(tiled[:, :, 0], tiled[:, :, 2])
    single = cio.load_image(str(tmp_path / "g.png"), color=False)
    assert single.shape == (5, 7, 1) and single.dtype == np.float32
    np.testing.assert_allclose(single[:, :, 0], g / 255.0, atol=1e-7)

    rgba = np.dstack([rgb, np.full((5, 7), 128, np.uint8)])
    _write_png(tmp_path / "a.png", rgba)
    noalpha = cio.load_image(str(tmp_path / "a.png"))
    assert noalpha.shape == (5, 7, 3)
    np.testing.assert_allclose(noalpha[0, 0], [1, 0, 0])


def _bilinear_matrix(n_in, n_out):
    """Half-pixel-centred linear interpolation with zeros beyond the border (scikit-image's order-1 resize
    in mode 'constant', without anti-aliasing, as in Caffe's day)."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        c = (o + 0.5) * n_in / n_out - 0.5
        i0 = int(np.floor(c))
        for i, w in ((i0, 1 - (c - i0)), (i0 + 1, c - i0)):
            if 0 <= i < n_in:
                m[o, i] += w
    return m


def test_resize_image_pins_caffe_era_skimage_behaviour():
    rng = np.random.default_rng(0)
    im = (rng.random((3, 4, 1)) * 5 + 2).astype(np.float32)
    out = cio.resize_image(im, (7, 9))
    assert out.shape == (7, 9, 1) and out.dtype == np.float32
    lo, hi = im.min(), im.max()
    std = (im[:, :, 0] - lo) / (hi - lo)
    ref = _bilinear_matrix(3, 7) @ std @ _bilinear_matrix(4, 9).T * (hi - lo) + lo
    np.testing.assert_allclose(out[:, :, 0], ref, rtol=1e-5, atol=1e-5)
    # halving is the 2x2 block mean: no anti-aliasing blur
    im3 = rng.random((4, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(cio.resize_image(im3, (2, 3)), im3.reshape(2, 2, 3, 2, 3).mean(axis=(1, 3)),
                               atol=1e-6)
    const = np.full((4, 5, 3), 0.25, np.float32)
    c = cio.resize_image(const, (8, 2))
    assert c.shape == (8, 2, 3) and c.dtype == np.float32 and np.all(c == 0.25)
    # other channel counts go through ndimage.zoom
    two = rng.random((4, 4, 2)).astype(np.float32)
    z = cio.resize_image(two, (8, 8))
    assert z.shape == (8, 8, 2) and z.dtype == np.float32
    np.testing.assert_allclose(z[0, 0], two[0, 0], atol=1e-6)  # zoom maps corners onto corners


def test_oversample_crops_and_mirrors():
    ims = [np.arange(6 * 8 * 2, dtype=np.float32).reshape(6, 8, 2) + 1000 * k for k in range(2)]
    crops = cio.oversample(ims, (4, 4))
    assert crops.shape == (20, 4, 4, 2) and crops.dtype == np.float32
    for k, im in enumerate(ims):
        c = crops[10 * k:10 * k + 10]
        np.testing.assert_array_equal(c[0], im[0:4, 0:4])
        np.testing.assert_array_equal(c[1], im[0:4, 4:8])
        np.testing.assert_array_equal(c[2], im[2:6, 0:4])
        np.testing.assert_array_equal(c[3], im[2:6, 4:8])
        np.testing.assert_array_equal(c[4], im[1:5, 2:6])   # centre
        np.testing.assert_array_equal(c[5:], c[:5, :, ::-1, :])
    odd = cio.oversample([np.zeros((5, 5, 1))], (2, 3))
    assert odd.shape == (10, 2, 3, 1)


# ---------------------------------------------------------------------------------------------------------
# BlobProto and Datum
# ---------------------------------------------------------------------------------------------------------

def test_blobproto_arrays():
    a = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 3
    bp = cio.array_to_blobproto(a, diff=-a)
    assert list(bp.shape.dim) == [2, 3, 4] and not bp.HasField("num")
    back = cio.blobproto_to_array(bp)
    assert back.dtype == np.float64 and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, a.astype(np.float32))
    np.testing.assert_array_equal(cio.blobproto_to_array(bp, return_diff=True), -a.astype(np.float32))
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=2, data=[1, 2, 3, 4])
    assert cio.blobproto_to_array(legacy).shape == (1, 2, 1, 2)
    ints = cio.array_to_blobproto(np.array([[1, 2], [3, 16777217]]))
    assert list(ints.data) == [1, 2, 3, 16777216]
    arrs = [np.ones((2, 2)), np.zeros(3), np.full((1, 2, 1, 1), 5.0)]
    s = cio.arraylist_to_blobprotovector_str(arrs)
    assert cio.arraylist_to_blobprotovecor_str(arrs) == s     # pycaffe's own spelling
    got = cio.blobprotovector_str_to_arraylist(s)
    assert [g.shape for g in got] == [(2, 2), (3,), (1, 2, 1, 1)]
    for g, w in zip(got, arrs):
        np.testing.assert_array_equal(g, w)


def test_datum_conversion_raw_and_float():
    u8 = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    d = cio.array_to_datum(u8, label=7)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 7)
    assert d.data == u8.tobytes() and len(d.float_data) == 0
    back = cio.datum_to_array(d)
    assert back.dtype == np.uint8 and np.array_equal(back, u8)
    back[0, 0, 0] = 99                                       # a writable copy
    f = cio.array_to_datum(u8.astype(np.float32) / 2)
    assert not f.HasField("label") and len(f.data) == 0 and len(f.float_data) == 24
    fb = cio.datum_to_array(f)
    assert fb.dtype == np.float64 and np.array_equal(fb, u8 / 2)
    with pytest.raises(ValueError):
        cio.array_to_datum(np.zeros((2, 2)))


def test_datum_to_array_golden_lmdb():
    lmdb = pytest.importorskip("lmdb")
    ref = np.load(golden("data_and_colornet", "data_layer_golden.npz"))
    env = lmdb.open(golden("data_and_colornet", "datum_lmdb"), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            for k in range(5):
                d = caffe_pb2.Datum()
                d.ParseFromString(txn.get(f"{k:08d}".encode()))
                np.testing.assert_array_equal(cio.datum_to_array(d), ref["images_chw_bgr"][k])
                assert d.label == ref["labels"][k]
    finally:
        env.close()


def test_datum_to_array_encoded():
    bgr = np.random.default_rng(3).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", bgr)
    d = caffe_pb2.Datum(data=png.tobytes(), encoded=True, label=1)
    arr = cio.datum_to_array(d)
    assert arr.shape == (3, 6, 5) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, bgr.transpose(2, 0, 1))
    ok, gpng = cv2.imencode(".png", bgr[:, :, 0])
    garr = cio.datum_to_array(caffe_pb2.Datum(data=gpng.tobytes(), encoded=True))
    assert garr.shape == (1, 6, 5)
    with pytest.raises(ValueError, match="cannot be decoded"):
        cio.datum_to_array(caffe_pb2.Datum(data=b"not an image", encoded=True))


# ---------------------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------------------

def _transformer():
    t = cio.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_transformer_preprocess_order_and_inverse():
    rng = np.random.default_rng(5)
    rgb = rng.random((4, 5, 3)).astype(np.float32)
    keep = rgb.copy()
    t = _transformer()
    out = t.preprocess("data", rgb)
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    expected = (rgb.transpose(2, 0, 1)[[2, 1, 0]] * 255 - np.array([104, 117, 123])[:, None, None]) * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)
    assert np.array_equal(rgb, keep)                          # the caller's array is not touched
    np.testing.assert_allclose(t.deprocess("data", out[None]), rgb, atol=1e-5)
    # a different size is resized first (before transposing), to the input's H x W
    big = rng.random((8, 10, 3)).astype(np.float32)
    res = t.preprocess("data", big)
    expected_big = (cio.resize_image(big, (4, 5)).transpose(2, 0, 1)[[2, 1, 0]] * 255
                    - np.array([104, 117, 123])[:, None, None]) * 0.5
    np.testing.assert_allclose(res, expected_big, rtol=1e-6, atol=1e-4)
    # only a transpose: still no write into the caller's array
    t2 = cio.Transformer({"x": (1, 3, 4, 5)})
    t2.set_transpose("x", (2, 0, 1))
    t2.set_raw_scale("x", 2.0)
    np.testing.assert_allclose(t2.preprocess("x", rgb), keep.transpose(2, 0, 1) * 2)
    assert np.array_equal(rgb, keep)


def test_transformer_checks():
    t = cio.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.set_raw_scale("nope", 1)
    with pytest.raises(Exception, match="Transpose order"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(Exception, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ValueError, match="incompatible"):
        t.set_mean("data", np.zeros((3, 2, 2)))
    t.set_mean("data", np.zeros((3, 4, 5)))                   # elementwise mean of the input's shape
    assert t.mean["data"].shape == (3, 4, 5)
