"""Element-wise (neuron) layers: ReLU, Sigmoid, TanH, Power, Dropout, AbsVal, Exp, Log, BNLL, ELU, Threshold,
Clip, Swish and PReLU.

All of them accept in-place use (top == bottom) except AbsVal, which Caffe refuses.  Their backward passes
use the input the forward saw (Caffe reads the in-place top instead, which gives the same values for the
layers Caffe lets run in place).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..layer import Layer, TorchLayer, register
from ..proto import caffe_pb2
from ._common import constant_filler, make_param, no_backward, param_dtype

__all__ = ["ReLULayer", "SigmoidLayer", "TanHLayer", "PowerLayer", "DropoutLayer", "AbsValLayer", "ExpLayer",
           "LogLayer", "BNLLLayer", "ELULayer", "ThresholdLayer", "ClipLayer", "SwishLayer", "PReLULayer"]


class _Neuron(TorchLayer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(self, bottoms, params):
        return [self.fn(bottoms[0])]


@register("ReLU")
class ReLULayer(_Neuron):
    """y = max(x, 0) + negative_slope * min(x, 0); dy/dx = 1 where x > 0, else negative_slope."""

    def layer_setup(self, bottom, top):
        self.negative_slope = float(np.float32(self.layer_param.relu_param.negative_slope))

    def fn(self, x):
        if self.negative_slope == 0:
            return torch.relu(x)
        return F.leaky_relu(x, self.negative_slope)


@register("Sigmoid")
class SigmoidLayer(_Neuron):
    """Caffe 1.0's sigmoid: 0.5 tanh(0.5 x) + 0.5."""

    def fn(self, x):
        return 0.5 * torch.tanh(0.5 * x) + 0.5


@register("TanH")
class TanHLayer(_Neuron):
    def fn(self, x):
        return torch.tanh(x)


@register("ELU")
class ELULayer(_Neuron):
    """y = x for x > 0, alpha (exp(x) - 1) otherwise; dy/dx = 1 for x > 0, y + alpha otherwise."""

    def layer_setup(self, bottom, top):
        self.alpha = float(np.float32(self.layer_param.elu_param.alpha))

    def fn(self, x):
        return F.elu(x, alpha=self.alpha)


@register("AbsVal")
class AbsValLayer(_Neuron):
    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("AbsVal Layer does not allow in-place computation.")

    def fn(self, x):
        return torch.abs(x)


@register("Exp")
class ExpLayer(_Neuron):
    """y = base ^ (shift + scale x) (base -1 means e), as outer_scale * exp(inner_scale * x)."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.exp_param
        base = float(np.float32(p.base))
        if base != -1 and not base > 0:
            raise self.error(f"exp_param.base must be strictly positive (or -1 for e), got {base}")
        log_base = 1.0 if base == -1 else math.log(base)
        scale, shift = float(np.float32(p.scale)), float(np.float32(p.shift))
        self.inner_scale = float(np.float32(log_base * scale))
        if shift == 0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = float(np.float32(math.exp(shift) if base == -1 else base ** shift))

    def fn(self, x):
        y = torch.exp(x if self.inner_scale == 1 else x * self.inner_scale)
        return y if self.outer_scale == 1 else y * self.outer_scale


@register("Log")
class LogLayer(_Neuron):
    """y = log_base(shift + scale x) (base -1 means e)."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.log_param
        base = float(np.float32(p.base))
        if base != -1 and not base > 0:
            raise self.error(f"log_param.base must be strictly positive (or -1 for e), got {base}")
        self.base_scale = 1.0 if base == -1 else float(np.float32(1.0 / math.log(base)))
        self.scale, self.shift = float(np.float32(p.scale)), float(np.float32(p.shift))

    def fn(self, x):
        if self.scale != 1:
            x = x * self.scale
        if self.shift != 0:
            x = x + self.shift
        y = torch.log(x)
        return y if self.base_scale == 1 else y * self.base_scale


