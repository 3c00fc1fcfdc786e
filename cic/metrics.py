"""The paper's AuC metric on ab errors (Table 1), raw and class-rebalanced, per image and per dataset.

Conventions (fixed here, used everywhere in the toolkit):

* error of a pixel: Euclidean distance in ab between prediction and ground truth, ``|ab_pred - ab_gt|_2``;
* cumulative curve: for each threshold t in 0, 1, ..., 150 (151 thresholds), the fraction of pixels with
  error ``<= t`` (so a perfect prediction scores 1 at every threshold, including t = 0);
* AuC: the mean of the curve over the 151 thresholds, a fraction in [0, 1] (the paper's 89.5 % = 0.895);
* class-rebalanced: each pixel is weighted by ``1 / p(q)``, q the nearest bin of its ground-truth ab.
  With ``prior=None`` p is the distribution of the ground-truth bins over the pixels being scored (the image,
  or the whole dataset for :class:`AucMeter`), which makes the rebalanced curve exactly the mean over the
  bins that occur of the per-bin curves. Pass a prior (e.g. the training ``prior_probs.npy``) to weight by
  that instead.
* a dataset's AuC pools all its pixels (:class:`AucMeter`); for images of one size that equals the mean of
  the per-image raw AuCs, which the meter also keeps.
"""
from __future__ import annotations

import torch

from ._interop import numpy_io
from .bins import as_centers
from .encode import nearest_bin

#: The paper's thresholds: 0..150 ab units in steps of 1.
MAX_THRESHOLD = 150


def default_thresholds(device=None, dtype=torch.float64) -> torch.Tensor:
    """0, 1, ..., 150."""
    return torch.arange(0, MAX_THRESHOLD + 1, device=device, dtype=dtype)


def _check_pair(pred_ab, gt_ab):
    if not isinstance(pred_ab, torch.Tensor) or not isinstance(gt_ab, torch.Tensor):
        raise TypeError("expected torch tensors (or numpy arrays)")
    if pred_ab.shape != gt_ab.shape or pred_ab.dim() < 2 or pred_ab.shape[1] != 2:
        raise ValueError(f"expected two ab arrays of one shape (N, 2, ...), got {tuple(pred_ab.shape)} "
                         f"and {tuple(gt_ab.shape)}")


@numpy_io
def ab_error(pred_ab: torch.Tensor, gt_ab: torch.Tensor) -> torch.Tensor:
    """Per-pixel ab L2 error ``(N, *spatial)``."""
    _check_pair(pred_ab, gt_ab)
    return torch.linalg.vector_norm(pred_ab.double() - gt_ab.double(), dim=1)


@numpy_io
def class_hits(pred_ab: torch.Tensor, gt_ab: torch.Tensor, thresholds=None, centers=None):
    """Per image and ground-truth bin: ``hits (N, Q, T)`` = pixels with error <= t, and ``totals (N, Q)``.

    Everything else in this module is computed from these counts.
    """
    err = ab_error(pred_ab, gt_ab)
    th = default_thresholds(err.device) if thresholds is None else torch.as_tensor(
        thresholds, dtype=torch.float64, device=err.device)
    if th.dim() != 1 or (th.numel() > 1 and (th[1:] <= th[:-1]).any()):
        raise ValueError("thresholds must be a 1-D increasing sequence")
    gt = gt_ab if gt_ab.is_floating_point() else gt_ab.float()
    q = as_centers(centers, gt).shape[0]
    cls = nearest_bin(gt, centers)                                  # (N, *spatial)
    n, t = err.shape[0], th.numel()
    pos = torch.searchsorted(th, err.reshape(n, -1).contiguous())   # first threshold >= err, t if none
    img = torch.arange(n, device=err.device)[:, None]
    key = (img * q + cls.reshape(n, -1)) * (t + 1) + pos
    hist = torch.bincount(key.reshape(-1), minlength=n * q * (t + 1)).reshape(n, q, t + 1)
    return hist.cumsum(dim=2)[..., :t], hist.sum(dim=2)


def _curve(hits: torch.Tensor, totals: torch.Tensor) -> torch.Tensor:
    return hits.sum(dim=-2).double() / totals.sum(dim=-1, keepdim=True).double()


