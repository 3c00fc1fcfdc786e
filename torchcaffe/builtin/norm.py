"""BatchNorm, Scale, Bias, LRN and MVN, as Caffe 1.0 computes them."""
from __future__ import annotations

import numpy as np
import torch

from ..layer import TorchLayer, register
from ..proto import caffe_pb2
from ._common import canonical_axis, constant_filler, count, make_param, param_dtype

__all__ = ["BatchNormLayer", "ScaleLayer", "BiasLayer", "LRNLayer", "MVNLayer"]


@register("BatchNorm")
class BatchNormLayer(TorchLayer):
    """Caffe's BatchNorm: normalisation only (a Scale layer learns the affine part).

    Blobs: [0] running sum of means, [1] running sum of (unbiased) variances, [2] the scale factor (1 value).
    With batch statistics (TRAIN unless ``use_global_stats``): mean and biased variance E[(x - mean)^2] over
    all axes but 1, y = (x - mean) / sqrt(var + eps), and the blobs become
    b2 = b2 * maf + 1, b0 = b0 * maf + mean, b1 = b1 * maf + var * m / (m - 1) (m = count / channels).
    With global statistics (TEST by default): mean = b0 / b2, var = b1 / b2 (0 when b2 == 0).

    As Caffe's LayerSetUp does, the layer fixes its parameter specs: each missing ``param`` gets
    ``lr_mult: 0`` and a nonzero ``lr_mult`` is an error.  The layer works on its own copy of the
    LayerParameter, so ``self.layer_param`` (what the net reads ParamSpecs from after setup, and what
    ``to_proto`` writes) carries these three ``param { lr_mult: 0 }`` like a caffemodel written by Caffe.
    """

    exact_bottoms = 1
    exact_tops = 1
    #: the learning-rate multiplier Caffe forces on all three statistics blobs
    fixed_param_lr_mult = 0.0

    def layer_setup(self, bottom, top):
        p = self.layer_param.batch_norm_param
        self.maf = float(np.float32(p.moving_average_fraction))
        self.use_global_stats = self.phase == caffe_pb2.TEST
        if p.HasField("use_global_stats"):
            self.use_global_stats = bool(p.use_global_stats)
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        self.eps = float(np.float32(p.eps))
        dt = param_dtype(bottom)
        self.blobs = [make_param(self, (self.channels,), None, dt, "blobs[0]"),
                      make_param(self, (self.channels,), None, dt, "blobs[1]"),
                      make_param(self, (1,), None, dt, "blobs[2]")]
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(self.layer_param)
        for i in range(len(self.blobs)):
            if len(lp.param) == i:
                lp.param.add().lr_mult = 0.0
            elif lp.param[i].lr_mult != 0:
                raise self.error(f"param[{i}].lr_mult is {lp.param[i].lr_mult}: Cannot configure batch "
                                 "normalization statistics as layer parameters (lr_mult must be 0)")
        self.layer_param = lp

    def reshape(self, bottom, top):
        s = bottom[0].shape
        if len(s) > 1 and s[1] != self.channels:
            raise self.error(f"the bottom has {s[1]} channels, the layer was set up for {self.channels}")
        top[0].reshape(s)

    def compute(self, bottoms, params):
        x = bottoms[0]
        n = x.shape[0]
        xr = x.reshape(n, self.channels, -1)
        if self.use_global_stats:
            with torch.no_grad():
                b2 = self.blobs[2].data_t.reshape(())
                sf = torch.where(b2 == 0, torch.zeros_like(b2), 1 / b2)
                mean = self.blobs[0].data_t * sf
                var = self.blobs[1].data_t * sf
            xc = xr - mean.to(x.dtype)[None, :, None]
        else:
            mean = xr.mean(dim=(0, 2))
            xc = xr - mean[None, :, None]
            var = (xc * xc).mean(dim=(0, 2))
            with torch.no_grad():
                m = x.numel() // self.channels
                corr = float(np.float32(m) / np.float32(m - 1)) if m > 1 else 1.0
                b0, b1, b2 = (b.data_t for b in self.blobs)
                b2.mul_(self.maf).add_(1)
                b0.mul_(self.maf).add_(mean.detach())
                b1.mul_(self.maf).add_(var.detach() * corr)
        std = torch.sqrt(var + self.eps)
        y = xc / std[None, :, None]
        return [y.reshape(x.shape)]


def _broadcast(t: torch.Tensor, axis: int, nax: int) -> torch.Tensor:
    return t.reshape((1,) * axis + tuple(t.shape) + (1,) * (nax - axis - t.dim()))


def _param_shape(layer, bottom0, axis_field: int, num_axes: int, what: str):
    axis = canonical_axis(layer, axis_field, bottom0.num_axes, f"{what}.axis")
    if num_axes < -1:
        raise layer.error(f"{what}.num_axes must be non-negative, or -1 to extend to the end of bottom[0]")
    if num_axes >= 0 and bottom0.num_axes < axis + num_axes:
        raise layer.error(f"{what}: the parameter's shape extends past bottom[0]'s shape {bottom0.shape} when "
                          f"applied starting with bottom[0] axis = {axis}")
    s = bottom0.shape
    return tuple(s[axis:]) if num_axes == -1 else tuple(s[axis:axis + num_axes])


