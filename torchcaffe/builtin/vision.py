"""Convolution, Deconvolution, Pooling, Im2col and SPP, with Caffe 1.0's parameters, shapes and rounding."""
from __future__ import annotations

import math
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from ..layer import TorchLayer, register
from ..proto import caffe_pb2
from ._common import FLT_MAX, canonical_axis, count, make_param, param_dtype

__all__ = ["ConvolutionLayer", "DeconvolutionLayer", "PoolingLayer", "Im2colLayer", "SPPLayer"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _spatial_values(layer, p, name: str, n: int, default, h_field: str, w_field: str) -> List[int]:
    """kernel_size / stride / pad given once, once per spatial axis, or as _h/_w (2-D only)."""
    rep = list(getattr(p, name))
    has_hw = h_field is not None and (p.HasField(h_field) or p.HasField(w_field))
    if has_hw:
        if n != 2:
            raise layer.error(f"{h_field} & {w_field} can only be used for 2D convolution")
        if rep:
            raise layer.error(f"either {name} or {h_field}/{w_field} should be specified; not both")
        return [int(getattr(p, h_field)), int(getattr(p, w_field))]
    if default is None:
        if len(rep) not in (1, n):
            raise layer.error(f"{name} must be specified once, or once per spatial dimension "
                              f"({name} specified {len(rep)} times; {n} spatial dims)")
    elif len(rep) not in (0, 1, n):
        raise layer.error(f"{name} must be specified once, or once per spatial dimension "
                          f"({name} specified {len(rep)} times; {n} spatial dims)")
    if not rep:
        return [default] * n
    return [int(rep[0 if len(rep) == 1 else i]) for i in range(n)]


class _BaseConvolution(TorchLayer):
    """Caffe's BaseConvolutionLayer: parameters, weight blob layout, multiple bottom/top pairs."""

    min_bottoms = 1
    min_tops = 1
    equal_bottom_top = True
    reverse = False  # Deconvolution

    def layer_setup(self, bottom, top):
        p = self.layer_param.convolution_param
        nax = bottom[0].num_axes
        # the channel axis: the axes before it are "num", those after it spatial (Caffe's N-D convolution)
        self.channel_axis = canonical_axis(self, p.axis, nax, "convolution_param.axis")
        n = nax - self.channel_axis - 1
        if n not in _CONV and n != 0:
            raise self.error(f"only 0 to 3 spatial axes (after convolution_param.axis) are supported, the "
                             f"bottom has shape {bottom[0].shape}")
        self.num_spatial = n
        self.kernel = _spatial_values(self, p, "kernel_size", n, None, "kernel_h", "kernel_w")
        if any(k <= 0 for k in self.kernel):
            raise self.error("Filter dimensions must be nonzero (kernel_size)")
        self.stride = _spatial_values(self, p, "stride", n, 1, "stride_h", "stride_w")
        if any(s <= 0 for s in self.stride):
            raise self.error("Stride dimensions must be nonzero (stride)")
        self.pad = _spatial_values(self, p, "pad", n, 0, "pad_h", "pad_w")
        self.dilation = _spatial_values(self, p, "dilation", n, 1, None, None)
        if any(d <= 0 for d in self.dilation):
            raise self.error("dilation must be positive")
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.error("num_output must be positive (convolution_param.num_output)")
        self.group = int(p.group)
        if self.group <= 0 or self.channels % self.group:
            raise self.error(f"the number of input channels ({self.channels}) must be a multiple of group "
                             f"({self.group})")
        if self.num_output % self.group:
            raise self.error(f"num_output ({self.num_output}) must be a multiple of group ({self.group})")
        if self.reverse:
            out_c, in_c = self.channels, self.num_output
        else:
            out_c, in_c = self.num_output, self.channels
        self.weight_shape = (out_c, in_c // self.group) + tuple(self.kernel)
        self.bias_term = bool(p.bias_term)
        dt = param_dtype(bottom)
        self.blobs = [make_param(self, self.weight_shape, p.weight_filler, dt, "weight_filler")]
        if self.bias_term:
            self.blobs.append(make_param(self, (self.num_output,), p.bias_filler, dt, "bias_filler"))

    def output_spatial(self, in_shape) -> List[int]:
        raise NotImplementedError

    def reshape(self, bottom, top):
        s0 = bottom[0].shape
        ca = self.channel_axis
        if len(s0) != ca + 1 + self.num_spatial:
            raise self.error(f"bottom num_axes may not change (was {ca + 1 + self.num_spatial}, now {len(s0)})")
        if s0[ca] != self.channels:
            raise self.error(f"Input size incompatible with convolution kernel: the bottom has {s0[ca]} "
                             f"channels, the layer was set up for {self.channels}")
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != s0:
                raise self.error(f"shape mismatch - bottom[0]: {s0} vs. bottom[{i}]: {b.shape}")
        out = self.output_spatial(s0[ca + 1:])
        if any(o <= 0 for o in out):
            raise self.error(f"the output would be empty: input {s0}, kernel {self.kernel}, stride {self.stride}, "
                             f"pad {self.pad}, dilation {self.dilation}")
        self.num = count(s0, 0, ca)
        self.top_shape = tuple(s0[:ca]) + (self.num_output,) + tuple(out)
        for t in top:
            t.reshape(self.top_shape)

    def compute(self, bottoms, params):
        w = params[0]
        b = params[1] if self.bias_term else None
        n = self.num_spatial
        if n == 0:  # no spatial axes: a 1-D convolution over a length-1 signal
            n, w = 1, w.reshape(tuple(w.shape) + (1,))
        f = _DECONV[n] if self.reverse else _CONV[n]
        kw = dict(stride=self.stride or 1, padding=self.pad or 0, dilation=self.dilation or 1, groups=self.group)
        outs = []
        for x in bottoms:
            x = x.reshape((self.num, self.channels) + (tuple(x.shape[self.channel_axis + 1:]) or (1,)))
            outs.append(f(x, w, b, **kw).reshape(self.top_shape))
        return outs


@register("Convolution")
class ConvolutionLayer(_BaseConvolution):
    """Caffe's Convolution: output = (in + 2 pad - (dilation (kernel - 1) + 1)) / stride + 1 (integer division);
    weights (num_output, channels / group, *kernel), bias (num_output)."""

    def output_spatial(self, in_shape):
        out = []
        for i, n in enumerate(in_shape):
            ext = self.dilation[i] * (self.kernel[i] - 1) + 1
            num = n + 2 * self.pad[i] - ext
            out.append(int(num / self.stride[i]) + 1)  # C++ integer division truncates toward zero
        return out


@register("Deconvolution")
class DeconvolutionLayer(_BaseConvolution):
    """Caffe's Deconvolution: output = stride (in - 1) + dilation (kernel - 1) + 1 - 2 pad;
    weights (channels, num_output / group, *kernel) (torch's conv_transpose layout), bias (num_output)."""

    reverse = True

    def output_spatial(self, in_shape):
        return [self.stride[i] * (n - 1) + self.dilation[i] * (self.kernel[i] - 1) + 1 - 2 * self.pad[i]
                for i, n in enumerate(in_shape)]


@register("Pooling")
class PoolingLayer(TorchLayer):
    """Caffe's Pooling: MAX, AVE and STOCHASTIC.

    Output size: ceil (``round_mode: CEIL``, the default) or floor (``FLOOR``) of (H + 2 pad - kernel) /
    stride, plus one, minus one when pad > 0 and the last window would start at or beyond H + pad.  MAX takes the first maximum of each window (row-major scan, strict ``>``)
    and routes its gradient there; an optional second top receives the argmax as ``h * W + w`` (float), as
    Caffe's mask top.  AVE sums the window clipped to the image and divides by the window size clipped to
    [-pad, H + pad).  STOCHASTIC (no padding; Caffe implements it on the GPU only) picks, in TRAIN, the first
    element of each window whose running sum reaches u * (window sum), u ~ U[0, 1) from torch's generator,
    and routes the gradient there; in TEST it outputs sum(x^2) / sum(x) over the window (0 when the sum is
    not positive) and has no backward.
    """

    exact_bottoms = 1
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottom, top):
        p = self.layer_param.pooling_param
        self.pool = p.pool
        P = caffe_pb2.PoolingParameter
        if self.pool not in (P.MAX, P.AVE, P.STOCHASTIC):
            raise self.error(f"unknown pooling_param.pool {self.pool}")
        if p.round_mode not in (P.CEIL, P.FLOOR):
            raise self.error(f"Unknown rounding mode {p.round_mode} (pooling_param.round_mode)")
        self.round = np.floor if p.round_mode == P.FLOOR else np.ceil
        if len(top) > 1 and self.pool != caffe_pb2.PoolingParameter.MAX:
            raise self.error("a second (mask) top is only produced by MAX pooling")
        self.global_pooling = bool(p.global_pooling)
        has_k = p.HasField("kernel_size")
        has_kh, has_kw = p.HasField("kernel_h"), p.HasField("kernel_w")
        if self.global_pooling:
            if has_k or has_kh or has_kw:
                raise self.error("With Global_pooling: true Filter size cannot specified (kernel_size)")
        else:
            if has_k == (has_kh and has_kw):
                raise self.error("Filter size is kernel_size OR kernel_h and kernel_w; not both")
            if not (has_k or (has_kh and has_kw)):
                raise self.error("For non-square filters both kernel_h and kernel_w are required.")
        if not ((not p.HasField("pad") and p.HasField("pad_h") and p.HasField("pad_w"))
                or (not p.HasField("pad_h") and not p.HasField("pad_w"))):
            raise self.error("pad is pad OR pad_h and pad_w are required.")
        if not ((not p.HasField("stride") and p.HasField("stride_h") and p.HasField("stride_w"))
                or (not p.HasField("stride_h") and not p.HasField("stride_w"))):
            raise self.error("Stride is stride OR stride_h and stride_w are required.")
        if bottom[0].num_axes != 4:
            raise self.error(f"Input must have 4 axes, corresponding to (num, channels, height, width); "
                             f"shape is {bottom[0].shape}")
        if self.global_pooling:
            self.kernel = list(bottom[0].shape[2:])
        elif has_k:
            self.kernel = [int(p.kernel_size)] * 2
        else:
            self.kernel = [int(p.kernel_h), int(p.kernel_w)]
        if min(self.kernel) <= 0:
            raise self.error("Filter dimensions cannot be zero (kernel_size)")
        self.pad = [int(p.pad)] * 2 if not p.HasField("pad_h") else [int(p.pad_h), int(p.pad_w)]
        self.stride = [int(p.stride)] * 2 if not p.HasField("stride_h") else [int(p.stride_h), int(p.stride_w)]
        if min(self.stride) <= 0:
            raise self.error("stride must be positive")
        if self.global_pooling and (any(self.pad) or self.stride != [1, 1]):
            raise self.error("With Global_pooling: true; only pad = 0 and stride = 1")
        if any(self.pad) and self.pool == P.STOCHASTIC:
            raise self.error("Padding implemented only for average and max pooling.")
        if any(self.pad) and (self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]):
            raise self.error(f"pad ({self.pad}) must be smaller than the kernel ({self.kernel})")

    def reshape(self, bottom, top):
        s = bottom[0].shape
        if len(s) != 4:
            raise self.error(f"Input must have 4 axes, corresponding to (num, channels, height, width); "
                             f"shape is {s}")
        if self.global_pooling:
            self.kernel = [s[2], s[3]]
        out = []
        for i in range(2):
            n, k, st, pd = s[2 + i], self.kernel[i], self.stride[i], self.pad[i]
            # Caffe: static_cast<int>(ceil|floor(static_cast<float>(n + 2 pad - k) / stride)) + 1, in float
            o = int(self.round(np.float32(n + 2 * pd - k) / np.float32(st))) + 1
            out.append(o)
        if any(self.pad):
            for i in range(2):
                if (out[i] - 1) * self.stride[i] >= s[2 + i] + self.pad[i]:
                    out[i] -= 1
        self.out = out
        top[0].reshape((s[0], s[1], out[0], out[1]))
        if len(top) > 1:
            top[1].reshape((s[0], s[1], out[0], out[1]))

    def _geometry(self, i: int, n: int):
        """Per axis: (left pad, right pad) of the padded input that holds every window, and for AVE the
        window sizes clipped to [-pad, n + pad)."""
        k, st, pd, o = self.kernel[i], self.stride[i], self.pad[i], self.out[i]
        right = (o - 1) * st + k - pd - n  # may be negative: the last rows are never read
        sizes = [min(j * st - pd + k, n + pd) - (j * st - pd) for j in range(o)]
        return pd, right, sizes

    def compute(self, bottoms, params):
        x = bottoms[0]
        N, C, H, W = x.shape
        ph = self._geometry(0, H)
        pw = self._geometry(1, W)
        if self.pool == caffe_pb2.PoolingParameter.STOCHASTIC:
            return [self._stochastic(x, ph[1], pw[1])]
        is_max = self.pool == caffe_pb2.PoolingParameter.MAX
        fillv = -math.inf if is_max else 0.0
        # F.pad with negative amounts crops; pad left/top and right/bottom so that windows tile exactly
        xp = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=fillv)
        k, st = tuple(self.kernel), tuple(self.stride)
        if is_max:
            y, idx = F.max_pool2d(xp, k, st, 0, 1, ceil_mode=False, return_indices=True)
            empty = torch.isneginf(y)
            if bool(empty.any()):  # a window that lies wholly in the padding: Caffe leaves -FLT_MAX
                y = torch.where(empty, torch.full_like(y, -FLT_MAX), y)
            outs = [y]
            if self._want_mask:
                Wp = xp.shape[3]
                hh = torch.div(idx, Wp, rounding_mode="floor") - ph[0]
                ww = idx - torch.div(idx, Wp, rounding_mode="floor") * Wp - pw[0]
                mask = (hh * W + ww).to(x.dtype)
                mask = torch.where(empty, torch.full_like(mask, -1), mask)
                outs.append(mask)
            return outs
        s = F.avg_pool2d(xp, k, st, 0, ceil_mode=False, count_include_pad=True, divisor_override=1)
        div = torch.tensor(ph[2], dtype=x.dtype, device=x.device)[:, None] * \
            torch.tensor(pw[2], dtype=x.dtype, device=x.device)[None, :]
        return [s / div]

    def _stochastic(self, x, right_h: int, right_w: int):
        # windows [ph * stride, min(ph * stride + k, H)): zeros on the right/bottom complete the clipped ones
        # (they change neither sum), negative amounts crop rows no window reads
        N, C = x.shape[:2]
        xp = F.pad(x, (0, right_w, 0, right_h))
        cols = F.unfold(xp.reshape(N * C, 1, *xp.shape[2:]), tuple(self.kernel), stride=tuple(self.stride))
        cols = cols.reshape(N, C, self.kernel[0] * self.kernel[1], self.out[0] * self.out[1])
        total = cols.sum(dim=2)
        if self.phase == caffe_pb2.TRAIN:
            with torch.no_grad():
                u = torch.rand(total.shape, device=x.device, dtype=x.dtype)
                reached = torch.cumsum(cols, dim=2) >= (u * total)[:, :, None, :]
                # the first element reaching the threshold (the last one if none does)
                first = torch.where(reached.any(dim=2), reached.to(torch.int8).argmax(dim=2),
                                    torch.full_like(total, cols.shape[2] - 1, dtype=torch.int64))
            y = cols.gather(2, first[:, :, None, :]).squeeze(2)
        else:
            sq = (cols * cols).sum(dim=2)
            y = torch.where(total > 0, sq / torch.where(total > 0, total, torch.ones_like(total)),
                            torch.zeros_like(total))
        return y.reshape(N, C, self.out[0], self.out[1])

    def forward(self, bottom, top):
        self._want_mask = len(top) > 1
        super().forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        if self.pool == caffe_pb2.PoolingParameter.STOCHASTIC and self.phase != caffe_pb2.TRAIN \
                and propagate_down[0]:
            raise self.error("STOCHASTIC pooling has no backward in TEST (Caffe backpropagates only the TRAIN "
                             "samples)")
        super().backward(top, propagate_down, bottom)


