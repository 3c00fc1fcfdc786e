"""Loss layers (SoftmaxWithLoss, EuclideanLoss, SoftmaxCrossEntropyLoss, SigmoidCrossEntropyLoss,
ContrastiveLoss, HingeLoss, InfogainLoss, MultinomialLogisticLoss) and Accuracy.

A loss layer's first top is a scalar (shape ``()``); its backward scales the gradient by that top's diff,
which the net sets to the loss weight before backward starts, as Caffe does.  Label bottoms take no gradient:
``allow_force_backward(1)`` is False and a backward asked for them is an error (Caffe: LOG(FATAL)).
"""
from __future__ import annotations

import numpy as np
import torch

from ..layer import Layer, TorchLayer, register
from ..proto import caffe_pb2
from ._common import FLT_MIN, canonical_axis, count, label_ints, no_backward

__all__ = ["SoftmaxWithLossLayer", "EuclideanLossLayer", "AccuracyLayer", "SoftmaxCrossEntropyLossLayer",
           "SigmoidCrossEntropyLossLayer", "ContrastiveLossLayer", "HingeLossLayer", "InfogainLossLayer",
           "MultinomialLogisticLossLayer"]

#: Caffe's kLOG_THRESHOLD: probabilities are clipped from below before the log
LOG_THRESHOLD = 1e-20


def _check_first_dims(layer, bottom) -> None:
    # Caffe's LossLayer::Reshape
    if bottom[0].num_axes and bottom[1].num_axes and bottom[0].shape[0] != bottom[1].shape[0]:
        raise layer.error(f"The data and label should have the same first dimension: bottom[0] "
                          f"{bottom[0].shape}, bottom[1] {bottom[1].shape}")


def _label_axis(layer, bottom, axis: int, field: str, what: str) -> None:
    """``layer.axis / outer / inner / C`` for predictions bottom[0] classified along ``axis`` (``field`` names
    it in errors), with Caffe's check that bottom[1] holds one label per prediction (``what``: the axis's name
    in Caffe's message)."""
    s = bottom[0].shape
    layer.axis = canonical_axis(layer, axis, len(s), field)
    layer.outer = count(s, 0, layer.axis)
    layer.inner = count(s, layer.axis + 1)
    layer.C = s[layer.axis]
    if layer.outer * layer.inner != bottom[1].count:
        raise layer.error(
            f"Number of labels must match number of predictions; e.g., if {what} axis == 1 and prediction "
            "shape is (N, C, H, W), label count (number of labels) must be N*H*W, with integer values in "
            f"{{0, 1, ..., C-1}}. (prediction shape {s}, axis {layer.axis}, label shape {bottom[1].shape})")


def _labels_in_range(layer, lbl: torch.Tensor, valid: torch.Tensor, num_classes: int) -> None:
    bad = valid & ((lbl < 0) | (lbl >= num_classes))
    if lbl.device.type != "cpu":
        # no host round trip on a device: an out-of-range label stops the run with a device-side assert
        # (Caffe's GPU code does not check at all)
        torch._assert_async(~bad.any())
        return
    if bool(bad.any()):
        v = lbl[bad][0].item()
        raise layer.error(f"label value {v} is out of range [0, {num_classes}) (and not the ignore_label)")


class _Loss(Layer):
    is_loss = True
    auto_top_blobs = True
    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def _no_label_grad(self, propagate_down) -> None:
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error(f"{self.layer_param.type} Layer cannot backpropagate to label inputs.")


