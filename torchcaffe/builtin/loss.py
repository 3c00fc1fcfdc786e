"""Loss layers (SoftmaxWithLoss, EuclideanLoss, SoftmaxCrossEntropyLoss) and Accuracy.

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

__all__ = ["SoftmaxWithLossLayer", "EuclideanLossLayer", "AccuracyLayer", "SoftmaxCrossEntropyLossLayer"]


def _check_first_dims(layer, bottom) -> None:
    # Caffe's LossLayer::Reshape
    if bottom[0].num_axes and bottom[1].num_axes and bottom[0].shape[0] != bottom[1].shape[0]:
        raise layer.error(f"The data and label should have the same first dimension: bottom[0] "
                          f"{bottom[0].shape}, bottom[1] {bottom[1].shape}")


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
        s = bottom[0].shape
        self.axis = canonical_axis(self, self.layer_param.softmax_param.axis, len(s), "softmax_param.axis")
        self.outer = count(s, 0, self.axis)
        self.inner = count(s, self.axis + 1)
        self.C = s[self.axis]
        if self.outer * self.inner != bottom[1].count:
            raise self.error(
                "Number of labels must match number of predictions; e.g., if softmax axis == 1 and prediction "
                "shape is (N, C, H, W), label count (number of labels) must be N*H*W, with integer values in "
                f"{{0, 1, ..., C-1}}. (prediction shape {s}, axis {self.axis}, label shape {bottom[1].shape})")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(s)

    def _normalizer(self, valid_count: torch.Tensor) -> torch.Tensor:
        # made on valid_count's device (a fill, not a host-to-device copy); Caffe's Dtype(count)
        L = caffe_pb2.LossParameter
        if self.normalization == L.FULL:
            n = valid_count.new_full((), float(self.outer * self.inner))
        elif self.normalization == L.VALID:
            n = valid_count
        elif self.normalization == L.BATCH_SIZE:
            n = valid_count.new_full((), float(self.outer))
        elif self.normalization == L.NONE:
            n = valid_count.new_full((), 1.0)
        else:
            raise self.error(f"Unknown normalization mode: {self.normalization}")
        return n.clamp(min=1.0)

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
        s = bottom[0].shape
        self.axis = canonical_axis(self, self.layer_param.accuracy_param.axis, len(s), "accuracy_param.axis")
        self.outer = count(s, 0, self.axis)
        self.inner = count(s, self.axis + 1)
        self.C = s[self.axis]
        if self.outer * self.inner != bottom[1].count:
            raise self.error(
                "Number of labels must match number of predictions; e.g., if label axis == 1 and prediction "
                "shape is (N, C, H, W), label count (number of labels) must be N*H*W, with integer values in "
                f"{{0, 1, ..., C-1}}. (prediction shape {s}, label shape {bottom[1].shape})")
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