# -- Im2col and SPP ------------------------------------------------------------------------------------------
@register("Im2col")
class Im2colLayer(TorchLayer):
    """Caffe's Im2col: the columns a convolution would multiply, as a blob.

    ``convolution_param``'s kernel_size / stride / pad / dilation (once, once per spatial axis, or _h/_w in
    2-D) and ``axis`` (the channel axis; the axes after it are spatial, the axes before it are batch axes).
    Top: the bottom's shape with channels C * prod(kernel) and each spatial axis
    (in + 2 pad - (dilation (kernel - 1) + 1)) / stride + 1; channel index (c * kh + i) * kw + j holds
    x[c, y * stride + i * dilation - pad, x * stride + j * dilation - pad] (0 outside the image).
    """

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.convolution_param
        nax = bottom[0].num_axes
        self.channel_axis = canonical_axis(self, p.axis, nax, "convolution_param.axis")
        n = nax - self.channel_axis - 1
        if n < 1:
            raise self.error(f"the bottom of shape {bottom[0].shape} has no spatial axis after the channel "
                             f"axis {self.channel_axis}")
        self.num_spatial = n
        self.kernel = _spatial_values(self, p, "kernel_size", n, None, "kernel_h", "kernel_w")
        if any(k <= 0 for k in self.kernel):
            raise self.error("Filter dimensions must be nonzero (kernel_size)")
        self.stride = _spatial_values(self, p, "stride", n, 1, "stride_h", "stride_w")
        if any(s <= 0 for s in self.stride):
            raise self.error("Stride dimensions must be nonzero (stride)")
        self.pad = _spatial_values(self, p, "pad", n, 0, "pad_h", "pad_w")
        self.dilation = _spatial_values(self, p, "dilation", n, 1, None, None)
        if any(d <= 0 for d in self.dilation):
            raise self.error("dilation must be positive")

    def reshape(self, bottom, top):
        s = list(bottom[0].shape)
        ca = self.channel_axis
        if len(s) != ca + 1 + self.num_spatial:
            raise self.error(f"bottom num_axes may not change (was {ca + 1 + self.num_spatial}, now {len(s)})")
        out = list(s)
        for i in range(self.num_spatial):
            out[ca] *= self.kernel[i]
            ext = self.dilation[i] * (self.kernel[i] - 1) + 1
            out[ca + 1 + i] = int((s[ca + 1 + i] + 2 * self.pad[i] - ext) / self.stride[i]) + 1
        if any(o <= 0 for o in out[ca + 1:]):
            raise self.error(f"the output would be empty: input {tuple(s)}, kernel {self.kernel}, stride "
                             f"{self.stride}, pad {self.pad}, dilation {self.dilation}")
        self.out = out
        top[0].reshape(tuple(out))

    def compute(self, bottoms, params):
        x = bottoms[0]
        ca, n = self.channel_axis, self.num_spatial
        s = x.shape
        num = int(np.prod(s[:ca], dtype=np.int64))
        c = s[ca]
        x = x.reshape((num, c) + tuple(s[ca + 1:]))
        pads = []
        for i in reversed(range(n)):
            pads += [self.pad[i], self.pad[i]]
        x = F.pad(x, pads)
        for i in range(n):  # each spatial axis: windows of `extent`, every `stride`; keep every `dilation`-th
            ext = self.dilation[i] * (self.kernel[i] - 1) + 1
            x = x.unfold(2 + i, ext, self.stride[i])[..., ::self.dilation[i]]
        # (num, C, o_1..o_n, k_1..k_n) -> (num, C, k_1..k_n, o_1..o_n)
        perm = [0, 1] + list(range(2 + n, 2 + 2 * n)) + list(range(2, 2 + n))
        return [x.permute(perm).reshape(tuple(self.out))]