def _check_against(layer, bottom0, operand_shape, axis_field: int, what: str) -> int:
    """Caffe's Reshape check: the operand matches bottom[0]'s axes from ``axis`` on; returns the axis."""
    nax = bottom0.num_axes
    axis = 0 if len(operand_shape) == 0 else canonical_axis(layer, axis_field, nax, f"{what}.axis")
    if nax < axis + len(operand_shape):
        raise layer.error(f"{what}: the operand of shape {tuple(operand_shape)} extends past bottom[0]'s shape "
                          f"{bottom0.shape} when applied starting with bottom[0] axis = {axis}")
    for i, d in enumerate(operand_shape):
        if bottom0.shape[axis + i] != d:
            raise layer.error(f"dimension mismatch between bottom[0]->shape({axis + i}) = "
                              f"{bottom0.shape[axis + i]} and the operand's shape({i}) = {d}")
    return axis


@register("Scale")
class ScaleLayer(TorchLayer):
    """y = x * scale (+ bias), the scale broadcast over bottom[0] from ``axis`` on.

    One bottom: the scale is blobs[0] of shape bottom[0].shape[axis : axis + num_axes] (num_axes -1: to
    the end), filled by ``filler`` (default constant 1).  Two bottoms: bottom[1] is the scale.  With
    ``bias_term`` a bias of the same shape follows (the last blob; ``bias_filler``, default constant 0).
    In-place use is allowed.
    """

    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.scale_param
        dt = param_dtype(bottom)
        self.blobs = []
        if len(bottom) == 1:
            shape = _param_shape(self, bottom[0], p.axis, p.num_axes, "scale_param")
            filler = p.filler if p.HasField("filler") else constant_filler(1.0)
            self.blobs.append(make_param(self, shape, filler, dt, "scale_param.filler"))
            scale_shape = shape
        else:
            scale_shape = bottom[1].shape
        self.bias_term = bool(p.bias_term)
        if self.bias_term:
            num_axes = len(scale_shape) if len(bottom) > 1 else p.num_axes
            bshape = _param_shape(self, bottom[0], p.axis, num_axes, "scale_param")
            self.blobs.append(make_param(self, bshape, p.bias_filler, dt, "scale_param.bias_filler"))

    def reshape(self, bottom, top):
        scale_shape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
        self.axis = _check_against(self, bottom[0], scale_shape, self.layer_param.scale_param.axis, "scale_param")
        if self.bias_term:
            self.bias_axis = _check_against(self, bottom[0], self.blobs[-1].shape,
                                            self.layer_param.scale_param.axis, "scale_param (bias)")
        top[0].reshape(bottom[0].shape)

    def backward(self, top, propagate_down, bottom):
        # Caffe's ScaleLayer::Backward_cpu, visible effects beyond the gradients: a learned scale's diff is
        # overwritten rather than accumulated when the product lands in it directly (element-wise scale, or
        # one outer block reduced by a single gemv); and, not in place, the product top_diff * bottom is
        # left in bottom[0]'s diff (its scratch space) even when bottom[0] takes no gradient.
        learned = len(bottom) == 1
        scale = self.blobs[0] if learned else bottom[1]
        want = self.param_propagate_down[0] if learned else propagate_down[1]
        nax = bottom[0].num_axes
        axis = 0 if scale.num_axes == 0 else self.axis
        outer = count(bottom[0].shape, 0, axis)
        inner = count(bottom[0].shape, axis + scale.num_axes)
        eltwise = bottom[0].count == scale.count
        in_place = top[0] is bottom[0]
        if learned and want and (eltwise or (inner != 1 and outer * scale.count != 1 and outer == 1)):
            scale.diff_t = torch.zeros_like(scale.diff_t)
        scratch = want and not eltwise and not in_place and not propagate_down[0] and nax > 0
        x = bottom[0].data_t if scratch else None
        super().backward(top, propagate_down, bottom)
        if scratch:
            bottom[0].diff_t = top[0].diff_t * x

    def compute(self, bottoms, params):
        x = bottoms[0]
        nax = x.dim()
        s = bottoms[1] if len(bottoms) > 1 else params[0]
        y = x * _broadcast(s, self.axis, nax)
        if self.bias_term:
            y = y + _broadcast(params[-1], self.bias_axis, nax)
        return [y]


