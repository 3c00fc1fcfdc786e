"""From predicted bin scores to ab, and from ab back to a colour image (paper Sec. 3.2, Eq. 5).

Scores are the network's logits ``z`` ``(N, Q, *spatial)`` (the released ``conv8_313``), or probabilities
with ``logits=False``. The annealed mean is ``H(z) = sum_q softmax(z / T)_q * c_q``: T = 1 gives the mean of
the predicted distribution, T -> 0 its mode, and the paper's (and the released deploy net's) T = 0.38
(a Scale by 2.606 = 1/0.38 before the Softmax, then a 1x1 convolution with the bin centres as weights).
On probabilities, ``softmax(log(p) / T)`` is the paper's re-normalized ``exp(log(p) / T)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._interop import numpy_io
from .bins import centers_on

#: The paper's temperature.
DEFAULT_T = 0.38


def _logits(scores: torch.Tensor, logits: bool) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor or numpy array, got {type(scores)}")
    if scores.dim() < 2:
        raise ValueError(f"expected scores of shape (N, Q, ...), got {tuple(scores.shape)}")
    s = scores if scores.is_floating_point() else scores.to(torch.float32)
    return s if logits else torch.log(s.clamp_min(torch.finfo(s.dtype).tiny))


def _expect(prob: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # sum_q prob[:, q] * c[q, :] -> (N, 2, *spatial)
    return torch.einsum("nq...,qc->nc...", prob, c)


@numpy_io
def decode_mode(scores: torch.Tensor, centers=None, logits: bool = True) -> torch.Tensor:
    """ab ``(N, 2, *spatial)`` of the most probable bin."""
    z = _logits(scores, logits)
    c, _ = centers_on(centers, z)
    return c[z.argmax(dim=1)].movedim(-1, 1)


@numpy_io
def annealed_mean(scores: torch.Tensor, T: float = DEFAULT_T, centers=None, logits: bool = True) -> torch.Tensor:
    """Annealed mean ab ``(N, 2, *spatial)`` of ``softmax(z / T)`` over the bins; T = 0 is the mode."""
    if T < 0:
        raise ValueError(f"annealed_mean: T must be >= 0, got {T}")
    if T == 0:
        return decode_mode(scores, centers, logits)
    z = _logits(scores, logits)
    c, _ = centers_on(centers, z)
    if c.shape[0] != z.shape[1]:
        raise ValueError(f"annealed_mean: {z.shape[1]} score channels but {c.shape[0]} bins")
    return _expect(torch.softmax(z / T, dim=1), c)


@numpy_io
def decode_mean(scores: torch.Tensor, centers=None, logits: bool = True) -> torch.Tensor:
    """Mean ab ``(N, 2, *spatial)`` of the predicted distribution (the annealed mean at T = 1)."""
    return annealed_mean(scores, 1.0, centers, logits)


@numpy_io
def upsample_bilinear(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` to ``size = (H', W')``.

    Exactly ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)`` by default:
    half-pixel centres (output pixel i samples input coordinate (i + 0.5) * H / H' - 0.5), coordinates
    clamped at the edges, no antialiasing.
    """
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=align_corners)


@numpy_io
def colorize(L: torch.Tensor, ab: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] from the input's lightness ``L`` ``(N, 1, H, W)`` (0..100) and a
    predicted ``ab`` ``(N, 2, h, w)``, bilinearly upsampled to H x W when the sizes differ."""
    from .color import lab_to_rgb

    if ab.shape[-2:] != L.shape[-2:]:
        ab = upsample_bilinear(ab, L.shape[-2:])
    return lab_to_rgb(torch.cat([L.to(ab.dtype), ab], dim=1), clip=clip)
