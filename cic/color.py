"""sRGB <-> CIE Lab (D65, 2 degree observer) on torch tensors, with numpy helpers.

The conversion is kornia's (``kornia.color.rgb_to_lab`` / ``lab_to_rgb``), itself a translation of
scikit-image's ``rgb2lab`` / ``lab2rgb``: sRGB companding, the sRGB->XYZ matrix, D65 white
(0.95047, 1, 1.08883), and the CIE f() with the 0.008856 / 7.787 linear segment. In float32 it agrees with
``skimage.color.rgb2lab`` to < 1e-4 on all 16.7M 8-bit colours (float64: ~1e-13), well inside the 1e-3 that
the toolkit requires, so no formulas are re-implemented here.

Conventions
-----------
* torch functions take channel-first tensors ``(..., 3, H, W)`` on any device and keep the device;
  float inputs keep their dtype, integer inputs (uint8) are converted to float32 first.
* ``rgb_to_lab``: RGB in [0, 1] (integer input is divided by 255).
* ``bgr255_to_lab``: BGR in [0, 255], as Caffe's Data layer delivers images (float or uint8). The released
  ``BGR2LabLayer`` cast to uint8 first; Data-layer values are whole numbers, so this is the same.
* ``lab_to_rgb``: L in [0, 100], a/b unbounded; output RGB clipped to [0, 1] unless ``clip=False``.
* ``fit_to_gamut``: Lab colours outside the sRGB gamut brought in by reducing their chroma at constant L and
  hue (``lab_to_rgb(..., keep_lightness=True)``).  Clipping R, G and B instead (the released scripts' way)
  changes L and hue; the colorizer must keep the input's own L.
* numpy helpers ``rgb2lab`` / ``lab2rgb`` mirror scikit-image: channel-last arrays ``(..., 3)``, numpy in
  and out, computed by the torch functions above.
"""
from __future__ import annotations

import kornia.color as _kc
import numpy as np
import torch

from ._interop import to_tensor


def _float(x: torch.Tensor, scale: float) -> torch.Tensor:
    if x.is_floating_point():
        return x
    return x.to(torch.float32) / scale