@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(_Loss):
    """Multinomial logistic loss of the softmax (over ``softmax_param.axis``) of bottom[0] against the
    integer labels in bottom[1] (count = outer * inner); loss = -sum log(max(prob[label], FLT_MIN)) /
    normalizer, normalizer = max(1, FULL: outer*inner | VALID: #non-ignored | BATCH_SIZE: outer | NONE: 1);
    legacy ``normalize: false`` means BATCH_SIZE.  An optional second top receives the probabilities."""

    exact_tops = None
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = (caffe_pb2.LossParameter.VALID if lp.normalize
                                  else caffe_pb2.LossParameter.BATCH_SIZE)
        else:
            self.normalization = lp.normalization

    def reshape(self, bottom, top):
        _check_first_dims(self, bottom)
        _label_axis(self, bottom, self.layer_param.softmax_param.axis, "softmax_param.axis", "softmax")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def _normalizer(self, valid_count: torch.Tensor) -> torch.Tensor:
        return _normalizer(self, self.normalization, self.outer, self.inner, valid_count)

    def forward(self, bottom, top):
        x = bottom[0].data_t
        prob = torch.softmax(x, dim=self.axis)
        p = prob.reshape(self.outer, self.C, self.inner)
        label = label_ints(self, bottom[1].data_t.reshape(self.outer, self.inner))
        if self.has_ignore:
            valid = label != self.ignore_label
        else:
            valid = torch.ones_like(label, dtype=torch.bool)
        lbl = torch.where(valid, label, torch.zeros_like(label))
        _labels_in_range(self, lbl, valid, self.C)
        picked = p.gather(1, lbl[:, None, :]).squeeze(1)
        logp = torch.log(picked.clamp(min=FLT_MIN))
        loss = -torch.where(valid, logp, torch.zeros_like(logp)).sum()
        valid_count = valid.sum().to(x.dtype)
        self._prob, self._lbl, self._valid, self._count = p, lbl, valid, valid_count
        top[0].data_t = (loss / self._normalizer(valid_count)).reshape(())
        if len(top) > 1:
            top[1].data_t = prob

    def backward(self, top, propagate_down, bottom):
        self._no_label_grad(propagate_down)
        if not propagate_down[0]:
            return
        d = self._prob.clone()
        d.scatter_add_(1, self._lbl[:, None, :], -self._valid[:, None, :].to(d.dtype))
        d = d * self._valid[:, None, :].to(d.dtype)
        scale = top[0].diff_t.reshape(()) / self._normalizer(self._count)
        bottom[0].diff_t = (d * scale).reshape(bottom[0].shape)


@register("EuclideanLoss")
class EuclideanLossLayer(TorchLayer):
    """loss = sum((a - b)^2) / N / 2 (N = bottom[0].shape[0]); gradients +-(a - b) * top_diff / N to both
    bottoms (Caffe allows forcing backward to either)."""

    is_loss = True
    auto_top_blobs = True
    exact_bottoms = 2
    exact_tops = 1

    def reshape(self, bottom, top):
        _check_first_dims(self, bottom)
        if count(bottom[0].shape, 1) != count(bottom[1].shape, 1):
            raise self.error(f"Inputs must have the same dimension: {bottom[0].shape} vs. {bottom[1].shape}")
        self.num = bottom[0].shape[0] if bottom[0].num_axes else 1
        top[0].reshape(())

    def compute(self, bottoms, params):
        d = bottoms[0] - bottoms[1].reshape(bottoms[0].shape)
        return [((d * d).sum() / self.num / 2).reshape(())]


@register("SoftmaxCrossEntropyLoss")
class SoftmaxCrossEntropyLossLayer(_Loss):
    """The colorization fork's loss: bottoms (scores N x C x ..., target distribution of the same shape);
    loss = -sum(target * log_softmax(scores, axis 1)) / N; gradient (softmax - target) * top_diff / N to the
    scores only."""

    def reshape(self, bottom, top):
        if bottom[0].shape != bottom[1].shape:
            raise self.error(f"the scores {bottom[0].shape} and the target distribution {bottom[1].shape} must "
                             "have the same shape")
        if bottom[0].num_axes < 2:
            raise self.error(f"the scores need a channel axis (shape {bottom[0].shape})")
        self.num = bottom[0].shape[0]
        top[0].reshape(())

    def forward(self, bottom, top):
        x, t = bottom[0].data_t, bottom[1].data_t
        logp = torch.log_softmax(x, dim=1)
        self._prob = torch.exp(logp)
        self._target = t
        top[0].data_t = (-(t * logp).sum() / self.num).reshape(())

    def backward(self, top, propagate_down, bottom):
        self._no_label_grad(propagate_down)
        if propagate_down[0]:
            scale = top[0].diff_t.reshape(()) / self.num
            bottom[0].diff_t = (self._prob - self._target) * scale


