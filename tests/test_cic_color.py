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


# --- fit_to_gamut: out-of-gamut colours lose chroma at constant L (checked with scikit-image) ---------------

def _random_lab(n, seed=0):
    """Lab colours across the whole L range with chroma up to 130: most are outside the sRGB gamut."""
    rng = np.random.default_rng(seed)
    L = rng.uniform(0, 100, n)
    c, h = rng.uniform(0, 130, n), rng.uniform(-np.pi, np.pi, n)
    return np.stack([L, c * np.cos(h), c * np.sin(h)], -1)


def _unclipped_srgb(lab):
    """scikit-image's Lab -> XYZ, then XYZ -> linear RGB -> sRGB companding without its final clip."""
    with warnings.catch_warnings():  # far out of gamut, Z < 0 is clipped (and flagged out of gamut anyway)
        warnings.simplefilter("ignore", UserWarning)
        xyz = color.lab2xyz(lab.reshape(-1, 1, 3)).reshape(-1, 3)
    lin = xyz @ color.colorconv.rgb_from_xyz.T
    return np.where(lin > 0.0031308, 1.055 * np.abs(lin) ** (1 / 2.4) * np.sign(lin) - 0.055, 12.92 * lin)


def test_fit_to_gamut_keeps_lightness_and_hue_on_8bit_output():
    lab = _random_lab(20000)
    assert (np.abs(_unclipped_srgb(lab) - 0.5) > 0.5).any(1).mean() > 0.5  # mostly out of gamut
    rgb8 = np.round(255 * cic.lab2rgb(lab.astype(np.float32), keep_lightness=True)).astype(np.uint8)
    back = color.rgb2lab(rgb8.reshape(-1, 1, 3)).reshape(-1, 3)
    assert np.abs(back[:, 0] - lab[:, 0]).max() < 1.0
    # the hue is kept where enough chroma is left for 8-bit rounding to leave the angle defined
    chroma = np.hypot(back[:, 1], back[:, 2])
    keep = chroma > 10
    dh = np.angle(np.exp(1j * (np.arctan2(back[keep, 2], back[keep, 1]) - np.arctan2(lab[keep, 2], lab[keep, 1]))))
    assert keep.mean() > 0.3 and np.degrees(np.abs(dh)).max() < 5
    # the clipping that the released scripts do moves L much more on the same colours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        clipped = np.round(255 * color.lab2rgb(lab.reshape(-1, 1, 3)).reshape(-1, 3)).astype(np.uint8)
    dl_clip = np.abs(color.rgb2lab(clipped.reshape(-1, 1, 3)).reshape(-1, 3)[:, 0] - lab[:, 0])
    assert np.percentile(dl_clip, 75) > 3 and dl_clip.max() > 10


def test_fit_to_gamut_is_inside_maximal_and_leaves_gamut_colours_alone():
    lab = torch.from_numpy(_random_lab(5000, seed=1).T.reshape(1, 3, 50, 100)).to(torch.float64)
    fit = cic.fit_to_gamut(lab)
    f = fit[0].reshape(3, -1).T.numpy()
    x = lab[0].reshape(3, -1).T.numpy()
    np.testing.assert_array_equal(f[:, 0], x[:, 0])
    scale = np.hypot(f[:, 1], f[:, 2]) / np.maximum(np.hypot(x[:, 1], x[:, 2]), 1e-12)
    assert (scale <= 1 + 1e-12).all()
    s_rgb = _unclipped_srgb(f)
    assert (s_rgb > -1e-4).all() and (s_rgb < 1 + 1e-4).all()  # inside, by scikit-image's formulas
    # maximal, up to the bisection's 2**-12 of the chroma: a little more chroma (2**-10) leaves the gamut for
    # every colour that was reduced
    reduced = scale < 1 - 1e-9
    more = x[reduced].copy()
    more[:, 1:] *= (scale[reduced] + 2.0 ** -10)[:, None]
    assert (np.abs(_unclipped_srgb(more) - 0.5) > 0.5 + 2e-6).any(1).all()
    # colours already inside are returned as they are
    inside = (np.abs(_unclipped_srgb(x) - 0.5) <= 0.5 - 1e-4).all(1)
    assert inside.sum() > 100
    np.testing.assert_allclose(f[inside], x[inside], rtol=0, atol=1e-12)