def _check(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (use rgb2lab/lab2rgb for numpy), got {type(x)}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name}: expected shape (..., 3, H, W), got {tuple(x.shape)}")


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``(..., 3, H, W)`` in [0, 1] (uint8: 0..255) -> Lab ``(..., 3, H, W)`` (L in [0, 100])."""
    _check(rgb, "rgb_to_lab")
    return _kc.rgb_to_lab(_float(rgb, 255.0))


def bgr255_to_lab(bgr: torch.Tensor) -> torch.Tensor:
    """BGR ``(..., 3, H, W)`` in [0, 255] (Caffe's Data blob) -> Lab ``(..., 3, H, W)``."""
    _check(bgr, "bgr255_to_lab")
    x = bgr if bgr.is_floating_point() else bgr.to(torch.float32)
    return _kc.rgb_to_lab(x.flip(-3) / 255.0)


def lab_to_rgb(lab: torch.Tensor, clip: bool = True, keep_lightness: bool = False) -> torch.Tensor:
    """Lab ``(..., 3, H, W)`` -> sRGB ``(..., 3, H, W)`` in [0, 1] (clipped unless ``clip=False``).

    ``keep_lightness=True``: out-of-gamut colours are first brought into the gamut by ``fit_to_gamut``
    (chroma reduced at constant L and hue), so the result's L is the input's; R, G, B are then within
    float rounding of [0, 1] and clipped to it.
    """
    _check(lab, "lab_to_rgb")
    if keep_lightness:
        return _kc.lab_to_rgb(fit_to_gamut(lab), clip=False).clamp(0, 1)
    return _kc.lab_to_rgb(_float(lab, 1.0), clip=clip)


# sRGB is inside [0, 1] exactly when linear RGB is (the companding is monotone and fixes 0 and 1), so the
# gamut test needs only Lab -> XYZ -> linear RGB, with kornia's constants (D65 white, its XYZ -> RGB matrix).
_XYZ_TO_LINEAR_RGB = ((3.2404813432005266, -1.5371515162713185, -0.4985363261688878),
                      (-0.9692549499965682, 1.8759900014898907, 0.0415559265582928),
                      (0.0556466391351772, -0.2040413383665112, 1.0573110696453443))
_WHITE = (0.95047, 1.0, 1.08883)


def _finv(f: torch.Tensor) -> torch.Tensor:
    return torch.where(f > 0.2068966, f * f * f, (f - 4.0 / 29.0) / 7.787)


def _inside(fy: torch.Tensor, Y: torch.Tensor, a: torch.Tensor, b: torch.Tensor, tol: float) -> torch.Tensor:
    """Whether Lab (flat tensors; ``fy = (L + 16) / 116``, ``Y = finv(fy)``) lies in the sRGB gamut: linear
    R, G, B within [-tol, 1 + tol].  (No clamp of a negative Z as kornia's lab_to_rgb does: an in-gamut
    colour never has one.)"""
    X, Z = _WHITE[0] * _finv(fy + a / 500.0), _WHITE[2] * _finv(fy - b / 200.0)
    ok = None
    for m in _XYZ_TO_LINEAR_RGB:
        c = m[0] * X + m[1] * Y + m[2] * Z
        inside = (c >= -tol) & (c <= 1 + tol)
        ok = inside if ok is None else ok & inside
    return ok


def fit_to_gamut(lab: torch.Tensor, steps: int = 12, tol: float = 1e-6) -> torch.Tensor:
    """Lab ``(..., 3, H, W)`` with every colour inside the sRGB gamut, at its own L and hue.

    L is clamped to [0, 100]; a colour outside the gamut (its unclipped sRGB outside [0, 1]) has its chroma
    (a, b) scaled by the largest factor s in [0, 1] that brings it inside, found per pixel by a bisection of
    ``steps`` halvings (``2**-12`` of the chroma by default; s = 0, the gray of the same L, is always inside).
    Colours inside are returned unchanged.  Scaling a and b together keeps the hue angle exactly.
    The test runs on linear RGB (Lab -> XYZ -> RGB, the constants of ``lab_to_rgb``), only for the pixels
    outside, so a whole photo costs little more than one conversion.
    """
    _check(lab, "fit_to_gamut")
    lab = _float(lab, 1.0)
    L = lab[..., 0, :, :].clamp(0, 100)
    a, b = lab[..., 1, :, :], lab[..., 2, :, :]
    fy = (L + 16.0) / 116.0
    outside = ~_inside(fy, _finv(fy), a, b, tol)
    if bool(outside.any()):
        fyp, ap, bp = fy[outside], a[outside], b[outside]
        Yp = _finv(fyp)
        lo = torch.zeros_like(fyp)
        hi = torch.ones_like(fyp)
        for _ in range(steps):
            mid = (lo + hi) / 2
            ok = _inside(fyp, Yp, ap * mid, bp * mid, tol)
            lo = torch.where(ok, mid, lo)
            hi = torch.where(ok, hi, mid)
        a, b = a.clone(), b.clone()
        a[outside] = ap * lo
        b[outside] = bp * lo
    return torch.stack([L, a, b], dim=-3)


def _channel_last(fn, img: np.ndarray, **kw) -> np.ndarray:
    arr = np.asarray(img)
    if arr.shape[-1:] != (3,):
        raise ValueError(f"expected a channel-last array (..., 3), got shape {arr.shape}")
    t = to_tensor(arr).reshape(-1, 3).T.reshape(3, -1, 1)
    out = fn(t, **kw)
    return out.reshape(3, -1).T.reshape(arr.shape).numpy()


def rgb2lab(rgb: np.ndarray) -> np.ndarray:
    """numpy, like ``skimage.color.rgb2lab``: RGB ``(..., 3)`` (float in [0, 1] or uint8) -> Lab ``(..., 3)``.

    Float input keeps its precision (float64 in, float64 out); uint8 is computed in float32.
    """
    return _channel_last(rgb_to_lab, rgb)


def lab2rgb(lab: np.ndarray, clip: bool = True, keep_lightness: bool = False) -> np.ndarray:
    """numpy, like ``skimage.color.lab2rgb``: Lab ``(..., 3)`` -> RGB ``(..., 3)`` floats in [0, 1].

    ``keep_lightness=True``: out-of-gamut colours lose chroma at constant L instead of being clipped
    (``fit_to_gamut``)."""
    return _channel_last(lab_to_rgb, lab, clip=clip, keep_lightness=keep_lightness)
