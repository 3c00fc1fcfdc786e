"""cic.color (sRGB <-> Lab) against scikit-image, and cic.gray (the supplementary's grayscale test)."""
import warnings

import numpy as np
import pytest
import torch
from skimage import color

import cic
from cic_helpers import IMAGES, real_rgb

TOL = 1e-3


def dense_8bit(step=3):
    """Every ``step``-th 8-bit level per channel, plus 255: (M, 3) uint8 (step 3: 636,056 colours)."""
    lv = np.unique(np.r_[np.arange(0, 256, step), 255]).astype(np.uint8)
    return np.stack(np.meshgrid(lv, lv, lv, indexing="ij"), -1).reshape(-1, 3)


@pytest.fixture(scope="module")
def dense():
    rgb = dense_8bit()
    return rgb, color.rgb2lab(rgb.reshape(-1, 1, 3)).reshape(-1, 3)


def test_rgb2lab_dense_8bit_uint8_float32(dense):
    rgb, ref = dense
    lab = cic.rgb2lab(rgb)
    assert lab.dtype == np.float32 and lab.shape == rgb.shape
    assert np.abs(lab - ref).max() < TOL


def test_rgb2lab_dense_8bit_float64_is_exact(dense):
    rgb, ref = dense
    lab = cic.rgb2lab(rgb / 255.0)
    assert lab.dtype == np.float64
    assert np.abs(lab - ref).max() < 1e-9


def test_rgb_to_lab_torch_channel_first_real_photos():
    for name in IMAGES:
        img = real_rgb(name)
        t = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]  # 1x3xHxW
        lab = cic.rgb_to_lab(t)
        assert lab.shape == t.shape and lab.dtype == torch.float32
        ref = color.rgb2lab(img).transpose(2, 0, 1)[None]
        assert np.abs(lab.numpy() - ref).max() < TOL, name


def test_bgr255_to_lab_as_caffe_delivers():
    # Caffe's Data blob: N x 3 x H x W, BGR, floats 0..255.
    imgs = np.stack([real_rgb(n)[:120, :160] for n in IMAGES])               # N x H x W x 3 RGB uint8
    bgr = torch.from_numpy(imgs[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32))
    lab = cic.bgr255_to_lab(bgr)
    ref = color.rgb2lab(imgs).transpose(0, 3, 1, 2)
    assert lab.shape == bgr.shape
    assert np.abs(lab.numpy() - ref).max() < TOL
    # uint8 input gives the same
    assert torch.allclose(cic.bgr255_to_lab(bgr.to(torch.uint8)), lab)


def test_lab2rgb_on_in_gamut_lab(dense):
    rgb, lab = dense
    out = cic.lab2rgb(lab.astype(np.float32))
    ref = color.lab2rgb(lab.reshape(-1, 1, 3)).reshape(-1, 3)
    assert np.abs(out - ref).max() < TOL
    assert np.abs(out - rgb / 255.0).max() < TOL  # round trip


def test_lab2rgb_out_of_gamut_is_clipped_like_skimage():
    rng = np.random.default_rng(0)
    lab = np.stack([rng.uniform(0, 100, 20000), rng.uniform(-128, 127, 20000), rng.uniform(-128, 127, 20000)], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about negative Z values
        ref = color.lab2rgb(lab.reshape(-1, 1, 3)).reshape(-1, 3)
    out = cic.lab2rgb(lab)
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(out - ref).max() < 1e-6


def test_lab_to_rgb_torch_keeps_dtype_and_shape():
    lab = torch.tensor(color.rgb2lab(real_rgb("coffee")[:32, :48]).transpose(2, 0, 1)[None])  # float64
    rgb = cic.lab_to_rgb(lab)
    assert rgb.dtype == torch.float64 and rgb.shape == lab.shape
    assert np.abs(rgb[0].permute(1, 2, 0).numpy() - real_rgb("coffee")[:32, :48] / 255.0).max() < 1e-6


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        cic.rgb_to_lab(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError):
        cic.rgb2lab(np.zeros((4, 4, 2)))


# ---- grayscale test ------------------------------------------------------------------------------------


def test_is_gray_threshold_is_inclusive():
    ab = torch.zeros(4, 2, 3, 3)
    ab[1, 0, 1, 1] = 5.0        # max |a| = 5: still gray ("no pixel above 5")
    ab[2, 1, 2, 0] = -5.01      # |b| just above 5: colour
    ab[3, 0, 0, 0] = 7.0
    assert cic.is_gray(ab).tolist() == [True, True, False, False]
    assert cic.is_gray(ab, threshold=8).tolist() == [True, True, True, True]
    assert cic.is_gray(ab, threshold=0).tolist() == [True, False, False, False]


def test_gray_photo_and_colour_photo():
    img = real_rgb("astronaut")
    gray = (color.rgb2gray(img) * 255).round().astype(np.uint8)
    gray3 = np.stack([gray] * 3, -1)
    assert not cic.is_gray_image(img)
    assert cic.is_gray_image(gray3)
    # batch form on ab from scikit-image, numpy in -> numpy out
    ab = np.stack([color.rgb2lab(im)[..., 1:].transpose(2, 0, 1) for im in (img, gray3)])
    out = cic.is_gray(ab)
    assert isinstance(out, np.ndarray) and out.tolist() == [False, True]


def test_nongray_mask_shape_and_values():
    ab = torch.zeros(3, 2, 4, 5)
    ab[0, 1, 3, 4] = 30.0
    ab[2, 0, 0, 0] = -6.0
    m = cic.nongray_mask(ab)
    assert m.shape == (3, 1, 4, 5) and m.dtype == ab.dtype
    assert torch.equal(m[:, 0, 0, 0], torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(m, m[:, :, :1, :1].expand_as(m))
