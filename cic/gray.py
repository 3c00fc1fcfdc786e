"""The grayscale test of the supplementary material (Sec. 2.2).

"An image was considered to be grayscale if no pixel had a value of ab above 5": an image is gray iff
``max over its pixels of max(|a|, |b|) <= threshold`` (threshold 5 by default). Gray images were excluded
from training and testing; in the training net they get weight 0 in the loss (``NonGrayMaskLayer``).
"""
from __future__ import annotations

import torch

from ._interop import numpy_io, to_tensor

#: The supplementary material's threshold on |a| and |b|.
GRAY_THRESHOLD = 5.0


def _max_abs_ab(ab: torch.Tensor) -> torch.Tensor:
    if not isinstance(ab, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor or numpy array, got {type(ab)}")
    if ab.dim() < 2 or ab.shape[1] != 2:
        raise ValueError(f"expected ab of shape (N, 2, ...), got {tuple(ab.shape)}")
    return ab.reshape(ab.shape[0], -1).abs().amax(dim=1)


@numpy_io
def is_gray(ab: torch.Tensor, threshold: float = GRAY_THRESHOLD) -> torch.Tensor:
    """Bool ``(N,)``: True for each image of ``ab`` ``(N, 2, *spatial)`` with no |a| or |b| above threshold."""
    return _max_abs_ab(ab) <= threshold


@numpy_io
def nongray_mask(ab: torch.Tensor, threshold: float = GRAY_THRESHOLD) -> torch.Tensor:
    """``(N, 1, *spatial)`` in ab's dtype: 1 at every pixel of a non-gray image, 0 in a gray one."""
    keep = (~is_gray(ab, threshold)).to(ab.dtype if ab.is_floating_point() else torch.float32)
    return keep.reshape((ab.shape[0], 1) + (1,) * (ab.dim() - 2)).expand(
        (ab.shape[0], 1) + tuple(ab.shape[2:])).contiguous()


def is_gray_image(rgb, threshold: float = GRAY_THRESHOLD) -> bool:
    """Is one RGB image ``(H, W, 3)`` (numpy or tensor; uint8, or float in [0, 1]) gray?"""
    from .color import rgb_to_lab

    lab = rgb_to_lab(to_tensor(rgb).movedim(-1, -3))
    return bool(is_gray(lab[1:].unsqueeze(0), threshold))