@register("Accuracy")
class AccuracyLayer(Layer):
    """Top-k accuracy of bottom[0]'s scores (classes along ``axis``) against integer labels, skipping
    ``ignore_label``; a label counts as correct when fewer than top_k other classes score >= it (Caffe's tie
    rule).  An optional second top holds the per-class accuracy.  No backward."""

    exact_bottoms = 2
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.accuracy_param
        self.top_k = int(p.top_k)
        self.has_ignore = p.HasField("ignore_label")
        self.ignore_label = int(p.ignore_label)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def reshape(self, bottom, top):
        if self.top_k > bottom[0].count // max(1, bottom[1].count):
            raise self.error("top_k must be less than or equal to the number of classes.")
        _label_axis(self, bottom, self.layer_param.accuracy_param.axis, "accuracy_param.axis", "label")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.C,))

    def forward(self, bottom, top):
        with torch.no_grad():
            x = bottom[0].data_t.reshape(self.outer, self.C, self.inner)
            label = label_ints(self, bottom[1].data_t.reshape(self.outer, self.inner))
            valid = (label != self.ignore_label) if self.has_ignore else torch.ones_like(label, dtype=torch.bool)
            lbl = torch.where(valid, label, torch.zeros_like(label))
            _labels_in_range(self, lbl, valid, self.C)
            true_score = x.gather(1, lbl[:, None, :])
            better = (x >= true_score).sum(dim=1) - 1
            correct = (better < self.top_k) & valid
            n = valid.sum()
            acc = correct.sum().to(x.dtype) / n.clamp(min=1).to(x.dtype)
            top[0].data_t = acc.reshape(())
            if len(top) > 1:
                nums = torch.bincount(lbl[valid], minlength=self.C).to(x.dtype)
                hits = torch.bincount(lbl[correct], minlength=self.C).to(x.dtype)
                top[1].data_t = torch.where(nums == 0, torch.zeros_like(nums), hits / nums.clamp(min=1))

    def backward(self, top, propagate_down, bottom):
        no_backward(self, propagate_down)


def _normalizer(layer, mode, outer: int, inner: int, valid_count):
    """Caffe's LossLayer get_normalizer: FULL outer*inner, VALID the non-ignored count, BATCH_SIZE outer,
    NONE 1; never below 1, in float32 (Caffe's Dtype).  ``valid_count`` is a number (a float comes back) or a
    0-d float tensor (a 0-d tensor comes back, made on its device: a fill, not a host-to-device copy)."""
    L = caffe_pb2.LossParameter
    if mode == L.FULL:
        n = outer * inner
    elif mode == L.VALID:
        n = valid_count
    elif mode == L.BATCH_SIZE:
        n = outer
    elif mode == L.NONE:
        n = 1
    else:
        raise layer.error(f"Unknown normalization mode: {mode}")
    if isinstance(valid_count, torch.Tensor):
        n = n if mode == L.VALID else valid_count.new_full((), float(n))
        return n.clamp(min=1.0)
    return max(1.0, float(np.float32(n)))


def _legacy_dims(b) -> tuple:
    """(num, channels, height, width) as Caffe's legacy accessors give them (missing axes are 1)."""
    s = tuple(b.shape)
    if len(s) > 4:
        raise ValueError(f"legacy accessors need at most 4 axes, shape is {s}")
    return s + (1,) * (4 - len(s))


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(_Loss):
    """Cross-entropy of sigmoid(bottom[0]) against targets in [0, 1] (bottom[1], same count), summed over all
    elements with Caffe's stable form x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0])), divided by the
    normalizer (``loss_param.normalization``; default BATCH_SIZE, legacy ``normalize: true`` VALID).  Targets
    equal (as int) to ``ignore_label`` are skipped; gradient (sigmoid(x) - t) * top_diff / normalizer."""

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        L = caffe_pb2.LossParameter
        if lp.HasField("normalization"):
            self.normalization = lp.normalization
        elif lp.HasField("normalize"):
            self.normalization = L.VALID if lp.normalize else L.BATCH_SIZE
        else:
            self.normalization = L.BATCH_SIZE

    def reshape(self, bottom, top):
        _check_first_dims(self, bottom)
        s = bottom[0].shape
        if bottom[0].count != bottom[1].count:
            raise self.error(f"SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same count: {s} vs. "
                             f"{bottom[1].shape}")
        self.outer = s[0] if s else 1
        self.inner = count(s, 1)
        top[0].reshape(())

    def forward(self, bottom, top):
        x = bottom[0].data_t
        t = bottom[1].data_t.reshape(x.shape)
        if self.has_ignore:
            valid = label_ints(self, t) != self.ignore_label
        else:
            valid = torch.ones_like(x, dtype=torch.bool)
        pos = (x >= 0).to(x.dtype)
        per = x * (t - pos) - torch.log(1 + torch.exp(x - 2 * x * pos))
        loss = -torch.where(valid, per, torch.zeros_like(per)).sum()
        self._norm = _normalizer(self, self.normalization, self.outer, self.inner, int(valid.sum()))
        self._sig, self._t, self._valid = 0.5 * torch.tanh(0.5 * x) + 0.5, t, valid
        top[0].data_t = (loss / self._norm).reshape(())

    def backward(self, top, propagate_down, bottom):
        self._no_label_grad(propagate_down)
        if propagate_down[0]:
            d = self._sig - self._t
            d = torch.where(self._valid, d, torch.zeros_like(d))
            bottom[0].diff_t = d * (top[0].diff_t.reshape(()) / self._norm)