def _rebalanced_curve(hits: torch.Tensor, totals: torch.Tensor, prior=None) -> torch.Tensor:
    tot = totals.double()
    if prior is None:
        w = torch.where(tot > 0, 1.0 / tot.clamp_min(1), torch.zeros_like(tot))
    else:
        p = torch.as_tensor(prior, dtype=torch.float64, device=tot.device)
        if p.shape != tot.shape[-1:]:
            raise ValueError(f"prior has shape {tuple(p.shape)}, expected ({tot.shape[-1]},)")
        if ((p <= 0) & (tot > 0)).any():
            raise ValueError("a ground-truth bin with prior probability 0 cannot be rebalanced")
        w = torch.where(p > 0, 1.0 / p.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(p))
        w = w.expand_as(tot)
    return (w[..., None] * hits.double()).sum(dim=-2) / (w * tot).sum(dim=-1, keepdim=True)


@numpy_io
def auc_curve(pred_ab: torch.Tensor, gt_ab: torch.Tensor, thresholds=None) -> torch.Tensor:
    """Per image: fraction of pixels with ab error <= t, ``(N, T)``, float64."""
    return _curve(*class_hits(pred_ab, gt_ab, thresholds))


@numpy_io
def auc(pred_ab: torch.Tensor, gt_ab: torch.Tensor, thresholds=None) -> torch.Tensor:
    """Per-image raw AuC ``(N,)`` in [0, 1]."""
    return _curve(*class_hits(pred_ab, gt_ab, thresholds)).mean(dim=-1)


@numpy_io
def rebalanced_auc(pred_ab: torch.Tensor, gt_ab: torch.Tensor, prior=None, centers=None,
                   thresholds=None) -> torch.Tensor:
    """Per-image class-rebalanced AuC ``(N,)`` in [0, 1] (``prior=None``: each image's own bin distribution,
    i.e. the mean over the bins present in the image of their AuCs)."""
    hits, totals = class_hits(pred_ab, gt_ab, thresholds, centers)
    return _rebalanced_curve(hits, totals, prior).mean(dim=-1)


class AucMeter:
    """Accumulates AuC statistics over a dataset, batch by batch, on the batches' device.

    ``update(pred_ab, gt_ab)`` takes ``(N, 2, *spatial)`` tensors (or numpy arrays). Afterwards:
    ``auc()`` / ``curve()`` pool all pixels; ``rebalanced_auc(prior=None)`` / ``rebalanced_curve`` weight
    pixels by the inverse frequency of their ground-truth bin over the whole dataset (or by 1/prior);
    ``per_image_auc`` / ``per_image_rebalanced_auc`` hold the per-image values.
    """

    def __init__(self, thresholds=None, centers=None):
        self.thresholds = thresholds
        self.centers = centers
        self.hits = None
        self.totals = None
        self._img_raw: list[torch.Tensor] = []
        self._img_reb: list[torch.Tensor] = []

    def update(self, pred_ab, gt_ab) -> None:
        hits, totals = class_hits(torch.as_tensor(pred_ab), torch.as_tensor(gt_ab), self.thresholds,
                                  self.centers)
        self._img_raw.append(_curve(hits, totals).mean(dim=-1).cpu())
        self._img_reb.append(_rebalanced_curve(hits, totals).mean(dim=-1).cpu())
        h, t = hits.sum(dim=0), totals.sum(dim=0)
        self.hits = h if self.hits is None else self.hits + h.to(self.hits.device)
        self.totals = t if self.totals is None else self.totals + t.to(self.totals.device)

    def _need(self):
        if self.hits is None:
            raise ValueError("AucMeter: no data")

    def curve(self) -> torch.Tensor:
        self._need()
        return _curve(self.hits, self.totals)

    def auc(self) -> float:
        return float(self.curve().mean())

    def rebalanced_curve(self, prior=None) -> torch.Tensor:
        self._need()
        return _rebalanced_curve(self.hits, self.totals, prior)

    def rebalanced_auc(self, prior=None) -> float:
        return float(self.rebalanced_curve(prior).mean())

    @property
    def per_image_auc(self) -> torch.Tensor:
        return torch.cat(self._img_raw) if self._img_raw else torch.empty(0, dtype=torch.float64)

    @property
    def per_image_rebalanced_auc(self) -> torch.Tensor:
        return torch.cat(self._img_reb) if self._img_reb else torch.empty(0, dtype=torch.float64)