@register("SPP")
class SPPLayer(TorchLayer):
    """Caffe's spatial pyramid pooling of a 4-D blob.

    Level l (0 .. pyramid_height - 1) pools into 2^l x 2^l bins with Caffe's Pooling (``pool`` MAX or AVE):
    kernel = ceil(H / 2^l), pad = (kernel 2^l - H + 1) / 2, stride = kernel (likewise in W).  The levels are
    flattened per item and concatenated along axis 1; with pyramid_height 1 the top is the 4-D pooling output
    (N, C, 1, 1), as in Caffe.
    """

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.spp_param
        self.pyramid_height = int(p.pyramid_height)
        if self.pyramid_height < 1:
            raise self.error("spp_param.pyramid_height must be at least 1")
        S, P = caffe_pb2.SPPParameter, caffe_pb2.PoolingParameter
        methods = {S.MAX: P.MAX, S.AVE: P.AVE, S.STOCHASTIC: P.STOCHASTIC}  # STOCHASTIC: levels without padding
        if p.pool not in methods:
            raise self.error(f"unknown spp_param.pool {p.pool}")
        self.pool = methods[p.pool]
        self._shape = None

    def _pooling_param(self, level: int, h: int, w: int) -> "caffe_pb2.LayerParameter":
        lp = caffe_pb2.LayerParameter()
        lp.name = f"{self.name}_level{level}"
        lp.type = "Pooling"
        pp = lp.pooling_param
        bins = 2 ** level
        kh, kw = -(-h // bins), -(-w // bins)
        pp.kernel_h, pp.kernel_w = kh, kw
        pp.stride_h, pp.stride_w = kh, kw
        pp.pad_h, pp.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        pp.pool = self.pool
        return lp

    def reshape(self, bottom, top):
        from ..blob import Blob
        from ..layer import LayerError

        s = bottom[0].shape
        if len(s) != 4:
            raise self.error(f"Input must have 4 axes, corresponding to (num, channels, height, width); "
                             f"shape is {s}")
        if min(s[2], s[3]) <= 0:
            raise self.error("Input dimensions cannot be zero.")
        if s != self._shape:
            self.pools = []
            for level in range(self.pyramid_height):
                pool = PoolingLayer(self._pooling_param(level, s[2], s[3]), self.phase, self.device)
                try:
                    pool.setup([bottom[0]], [Blob((), device=self.device, dtype=bottom[0].dtype)])
                except LayerError as e:
                    raise self.error(f"pyramid level {level} of a {s[2]}x{s[3]} input: {e}") from None
                pool._want_mask = False
                self.pools.append(pool)
            self._shape = s
        if self.pyramid_height == 1:
            top[0].reshape((s[0], s[1]) + tuple(self.pools[0].out))
        else:
            top[0].reshape((s[0], sum(s[1] * o[0] * o[1] for o in (p.out for p in self.pools))))

    def compute(self, bottoms, params):
        x = bottoms[0]
        outs = [pool.compute([x], [])[0] for pool in self.pools]
        if self.pyramid_height == 1:
            return outs
        return [torch.cat([o.reshape(x.shape[0], -1) for o in outs], dim=1)]