@register("ContrastiveLoss")
class ContrastiveLossLayer(_Loss):
    """Hadsell et al.'s contrastive loss of feature pairs (bottom[0], bottom[1]: N x C [x 1 x 1]) with
    similarity labels (bottom[2], N values; nonzero as int = similar): similar pairs add d^2, dissimilar
    ones max(margin - d, 0)^2 (``legacy_version``: max(margin - d^2, 0)); loss = sum / N / 2.

    Gradients as Caffe's backward: similar +-top_diff/N (a - b); dissimilar -+top_diff/N (margin - d) /
    (d + 1e-4) (a - b) (legacy: -+top_diff/N (a - b)) where the margin term is positive, else 0.  bottom[2]
    takes no gradient."""

    exact_bottoms = 3

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def layer_setup(self, bottom, top):
        try:
            n0, c0, h0, w0 = _legacy_dims(bottom[0])
            n1, c1, h1, w1 = _legacy_dims(bottom[1])
            n2, c2, h2, w2 = _legacy_dims(bottom[2])
        except ValueError as e:
            raise self.error(str(e)) from None
        if c0 != c1 or h0 != 1 or w0 != 1 or h1 != 1 or w1 != 1:
            raise self.error(f"the two feature bottoms must be N x C (x 1 x 1) alike: {bottom[0].shape} vs. "
                             f"{bottom[1].shape}")
        if c2 != 1 or h2 != 1 or w2 != 1:
            raise self.error(f"the similarity bottom must hold one value per pair (shape {bottom[2].shape})")
        p = self.layer_param.contrastive_loss_param
        self.margin = float(np.float32(p.margin))
        self.legacy = bool(p.legacy_version)

    def reshape(self, bottom, top):
        _check_first_dims(self, bottom)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"the two feature bottoms differ in size: {bottom[0].shape} vs. {bottom[1].shape}")
        self.num = _legacy_dims(bottom[0])[0]
        if bottom[2].count < self.num:
            raise self.error(f"the similarity bottom has {bottom[2].count} values for {self.num} pairs")
        top[0].reshape(())

    def forward(self, bottom, top):
        a = bottom[0].data_t.reshape(self.num, -1)
        b = bottom[1].data_t.reshape(self.num, -1)
        diff = a - b
        dist_sq = (diff * diff).sum(dim=1)
        similar = label_ints(self, bottom[2].data_t.reshape(-1)[:self.num]) != 0
        if self.legacy:
            mdist = self.margin - dist_sq
            dis = mdist.clamp(min=0)
        else:
            dist = torch.sqrt(dist_sq)
            mdist = self.margin - dist
            dis = mdist.clamp(min=0) ** 2
            self._dist = dist
        per = torch.where(similar, dist_sq, dis)
        self._diff, self._similar, self._mdist = diff, similar, mdist
        top[0].data_t = (per.sum() / self.num / 2).reshape(())

    def backward(self, top, propagate_down, bottom):
        g = top[0].diff_t.reshape(())
        for i in range(2):
            if not propagate_down[i]:
                continue
            alpha = (1 if i == 0 else -1) * g / self.num
            if self.legacy:
                beta = -alpha * torch.ones_like(self._mdist)
            else:
                beta = -alpha * self._mdist / (self._dist + 1e-4)
            coef = torch.where(self._similar, alpha * torch.ones_like(self._mdist),
                               torch.where(self._mdist > 0, beta, torch.zeros_like(beta)))
            bottom[i].diff_t = (coef[:, None] * self._diff).reshape(bottom[i].shape)