@register("Bias")
class BiasLayer(TorchLayer):
    """y = x + bias, the bias (blobs[0], or bottom[1]) broadcast over bottom[0] from ``axis`` on; bias_param
    ``filler`` defaults to constant 0.  In-place use is allowed."""

    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.bias_param
        self.blobs = []
        if len(bottom) == 1:
            shape = _param_shape(self, bottom[0], p.axis, p.num_axes, "bias_param")
            self.blobs.append(make_param(self, shape, p.filler, param_dtype(bottom), "bias_param.filler"))

    def reshape(self, bottom, top):
        bshape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
        self.axis = _check_against(self, bottom[0], bshape, self.layer_param.bias_param.axis, "bias_param")
        top[0].reshape(bottom[0].shape)

    def compute(self, bottoms, params):
        x = bottoms[0]
        b = bottoms[1] if len(bottoms) > 1 else params[0]
        return [x + _broadcast(b, self.axis, x.dim())]


# -- LRN and MVN ---------------------------------------------------------------------------------------------
def _f32(v) -> float:
    """A float parameter as Caffe holds it (single precision)."""
    return float(np.float32(v))


@register("LRN")
class LRNLayer(TorchLayer):
    """Caffe's local response normalisation of a 4-D blob.

    ACROSS_CHANNELS: y = x (k + alpha / n * sum of x^2 over the n = local_size channels centred on the
    channel, zero-padded at the ends)^-beta.  WITHIN_CHANNEL (Caffe's split / power / AVE pooling / power /
    product sub-net): y = x (1 + alpha * mean of x^2 over the n x n window centred on the pixel, the window's
    area counted with its zero padding)^-beta -- ``k`` takes no part there, as in Caffe.  ``local_size`` must
    be odd.
    """

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.lrn_param
        self.size = int(p.local_size)
        if self.size % 2 != 1:
            raise self.error(f"LRN only supports odd values for local_size (lrn_param.local_size: {self.size})")
        self.pre_pad = (self.size - 1) // 2
        self.alpha, self.beta, self.k = _f32(p.alpha), _f32(p.beta), _f32(p.k)
        self.region = p.norm_region
        if self.region not in (caffe_pb2.LRNParameter.ACROSS_CHANNELS, caffe_pb2.LRNParameter.WITHIN_CHANNEL):
            raise self.error(f"unknown lrn_param.norm_region {self.region}")

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error(f"Input must have 4 axes, corresponding to (num, channels, height, width); "
                             f"shape is {bottom[0].shape}")
        top[0].reshape(bottom[0].shape)

    def compute(self, bottoms, params):
        import torch.nn.functional as F

        x = bottoms[0]
        sq = x * x
        if self.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            # the sum over `size` channels centred on each channel, zero padded at both ends
            padded = F.pad(sq, (0, 0, 0, 0, self.pre_pad, self.pre_pad))
            window_sum = padded.unfold(1, self.size, 1).sum(dim=-1)
            scale = self.k + (self.alpha / self.size) * window_sum
        else:
            avg = F.avg_pool2d(sq, self.size, stride=1, padding=self.pre_pad, count_include_pad=True)
            scale = 1.0 + self.alpha * avg
        return [x * scale.pow(-self.beta)]


class _MVNFunction(torch.autograd.Function):
    """y = (x - mean) / (std + eps) over the rows of a (num, dim) matrix, with Caffe's backward
    dx = (dy - mean(dy) - y mean(y dy)) / (std + eps) (it treats std + eps as std in the variance term)."""

    @staticmethod
    def forward(ctx, x, eps):
        xc = x - x.mean(dim=1, keepdim=True)
        std = (xc * xc).mean(dim=1, keepdim=True).sqrt() + eps
        y = xc / std
        ctx.save_for_backward(y, std)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, std = ctx.saved_tensors
        dx = dy - dy.mean(dim=1, keepdim=True) - y * (y * dy).mean(dim=1, keepdim=True)
        return dx / std, None


@register("MVN")
class MVNLayer(TorchLayer):
    """Caffe's mean-variance normalisation.

    Each (num, channel) slice (``across_channels: false``) or each num (``true``) is centred; with
    ``normalize_variance`` (default) it is divided by sqrt(E[(x - mean)^2]) + eps (eps after the root, as in
    Caffe).  The backward pass is Caffe's (see :class:`_MVNFunction`).  As Caffe's Reshape does, the top gets
    the bottom's legacy 4-D shape (num, channels, height, width): an (N, C) bottom gives an (N, C, 1, 1) top.
    """

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across_channels = bool(p.across_channels)
        self.eps = _f32(p.eps)

    def reshape(self, bottom, top):
        s = bottom[0].shape
        if len(s) > 4:
            raise self.error(f"the bottom has {len(s)} axes; MVN takes blobs of at most 4 axes "
                             f"(num, channels, height, width), got shape {s}")
        legacy = tuple(s) + (1,) * (4 - len(s))
        top[0].reshape(legacy)
        self.legacy = legacy

    def compute(self, bottoms, params):
        x = bottoms[0]
        n, c = self.legacy[0], self.legacy[1]
        rows = n if self.across_channels else n * c
        xr = x.reshape(rows, -1)
        if self.normalize_variance:
            y = _MVNFunction.apply(xr, self.eps)
        else:
            y = xr - xr.mean(dim=1, keepdim=True)
        return [y.reshape(self.legacy)]