@register("Dropout")
class DropoutLayer(_Neuron):
    """TRAIN: y = x * mask / (1 - ratio), mask ~ Bernoulli(1 - ratio) (drawn from torch's generator on the
    blob's device); TEST: y = x."""

    def layer_setup(self, bottom, top):
        ratio = float(np.float32(self.layer_param.dropout_param.dropout_ratio))
        if not 0 <= ratio < 1:
            raise self.error(f"dropout_param.dropout_ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.scale = float(np.float32(1.0 / (1.0 - ratio)))

    def fn(self, x):
        if self.phase != caffe_pb2.TRAIN:
            return x.clone()
        keep = torch.rand(x.shape, device=x.device, dtype=x.dtype) < (1.0 - self.ratio)
        self.mask = keep
        return x * keep.to(x.dtype) * self.scale


@register("Threshold")
class ThresholdLayer(_Neuron):
    """y = 1 if x > threshold else 0; no backward (Caffe: NOT_IMPLEMENTED)."""

    def layer_setup(self, bottom, top):
        self.threshold = float(np.float32(self.layer_param.threshold_param.threshold))

    def fn(self, x):
        return (x > self.threshold).to(x.dtype)

    def forward(self, bottom, top):
        with torch.no_grad():
            top[0].data_t = self.fn(bottom[0].data_t)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False  # Caffe would reach NOT_IMPLEMENTED under force_backward; we keep the net runnable

    def backward(self, top, propagate_down, bottom):
        no_backward(self, propagate_down)


class _HandNeuron(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)


@register("BNLL")
class BNLLLayer(_HandNeuron):
    """y = x + log(1 + exp(-x)) for x > 0, log(1 + exp(x)) otherwise; dy/dx = e / (e + 1), e = exp(min(x, 50))."""

    def forward(self, bottom, top):
        x = bottom[0].data_t
        self._x = x
        pos = x + torch.log(1.0 + torch.exp(-x.clamp(min=0)))
        neg = torch.log(1.0 + torch.exp(x.clamp(max=0)))
        top[0].data_t = torch.where(x > 0, pos, neg)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            e = torch.exp(self._x.clamp(max=50.0))
            bottom[0].diff_t = top[0].diff_t * e / (e + 1.0)


@register("Power")
class PowerLayer(_HandNeuron):
    """y = (shift + scale x) ^ power, with Caffe's special cases: when scale or power is 0 the output is the
    constant (power == 0 ? 1 : shift ^ power) and the gradient 0; when power is 1 the gradient is
    scale * top_diff; power 2 uses 2 scale (shift + scale x); otherwise power * scale * y / (shift + scale x)."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.power_param
        self.power = float(np.float32(p.power))
        self.scale = float(np.float32(p.scale))
        self.shift = float(np.float32(p.shift))
        self.diff_scale = float(np.float32(self.power * self.scale))

    def forward(self, bottom, top):
        x = bottom[0].data_t
        self._x = x
        if self.diff_scale == 0:
            value = 1.0 if self.power == 0 else float(np.float32(self.shift) ** np.float32(self.power))
            y = torch.full_like(x, value)
        else:
            y = x
            if self.scale != 1:
                y = y * self.scale
            if self.shift != 0:
                y = y + self.shift
            if self.power != 1:
                y = torch.pow(y, self.power)
            elif y is x:
                y = x.clone()
        self._y = y
        top[0].data_t = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, g = self._x, self._y, top[0].diff_t
        if self.diff_scale == 0 or self.power == 1:
            d = torch.full_like(x, self.diff_scale)
        elif self.power == 2:
            d = x * float(np.float32(self.diff_scale * self.scale))
            if self.shift != 0:
                d = d + float(np.float32(self.diff_scale * self.shift))
        elif self.shift == 0:
            d = (y / x) * self.power
        else:
            d = x
            if self.scale != 1:
                d = d * self.scale
            d = d + self.shift
            d = y / d
            if self.diff_scale != 1:
                d = d * self.diff_scale
        if self.diff_scale != 0:
            d = g * d
        bottom[0].diff_t = d


@register("Clip")
class ClipLayer(_HandNeuron):
    """y = max(min, min(x, max)); dy/dx = 1 where min <= x <= max (bounds included), else 0.  Both
    ``clip_param.min`` and ``max`` are required."""

    def layer_setup(self, bottom, top):
        p = self.layer_param.clip_param
        for f in ("min", "max"):
            if not p.HasField(f):
                raise self.error(f"clip_param.{f} is required")
        self.min, self.max = float(np.float32(p.min)), float(np.float32(p.max))

    def forward(self, bottom, top):
        x = bottom[0].data_t
        self._x = x
        top[0].data_t = torch.clamp(torch.clamp(x, max=self.max), min=self.min)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = self._x
            bottom[0].diff_t = top[0].diff_t * ((x >= self.min) & (x <= self.max)).to(x.dtype)


@register("Swish")
class SwishLayer(_Neuron):
    """y = x sigmoid(beta x) (Caffe's sigmoid, 0.5 tanh(0.5 z) + 0.5); dy/dx = beta y + s (1 - beta y)."""

    def layer_setup(self, bottom, top):
        self.beta = float(np.float32(self.layer_param.swish_param.beta))

    def fn(self, x):
        return x * (0.5 * torch.tanh(0.5 * (x * self.beta)) + 0.5)


@register("PReLU")
class PReLULayer(_Neuron):
    """y = max(x, 0) + a_c min(x, 0) with a learned slope per channel (axis 1), or one scalar slope (a 0-axis
    blob) with ``channel_shared``; ``filler`` defaults to constant 0.25.  The slope's gradient is
    sum(top_diff * x) over x <= 0."""

    def layer_setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.error(f"Number of axes of bottom blob must be >=2 (shape {bottom[0].shape})")
        p = self.layer_param.prelu_param
        self.channel_shared = bool(p.channel_shared)
        channels = bottom[0].shape[1]
        shape = () if self.channel_shared else (channels,)
        filler = p.filler if p.HasField("filler") else constant_filler(0.25)
        self.blobs = [make_param(self, shape, filler, param_dtype(bottom), "prelu_param.filler")]

    def reshape(self, bottom, top):
        s = bottom[0].shape
        if len(s) < 2:
            raise self.error(f"Number of axes of bottom blob must be >=2 (shape {s})")
        want = 1 if self.channel_shared else s[1]
        if self.blobs[0].count != want:
            raise self.error(f"Negative slope size is inconsistent with prototxt config: {self.blobs[0].count} "
                             f"slope values for {want}")
        top[0].reshape(s)

    def compute(self, bottoms, params):
        x, a = bottoms[0], params[0]
        if not self.channel_shared:
            a = a.reshape((1, -1) + (1,) * (x.dim() - 2))
        return [torch.where(x > 0, x, x * a)]