@register("HingeLoss")
class HingeLossLayer(_Loss):
    """One-vs-all hinge loss of scores (bottom[0], N x ...) against integer labels (bottom[1]):
    h_nj = max(0, 1 + x_nj) for j != label, max(0, 1 - x_nl) for the label; loss = sum h / N (L1, default)
    or sum h^2 / N (L2).  As Caffe, forward leaves h in bottom[0]'s diff; backward gives
    sign(+-h) top_diff / N (L1) or +-2 h top_diff / N (L2), negative at the label."""

    def layer_setup(self, bottom, top):
        self.norm = self.layer_param.hinge_loss_param.norm
        H = caffe_pb2.HingeLossParameter
        if self.norm not in (H.L1, H.L2):
            raise self.error(f"Unknown Norm {self.norm} (hinge_loss_param.norm)")

    def reshape(self, bottom, top):
        _check_first_dims(self, bottom)
        self.num = bottom[0].shape[0] if bottom[0].num_axes else 1
        self.dim = bottom[0].count // max(1, self.num)
        if bottom[1].count < self.num:
            raise self.error(f"the label bottom has {bottom[1].count} values for {self.num} instances")
        top[0].reshape(())

    def forward(self, bottom, top):
        x = bottom[0].data_t.reshape(self.num, self.dim)
        lbl = label_ints(self, bottom[1].data_t.reshape(-1)[:self.num])
        _labels_in_range(self, lbl, torch.ones_like(lbl, dtype=torch.bool), self.dim)
        sign = torch.ones_like(x)
        sign.scatter_(1, lbl[:, None], -1.0)
        h = (1 + sign * x).clamp(min=0)
        self._h, self._sign = h, sign
        bottom[0].diff_t = h.reshape(bottom[0].shape)
        if self.norm == caffe_pb2.HingeLossParameter.L1:
            loss = h.abs().sum()
        else:
            loss = (h * h).sum()
        top[0].data_t = (loss / self.num).reshape(())

    def backward(self, top, propagate_down, bottom):
        self._no_label_grad(propagate_down)
        if propagate_down[0]:
            d = torch.where(self._sign < 0, -self._h, self._h)  # the label's entry negated (Caffe's *= -1)
            g = top[0].diff_t.reshape(())
            if self.norm == caffe_pb2.HingeLossParameter.L1:
                d = torch.sign(d) * (g / self.num)
            else:
                d = d * (g * 2 / self.num)
            bottom[0].diff_t = d.reshape(bottom[0].shape)


