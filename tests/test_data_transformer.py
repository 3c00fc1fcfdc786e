"""DataTransformer: Caffe's crop / mirror / mean / scale, encoded Datums, and the randomness of TRAIN crops."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses get 1 explicitly (data_helpers)

import numpy as np
import pytest

from torchcaffe.data_transformer import DataTransformer, TransformError, decode_datum
from torchcaffe.proto import caffe_pb2

from data_helpers import png_bytes

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def tparam(**kw):
    p = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if k == "mean_value":
            p.mean_value.extend(v)
        else:
            setattr(p, k, v)
    return p


def caffe_reference(img, crop, h_off, w_off, mirror, mean_file=None, mean_values=None, scale=1.0):
    """BVLC DataTransformer::Transform(const Datum&, Dtype*), loop for loop, in float32."""
    c_, H, W = img.shape
    height = width = crop if crop else None
    if not crop:
        height, width = H, W
    out = np.zeros(c_ * height * width, dtype=np.float32)
    flat = img.reshape(-1)
    mflat = None if mean_file is None else mean_file.reshape(-1)
    for c in range(c_):
        for h in range(height):
            for w in range(width):
                data_index = (c * H + h_off + h) * W + w_off + w
                top_index = (c * height + h) * width + ((width - 1 - w) if mirror else w)
                x = np.float32(flat[data_index])
                if mflat is not None:
                    out[top_index] = (x - np.float32(mflat[data_index])) * np.float32(scale)
                elif mean_values is not None:
                    out[top_index] = (x - np.float32(mean_values[c])) * np.float32(scale)
                else:
                    out[top_index] = x * np.float32(scale)
    return out.reshape(c_, height, width)


def test_test_phase_centre_crop_mean_value_scale():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(3, 9, 12), dtype=np.uint8)
    for means in ([104.0, 117.0, 123.0], [100.5]):
        t = DataTransformer(tparam(crop_size=5, mean_value=means, scale=0.017), TEST)
        assert not t.needs_rand
        out = t.transform([img])[0]
        mv = means * 3 if len(means) == 1 else means
        ref = caffe_reference(img, 5, (9 - 5) // 2, (12 - 5) // 2, False, mean_values=mv, scale=0.017)
        np.testing.assert_array_equal(out, ref)


def test_train_mirror_and_mean_file_follow_caffe_indexing(tmp_path):
    from torchcaffe.protoio import array_to_proto, write_binaryproto

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(3, 10, 11), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(1, 3, 10, 11)).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    write_binaryproto(array_to_proto(mean), str(path))
    t = DataTransformer(tparam(crop_size=6, mirror=True, mean_file=str(path), scale=0.5), TRAIN)
    assert t.needs_rand
    for mirror in (False, True):
        for h_off, w_off in ((0, 0), (4, 5), (2, 3)):
            draws = (np.array([mirror]), np.array([h_off]), np.array([w_off]))
            out = t.transform([img], draws=draws)[0]
            ref = caffe_reference(img, 6, h_off, w_off, mirror, mean_file=mean[0], scale=0.5)
            np.testing.assert_array_equal(out, ref)


def test_no_crop_float_data_and_scale_only():
    d = caffe_pb2.Datum(channels=2, height=3, width=4)
    vals = np.arange(24, dtype=np.float32) * 0.25
    d.float_data.extend(vals.tolist())
    t = DataTransformer(tparam(scale=2.0), TEST)
    assert t.infer_shape(d) == (2, 3, 4)
    out = t.transform_datums([d])
    np.testing.assert_array_equal(out[0], vals.reshape(2, 3, 4) * 2)


def test_parameter_conflicts_and_shape_errors(tmp_path):
    with pytest.raises(TransformError, match="mean_file and mean_value"):
        DataTransformer(tparam(mean_file="x", mean_value=[1.0]), TEST)
    with pytest.raises(TransformError, match="force_color and force_gray"):
        DataTransformer(tparam(force_color=True, force_gray=True), TEST)
    with pytest.raises(TransformError, match="does not exist"):
        DataTransformer(tparam(mean_file=str(tmp_path / "missing.binaryproto")), TEST)
    t = DataTransformer(tparam(crop_size=8), TEST)
    with pytest.raises(TransformError, match="smaller than crop_size"):
        t.transform([np.zeros((3, 6, 10), np.uint8)])
    t = DataTransformer(tparam(mean_value=[1.0, 2.0]), TEST)
    with pytest.raises(TransformError, match="1 mean_value or as many as channels"):
        t.transform([np.zeros((3, 4, 4), np.uint8)])
    t = DataTransformer(tparam(), TEST)
    with pytest.raises(TransformError, match="all images must match"):
        t.transform([np.zeros((3, 4, 4), np.uint8), np.zeros((3, 5, 4), np.uint8)])


def test_variable_sizes_with_crop():
    t = DataTransformer(tparam(crop_size=4), TEST)
    a = np.arange(3 * 6 * 6, dtype=np.uint8).reshape(3, 6, 6)
    b = np.arange(3 * 8 * 10, dtype=np.uint8).reshape(3, 8, 10)
    out = t.transform([a, b])
    np.testing.assert_array_equal(out[0], a[:, 1:5, 1:5])
    np.testing.assert_array_equal(out[1], b[:, 2:6, 3:7])


def test_encoded_datums_decode_like_caffe():
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    d = caffe_pb2.Datum(data=png_bytes(bgr), label=4, encoded=True)
    native = decode_datum(d)
    np.testing.assert_array_equal(native, bgr.transpose(2, 0, 1))
    import cv2

    gray = decode_datum(d, force_gray=True)
    assert gray.shape == (1, 7, 9)
    np.testing.assert_array_equal(gray[0], cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_GRAYSCALE))
    g1 = caffe_pb2.Datum(data=png_bytes(bgr[:, :, 0]), encoded=True)
    assert decode_datum(g1).shape == (1, 7, 9)  # native: as stored
    assert decode_datum(g1, force_color=True).shape == (3, 7, 9)
    t = DataTransformer(tparam(crop_size=5, force_gray=True, scale=0.5), TEST)
    assert t.infer_shape(d) == (1, 5, 5)
    out = t.transform_datums([d])
    np.testing.assert_array_equal(out[0], gray[:, 1:6, 2:7].astype(np.float32) * 0.5)
    with pytest.raises(TransformError, match="could not decode"):
        decode_datum(caffe_pb2.Datum(data=b"garbage", encoded=True))


def _positions(out, W):
    """(h_off, w_off, mirrored) of each output, from an image whose pixel value is h * W + w."""
    tl, tr = out[:, 0, 0, 0].astype(int), out[:, 0, 0, -1].astype(int)
    mirrored = tl > tr
    first = np.where(mirrored, tr, tl)
    return first // W, first % W, mirrored


def test_train_crops_and_mirrors_are_uniform_and_seeded():
    H = W = 12
    crop = 8
    img = (np.arange(H * W).reshape(1, H, W)).astype(np.uint8)
    t = DataTransformer(tparam(crop_size=crop, mirror=True), TRAIN)
    n = 6000
    rng = np.random.default_rng(1234)
    out = np.concatenate([t.transform([img] * 100, rng) for _ in range(n // 100)])
    h_off, w_off, mirrored = _positions(out, W)
    k = H - crop + 1
    # the output matches the drawn offsets exactly
    for i in range(0, n, 997):
        ref = img[:, h_off[i]:h_off[i] + crop, w_off[i]:w_off[i] + crop]
        np.testing.assert_array_equal(out[i], ref[:, :, ::-1] if mirrored[i] else ref)
    # chi-square goodness of fit against the uniform law (critical values at p = 0.001)
    joint = np.bincount(h_off * k + w_off, minlength=k * k)
    exp = n / (k * k)
    chi2_joint = ((joint - exp) ** 2 / exp).sum()
    assert chi2_joint < 51.18, (chi2_joint, joint)  # df = 24
    for axis in (h_off, w_off):
        c = np.bincount(axis, minlength=k)
        assert ((c - n / k) ** 2 / (n / k)).sum() < 18.47  # df = 4
    m = mirrored.sum()
    assert ((m - n / 2) ** 2 / (n / 2) * 2) < 10.83  # df = 1
    # mirroring is independent of the position: both halves of every cell are populated
    assert np.bincount((h_off * k + w_off)[mirrored], minlength=k * k).min() > 0
    # same generator seed -> same batch; another seed -> another batch
    a = t.transform([img] * 50, np.random.default_rng(7))
    b = t.transform([img] * 50, np.random.default_rng(7))
    c = t.transform([img] * 50, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_test_phase_mirror_is_random_as_in_caffe():
    # Caffe draws the mirror in every phase (param_.mirror() && Rand(2)); only the crop depends on the phase
    img = (np.arange(36).reshape(1, 6, 6)).astype(np.uint8)
    t = DataTransformer(tparam(crop_size=4, mirror=True), TEST)
    out = t.transform([img] * 400, np.random.default_rng(0))
    h_off, w_off, mirrored = _positions(out, 6)
    assert (h_off == 1).all() and (w_off == 1).all()
    assert 120 < mirrored.sum() < 280