@register("InfogainLoss")
class InfogainLossLayer(_Loss):
    """Infogain loss of softmax(bottom[0]) along ``infogain_loss_param.axis`` with integer labels (bottom[1])
    and an infogain matrix H (C x C; the binaryproto blob ``infogain_loss_param.source`` or bottom[2]):
    loss = -sum_{valid n} sum_l H[label_n, l] log(max(p_nl, 1e-20)) / normalizer (``loss_param``:
    normalization default VALID, ``ignore_label``; the deprecated ``normalize`` is refused).  Gradient
    (p_nl rowsum(H)[label_n] - H[label_n, l]) top_diff / normalizer; none to the labels or to H.  An optional
    second top receives the probabilities."""

    exact_bottoms = None
    min_bottoms = 2
    max_bottoms = 3
    exact_tops = None
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottom, top):
        lp = self.layer_param.loss_param
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        if lp.HasField("normalize"):
            raise self.error('loss_param.normalize is deprecated. use "normalization"')
        self.normalization = lp.normalization
        self.H = None
        if len(bottom) < 3:
            p = self.layer_param.infogain_loss_param
            if not p.HasField("source"):
                raise self.error("Infogain matrix source must be specified (infogain_loss_param.source).")
            from ..protoio import CaffeFormatError, proto_to_array, read_binaryproto
            try:
                h = proto_to_array(read_binaryproto(p.source, caffe_pb2.BlobProto()))
            except (OSError, CaffeFormatError) as e:
                raise self.error(f"cannot read the infogain matrix (infogain_loss_param.source): {e}") from None
            self.H = torch.as_tensor(h, dtype=bottom[0].dtype, device=self.device)

    def reshape(self, bottom, top):
        _check_first_dims(self, bottom)
        _label_axis(self, bottom, self.layer_param.infogain_loss_param.axis, "infogain_loss_param.axis", "infogain")
        H = self.H if len(bottom) < 3 else bottom[2]
        n = H.numel() if isinstance(H, torch.Tensor) else H.count
        if n != self.C * self.C:
            raise self.error(f"the infogain matrix H has {n} values; it must be {self.C}x{self.C}")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data_t
        prob = torch.softmax(x, dim=self.axis)
        p = prob.reshape(self.outer, self.C, self.inner)
        H = (self.H if len(bottom) < 3 else bottom[2].data_t).reshape(self.C, self.C).to(x.dtype)
        label = label_ints(self, bottom[1].data_t.reshape(self.outer, self.inner))
        valid = (label != self.ignore_label) if self.has_ignore else torch.ones_like(label, dtype=torch.bool)
        lbl = torch.where(valid, label, torch.zeros_like(label))
        _labels_in_range(self, lbl, valid, self.C)
        rows = H[lbl]  # outer x inner x C
        logp = torch.log(p.clamp(min=LOG_THRESHOLD)).permute(0, 2, 1)
        per = (rows * logp).sum(dim=2)
        loss = -torch.where(valid, per, torch.zeros_like(per)).sum()
        n_valid = int(valid.sum())
        self._prob, self._rows, self._valid, self._H = p, rows, valid, H
        self._lbl, self._n_valid = lbl, n_valid
        top[0].data_t = (loss / _normalizer(self, self.normalization, self.outer, self.inner, n_valid)).reshape(())
        if len(top) > 1:
            top[1].data_t = prob

    def backward(self, top, propagate_down, bottom):
        self._no_label_grad(propagate_down)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.error("InfogainLoss Layer cannot backpropagate to infogain inputs.")
        if not propagate_down[0]:
            return
        sum_rows = self._H.sum(dim=1)[self._lbl]  # outer x inner
        d = self._prob * sum_rows[:, None, :] - self._rows.permute(0, 2, 1)
        d = d * self._valid[:, None, :].to(d.dtype)
        scale = top[0].diff_t.reshape(()) / _normalizer(self, self.normalization, self.outer, self.inner,
                                                         self._n_valid)
        bottom[0].diff_t = (d * scale).reshape(bottom[0].shape)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(_Loss):
    """loss = -sum_n log(max(p[n, label_n], 1e-20)) / N for probabilities bottom[0] (N x ...) and one integer
    label per instance (bottom[1], N x 1 x 1 x 1 or N); gradient -top_diff / N / max(p, 1e-20) at the
    label, 0 elsewhere."""

    def reshape(self, bottom, top):
        _check_first_dims(self, bottom)
        try:
            _, c, h, w = _legacy_dims(bottom[1])
        except ValueError as e:
            raise self.error(str(e)) from None
        if (c, h, w) != (1, 1, 1):
            raise self.error(f"the label bottom must hold one value per instance (shape {bottom[1].shape})")
        self.num = bottom[0].shape[0] if bottom[0].num_axes else 1
        self.dim = bottom[0].count // max(1, self.num)
        top[0].reshape(())

    def forward(self, bottom, top):
        x = bottom[0].data_t.reshape(self.num, self.dim)
        lbl = label_ints(self, bottom[1].data_t.reshape(self.num))
        _labels_in_range(self, lbl, torch.ones_like(lbl, dtype=torch.bool), self.dim)
        picked = x.gather(1, lbl[:, None]).squeeze(1).clamp(min=LOG_THRESHOLD)
        self._lbl, self._picked = lbl, picked
        top[0].data_t = (-torch.log(picked).sum() / self.num).reshape(())

    def backward(self, top, propagate_down, bottom):
        self._no_label_grad(propagate_down)
        if propagate_down[0]:
            scale = -top[0].diff_t.reshape(()) / self.num
            d = torch.zeros((self.num, self.dim), dtype=self._picked.dtype, device=self._picked.device)
            d.scatter_(1, self._lbl[:, None], (scale / self._picked)[:, None])
            bottom[0].diff_t = d.reshape(bottom[0].shape)
