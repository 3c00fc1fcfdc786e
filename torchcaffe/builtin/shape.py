"""Blob plumbing and dense layers: Concat, Slice, Split, Silence, Flatten, Reshape, Crop, Eltwise,
InnerProduct, ArgMax, Softmax, Reduction, Tile, Embed, BatchReindex, Filter, Parameter."""
from __future__ import annotations

from typing import List

import numpy as np
import torch

from ..layer import Layer, TorchLayer, register
from ..proto import caffe_pb2
from ._common import FLT_MAX, canonical_axis, count, make_param, no_backward, param_dtype

__all__ = ["ConcatLayer", "SliceLayer", "SplitLayer", "SilenceLayer", "FlattenLayer", "ReshapeLayer",
           "CropLayer", "EltwiseLayer", "InnerProductLayer", "ArgMaxLayer", "SoftmaxLayer", "ReductionLayer",
           "TileLayer", "EmbedLayer", "BatchReindexLayer", "FilterLayer", "ParameterLayer"]


@register("Concat")
class ConcatLayer(TorchLayer):
    """Concatenate along ``axis`` (or the legacy ``concat_dim``); all other axes must agree."""

    min_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise self.error("Either axis or concat_dim should be specified; not both.")

    def reshape(self, bottom, top):
        p = self.layer_param.concat_param
        s0 = bottom[0].shape
        if p.HasField("concat_dim"):
            self.axis = int(p.concat_dim)
            if self.axis >= len(s0):
                raise self.error(f"concat_dim {self.axis} out of range for a {len(s0)}-D blob")
        else:
            self.axis = canonical_axis(self, p.axis, len(s0), "concat_param.axis")
        total = 0
        for i, b in enumerate(bottom):
            if b.num_axes != len(s0):
                raise self.error(f"All inputs must have the same #axes: bottom[{i}] has shape {b.shape}, "
                                 f"bottom[0] {s0}")
            for j in range(len(s0)):
                if j != self.axis and b.shape[j] != s0[j]:
                    raise self.error(f"All inputs must have the same shape, except at concat_axis: bottom[0] "
                                     f"{s0} vs. bottom[{i}] {b.shape}")
            total += b.shape[self.axis]
        shape = list(s0)
        shape[self.axis] = total
        top[0].reshape(tuple(shape))
        if len(bottom) == 1:  # Caffe: the top is the bottom (shared data and diff); nothing to compute
            top[0].share_data_view(bottom[0])
            top[0].share_diff_view(bottom[0])

    def forward(self, bottom, top):
        if len(bottom) > 1:
            super().forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        if len(bottom) > 1:
            super().backward(top, propagate_down, bottom)

    def compute(self, bottoms, params):
        return [torch.cat(bottoms, dim=self.axis)]


@register("Slice")
class SliceLayer(TorchLayer):
    """Split bottom along ``axis`` (or legacy ``slice_dim``) at ``slice_point``s, or evenly when none given."""

    exact_bottoms = 1
    min_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.slice_param
        if p.HasField("axis") and p.HasField("slice_dim"):
            raise self.error("Either axis or slice_dim should be specified; not both.")
        self.slice_points = [int(v) for v in p.slice_point]

    def reshape(self, bottom, top):
        p = self.layer_param.slice_param
        s = bottom[0].shape
        if p.HasField("slice_dim"):
            self.axis = int(p.slice_dim)
            if self.axis >= len(s):
                raise self.error(f"slice_dim {self.axis} out of range for a {len(s)}-D blob")
        else:
            self.axis = canonical_axis(self, p.axis, len(s), "slice_param.axis")
        n = s[self.axis]
        if self.slice_points:
            if len(self.slice_points) != len(top) - 1:
                raise self.error(f"slice_point must be given once per top but the last: {len(top)} tops, "
                                 f"{len(self.slice_points)} slice points")
            if len(top) > n:
                raise self.error(f"{len(top)} tops cannot slice an axis of size {n}")
            prev, sizes = 0, []
            for sp in self.slice_points:
                if sp <= prev:
                    raise self.error(f"slice_point values must increase strictly: {self.slice_points}")
                sizes.append(sp - prev)
                prev = sp
            sizes.append(n - prev)
            if sizes[-1] < 0:
                raise self.error(f"the last slice_point ({prev}) exceeds the axis size ({n})")
        else:
            if n % len(top):
                raise self.error(f"the axis size ({n}) must be divisible by the number of tops ({len(top)}) "
                                 "when no slice_point is given")
            sizes = [n // len(top)] * len(top)
        self.sizes = sizes
        for t, sz in zip(top, sizes):
            shape = list(s)
            shape[self.axis] = sz
            t.reshape(tuple(shape))
        if len(top) == 1:  # Caffe: the top is the bottom (shared data and diff); nothing to compute
            top[0].share_data_view(bottom[0])
            top[0].share_diff_view(bottom[0])

    def forward(self, bottom, top):
        if len(top) > 1:
            super().forward(bottom, top)

    def backward(self, top, propagate_down, bottom):
        if len(top) > 1:
            super().backward(top, propagate_down, bottom)

    def compute(self, bottoms, params):
        # Caffe's blobs are contiguous; so are ours (a pycaffe user may flatten .data as a view)
        return [s.contiguous() for s in torch.split(bottoms[0], self.sizes, dim=self.axis)]


@register("Split")
class SplitLayer(Layer):
    """Every top shares the bottom's data; backward sums the tops' diffs into the bottom diff."""

    exact_bottoms = 1
    min_tops = 1

    def layer_setup(self, bottom, top):
        for i, t in enumerate(top):
            if t is bottom[0]:
                raise self.error(f"Split Layer does not allow in-place computation (top[{i}] is the bottom).")

    def reshape(self, bottom, top):
        for t in top:
            t.reshape(bottom[0].shape)
            t.share_data(bottom[0])

    def forward(self, bottom, top):
        for t in top:
            if t._data is not bottom[0]._data:
                t.share_data(bottom[0])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        d = top[0].diff_t
        if len(top) > 1:
            d = d + top[1].diff_t
            for t in top[2:]:
                d = d + t.diff_t
        else:
            d = d.clone()
        bottom[0].diff_t = d


@register("Silence")
class SilenceLayer(Layer):
    """Consumes its bottoms; backward sets their diffs to zero."""

    min_bottoms = 1
    exact_tops = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, pd in zip(bottom, propagate_down):
            if pd:
                b.zero_diff()


@register("Flatten")
class FlattenLayer(Layer):
    """Collapse axes [axis, end_axis] into one.  As Caffe's, the top is the bottom's memory: forward shares
    the bottom's data, backward gives the bottom the top's diff (so they stay one array from then on)."""

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("Flatten layer does not allow in-place computation.")

    def reshape(self, bottom, top):
        p = self.layer_param.flatten_param
        s = bottom[0].shape
        a = canonical_axis(self, p.axis, len(s), "flatten_param.axis")
        e = canonical_axis(self, p.end_axis, len(s), "flatten_param.end_axis")
        self.out_shape = tuple(s[:a]) + (count(s, a, e + 1),) + tuple(s[e + 1:])
        top[0].reshape(self.out_shape)

    def forward(self, bottom, top):
        top[0].share_data_view(bottom[0])

    def backward(self, top, propagate_down, bottom):
        bottom[0].share_diff_view(top[0])


@register("Reshape")
class ReshapeLayer(Layer):
    """Caffe's Reshape: ``shape`` replaces bottom axes [axis, axis + num_axes); 0 copies the bottom's
    dimension at the same position, one -1 is inferred.  The top is the bottom's memory, data and diff alike
    (Caffe's ShareData/ShareDiff at reshape): forward and backward have nothing to do."""

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("Reshape Layer does not allow in-place computation.")
        p = self.layer_param.reshape_param
        self.dims = [int(d) for d in p.shape.dim]
        self.copy_axes = [i for i, d in enumerate(self.dims) if d == 0]
        inferred = [i for i, d in enumerate(self.dims) if d == -1]
        if len(inferred) > 1:
            raise self.error("new shape contains multiple -1 dims; at most a single (1) value of -1 may be "
                             "specified (reshape_param.shape)")
        for d in self.dims:
            if d < -1:
                raise self.error(f"reshape_param.shape dimensions must be >= -1, got {self.dims}")
        self.inferred = inferred[0] if inferred else -1
        self.constant_count = int(np.prod([d for d in self.dims if d > 0], dtype=np.int64))
        if p.num_axes < -1:
            raise self.error("reshape_param.num_axes must be >= 0, or -1 for all")

    def reshape(self, bottom, top):
        p = self.layer_param.reshape_param
        bs = bottom[0].shape
        nax = len(bs)
        start = p.axis if p.axis >= 0 else nax + p.axis + 1
        if not 0 <= start <= nax:
            raise self.error(f"reshape_param.axis {p.axis} out of range for a {nax}-D bottom")
        end = nax if p.num_axes == -1 else start + p.num_axes
        if end > nax:
            raise self.error(f"end_axis = axis + num_axes is out of range ({end} > {nax})")
        shape = list(bs[:start]) + list(self.dims) + list(bs[end:])
        for i in self.copy_axes:
            if start + i >= nax:
                raise self.error("new shape contains a 0, but there was no corresponding bottom axis to copy")
            shape[start + i] = bs[start + i]
        if self.inferred >= 0:
            explicit = self.constant_count * count(bs, 0, start) * count(bs, end)
            for i in self.copy_axes:
                explicit *= shape[start + i]
            total = count(bs)
            if explicit == 0 or total % explicit:
                raise self.error(f"bottom count ({total}) must be divisible by the product of the specified "
                                 f"dimensions ({explicit})")
            shape[start + self.inferred] = total // explicit
        if count(shape) != count(bs):
            raise self.error(f"output count must match input count: {tuple(shape)} vs. bottom {bs}")
        self.out_shape = tuple(shape)
        top[0].reshape(self.out_shape)
        top[0].share_data_view(bottom[0])
        top[0].share_diff_view(bottom[0])

    def forward(self, bottom, top):
        pass


@register("Crop")
class CropLayer(TorchLayer):
    """Crop bottom[0] to bottom[1]'s shape on axes >= ``axis`` at ``offset`` (one value for all axes, or one
    per cropped axis; default 0).  Only bottom[0] gets a gradient (zero outside the crop)."""

    exact_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.crop_param
        if bottom[0].num_axes != bottom[1].num_axes:
            raise self.error(f"bottom[0] ({bottom[0].shape}) and bottom[1] ({bottom[1].shape}) must have the "
                             "same number of axes")
        start = canonical_axis(self, p.axis, bottom[0].num_axes, "crop_param.axis")
        if len(p.offset) > 1 and start + len(p.offset) != bottom[0].num_axes:
            raise self.error(f"number of offset values specified ({len(p.offset)}) must match the number of "
                             f"cropping axes ({bottom[0].num_axes - start})")

    def reshape(self, bottom, top):
        p = self.layer_param.crop_param
        s0, s1 = bottom[0].shape, bottom[1].shape
        start = canonical_axis(self, p.axis, len(s0), "crop_param.axis")
        offsets, shape = [], []
        for i in range(len(s0)):
            off, size = 0, s0[i]
            if i >= start:
                size = s1[i]
                if len(p.offset) == 1:
                    off = int(p.offset[0])
                elif len(p.offset) > 1:
                    off = int(p.offset[i - start])
                if s0[i] - off < s1[i]:
                    raise self.error(f"invalid crop parameters in dimension: {i} (bottom[0] size {s0[i]}, "
                                     f"offset {off}, crop size {s1[i]})")
            offsets.append(off)
            shape.append(size)
        self.slices = tuple(slice(o, o + n) for o, n in zip(offsets, shape))
        top[0].reshape(tuple(shape))

    def compute(self, bottoms, params):
        # bottom[1] is only a shape reference: its diff (if asked for) is zero
        return [bottoms[0][self.slices].contiguous()]


@register("Eltwise")
class EltwiseLayer(Layer):
    """Element-wise PROD, SUM (with one ``coeff`` per bottom) or MAX of equally shaped bottoms.

    MAX picks as Caffe does: between bottom 0 and 1 a tie goes to bottom 1 (``a > b ? a : b``), later bottoms
    replace the running maximum only when strictly greater; the gradient flows to the picked bottom.  PROD's
    gradient is the product of the other bottoms (``stable_prod_grad``, the default) or top / bottom.
    """

    min_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.eltwise_param
        self.op = p.operation
        if len(p.coeff) and self.op == caffe_pb2.EltwiseParameter.PROD:
            raise self.error("Eltwise layer only takes coefficients for summation (eltwise_param.coeff).")
        if len(p.coeff) not in (0, len(bottom)):
            raise self.error(f"Eltwise Layer takes one coefficient per bottom blob ({len(bottom)} bottoms, "
                             f"{len(p.coeff)} coeff values)")
        self.coeffs = [float(np.float32(c)) for c in p.coeff] or [1.0] * len(bottom)
        self.stable_prod_grad = bool(p.stable_prod_grad)

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != bottom[0].shape:
                raise self.error(f"bottom[{i}] has shape {b.shape}, bottom[0] {bottom[0].shape}: all bottoms "
                                 "must have the same shape")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xs = [b.data_t for b in bottom]
        self._xs = xs
        E = caffe_pb2.EltwiseParameter
        if self.op == E.PROD:
            y = xs[0] * xs[1]
            for x in xs[2:]:
                y = y * x
        elif self.op == E.SUM:
            y = torch.zeros_like(xs[0])
            for c, x in zip(self.coeffs, xs):
                y = y + (x if c == 1 else c * x)
        elif self.op == E.MAX:
            a, b = xs[0], xs[1]
            first = a > b
            y = torch.where(first, a, b)
            mask = torch.where(first, torch.zeros((), dtype=torch.int64, device=a.device),
                               torch.ones((), dtype=torch.int64, device=a.device))
            for i, x in enumerate(xs[2:], 2):
                better = x > y
                y = torch.where(better, x, y)
                mask = torch.where(better, torch.full_like(mask, i), mask)
            self._mask = mask
        else:
            raise self.error(f"unknown eltwise_param.operation {self.op}")
        self._y = y
        top[0].data_t = y

    def backward(self, top, propagate_down, bottom):
        g = top[0].diff_t
        E = caffe_pb2.EltwiseParameter
        xs = self._xs
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if self.op == E.PROD:
                if self.stable_prod_grad:
                    d = None
                    for j, x in enumerate(xs):
                        if j != i:
                            d = x.clone() if d is None else d * x
                else:
                    d = self._y / xs[i]
                d = d * g
            elif self.op == E.SUM:
                c = self.coeffs[i]
                d = g.clone() if c == 1 else g * c
            else:
                d = g * (self._mask == i).to(g.dtype)
            b.diff_t = d


@register("InnerProduct")
class InnerProductLayer(TorchLayer):
    """y = x W^T + b over the flattened axes from ``axis`` on; weights (num_output, K), or (K, num_output)
    with ``transpose``; bias (num_output)."""

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.error("inner_product_param.num_output must be positive")
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose)
        self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "inner_product_param.axis")
        self.K = count(bottom[0].shape, self.axis)
        wshape = (self.K, self.num_output) if self.transpose else (self.num_output, self.K)
        dt = param_dtype(bottom)
        self.blobs = [make_param(self, wshape, p.weight_filler, dt, "weight_filler")]
        if self.bias_term:
            self.blobs.append(make_param(self, (self.num_output,), p.bias_filler, dt, "bias_filler"))

    def reshape(self, bottom, top):
        s = bottom[0].shape
        axis = canonical_axis(self, self.layer_param.inner_product_param.axis, len(s), "inner_product_param.axis")
        if count(s, axis) != self.K:
            raise self.error(f"Input size incompatible with inner product parameters: the bottom {s} has "
                             f"{count(s, axis)} inputs from axis {axis}, the weights expect {self.K}")
        self.axis = axis
        self.M = count(s, 0, axis)
        top[0].reshape(tuple(s[:axis]) + (self.num_output,))

    def compute(self, bottoms, params):
        x = bottoms[0].reshape(self.M, self.K)
        w = params[0]
        y = x @ w if self.transpose else x @ w.t()
        if self.bias_term:
            y = y + params[1]
        return [y.reshape(tuple(bottoms[0].shape[:self.axis]) + (self.num_output,))]


@register("Softmax")
class SoftmaxLayer(TorchLayer):
    """Softmax over ``axis`` (max-subtracted, as Caffe)."""

    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, self.layer_param.softmax_param.axis, bottom[0].num_axes,
                                   "softmax_param.axis")
        top[0].reshape(bottom[0].shape)

    def compute(self, bottoms, params):
        return [torch.softmax(bottoms[0], dim=self.axis)]


@register("ArgMax")
class ArgMaxLayer(Layer):
    """Indices (and with ``out_max_val`` values) of the ``top_k`` largest entries, per instance over all
    non-batch axes, or along ``axis``.  Ties: the larger index ranks first (Caffe sorts (value, index) pairs
    with std::greater).  No backward."""

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.argmax_param
        self.out_max_val = bool(p.out_max_val)
        self.top_k = int(p.top_k)
        if self.top_k < 1:
            raise self.error("argmax_param.top_k must not be less than 1.")
        self.has_axis = p.HasField("axis")
        if self.has_axis:
            self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "argmax_param.axis")
            if bottom[0].shape[self.axis] < self.top_k:
                raise self.error("top_k must be less than or equal to the dimension of the axis.")
        elif count(bottom[0].shape, 1) < self.top_k:
            raise self.error("top_k must be less than or equal to the dimension of the flattened bottom blob "
                             "per instance.")

    def reshape(self, bottom, top):
        s = bottom[0].shape
        if self.has_axis:
            shape = list(s)
            shape[self.axis] = self.top_k
        else:
            shape = [1] * max(len(s), 3)
            shape[0] = s[0]
            shape[2] = self.top_k
            if self.out_max_val:
                shape[1] = 2
        top[0].reshape(tuple(shape))

    @staticmethod
    def _topk(v: torch.Tensor, k: int, dim: int):
        # order by value descending, ties by larger index first: reverse, stable sort, map back
        n = v.shape[dim]
        rev = torch.flip(v, dims=(dim,))
        vals, idx = torch.sort(rev, dim=dim, descending=True, stable=True)
        vals = vals.narrow(dim, 0, k)
        idx = (n - 1) - idx.narrow(dim, 0, k)
        return vals, idx

    def forward(self, bottom, top):
        x = bottom[0].data_t
        with torch.no_grad():
            if self.has_axis:
                vals, idx = self._topk(x, self.top_k, self.axis)
                top[0].data_t = (vals if self.out_max_val else idx.to(x.dtype)).contiguous()
            else:
                flat = x.reshape(x.shape[0], -1)
                vals, idx = self._topk(flat, self.top_k, 1)
                out = torch.cat([idx.to(x.dtype), vals], dim=1) if self.out_max_val else idx.to(x.dtype)
                top[0].data_t = out.reshape(top[0].shape)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False  # Caffe would reach NOT_IMPLEMENTED under force_backward; we keep the net runnable

    def backward(self, top, propagate_down, bottom):
        no_backward(self, propagate_down)


@register("Reduction")
class ReductionLayer(TorchLayer):
    """Reduce all axes from ``axis`` on (top shape: bottom.shape[:axis]) by SUM, ASUM (sum of |x|), SUMSQ or
    MEAN, times ``coeff``; gradients coeff * top_diff * (1 | sign(x) | 2 x | 1/dim)."""

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.reduction_param
        self.op = p.operation
        R = caffe_pb2.ReductionParameter
        if self.op not in (R.SUM, R.ASUM, R.SUMSQ, R.MEAN):
            raise self.error(f"Unknown reduction op: {self.op} (reduction_param.operation)")

    def reshape(self, bottom, top):
        p = self.layer_param.reduction_param
        s = bottom[0].shape
        self.axis = canonical_axis(self, p.axis, len(s), "reduction_param.axis")
        self.num = count(s, 0, self.axis)
        self.dim = count(s, self.axis)
        coeff = np.float32(p.coeff)
        if self.op == caffe_pb2.ReductionParameter.MEAN:
            coeff = coeff / np.float32(self.dim)
        self.coeff = float(np.float32(coeff))
        top[0].reshape(tuple(s[:self.axis]))

    def compute(self, bottoms, params):
        x = bottoms[0].reshape(self.num, self.dim)
        R = caffe_pb2.ReductionParameter
        if self.op == R.ASUM:
            x = x.abs()
        elif self.op == R.SUMSQ:
            x = x * x
        y = x.sum(dim=1)
        if self.coeff != 1:
            y = y * self.coeff
        return [y.reshape(tuple(bottoms[0].shape[:self.axis]))]


@register("Tile")
class TileLayer(TorchLayer):
    """Repeat the bottom ``tiles`` times along ``axis`` (the block of axes from ``axis`` on is copied whole,
    as Caffe's Tile); the gradient sums the copies."""

    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        p = self.layer_param.tile_param
        s = bottom[0].shape
        self.axis = canonical_axis(self, p.axis, len(s), "tile_param.axis")
        if not p.HasField("tiles"):
            raise self.error("Number of tiles must be specified (tile_param.tiles)")
        self.tiles = int(p.tiles)
        if self.tiles <= 0:
            raise self.error(f"Number of tiles must be positive (tile_param.tiles: {self.tiles})")
        shape = list(s)
        shape[self.axis] *= self.tiles
        top[0].reshape(tuple(shape))

    def compute(self, bottoms, params):
        x = bottoms[0]
        reps = [1] * x.dim()
        reps[self.axis] = self.tiles
        return [x.repeat(*reps)]


@register("Embed")
class EmbedLayer(Layer):
    """A lookup table: each bottom value (an integer index in [0, input_dim)) becomes row W[index] of the
    weights (input_dim x num_output) plus the bias (num_output; ``bias_term``); top shape bottom.shape +
    (num_output,).  No gradient to the indices (an error if one is asked for, as Caffe's CHECK)."""

    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.layer_param.embed_param
        self.N = int(p.num_output)
        if self.N <= 0:
            raise self.error("EmbedLayer num_output must be positive (embed_param.num_output).")
        self.K = int(p.input_dim)
        if self.K <= 0:
            raise self.error("EmbedLayer input_dim must be positive (embed_param.input_dim).")
        self.bias_term = bool(p.bias_term)
        dt = param_dtype(bottom)
        self.blobs = [make_param(self, (self.K, self.N), p.weight_filler, dt, "embed_param.weight_filler")]
        if self.bias_term:
            self.blobs.append(make_param(self, (self.N,), p.bias_filler, dt, "embed_param.bias_filler"))

    def reshape(self, bottom, top):
        top[0].reshape(tuple(bottom[0].shape) + (self.N,))

    def forward(self, bottom, top):
        x = bottom[0].data_t
        idx = x.reshape(-1).to(torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.K):
            bad = idx[(idx < 0) | (idx >= self.K)][0].item()
            raise self.error(f"index {bad} is out of range [0, {self.K}) (embed_param.input_dim)")
        self._idx = idx
        w = self.blobs[0].data_t
        y = w[idx]
        if self.bias_term:
            y = y + self.blobs[1].data_t
        top[0].data_t = y.reshape(top[0].shape)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return True  # as Caffe: force_backward then reaches the CHECK in backward

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Can't backpropagate to EmbedLayer input.")
        g = top[0].diff_t.reshape(-1, self.N)
        if self.param_propagate_down[0]:
            w = self.blobs[0]
            w.diff_t = w.diff_t.index_add(0, self._idx, g.to(w.dtype))
        if self.bias_term and self.param_propagate_down[1]:
            b = self.blobs[1]
            b.diff_t = b.diff_t + g.sum(dim=0).to(b.dtype)


@register("BatchReindex")
class BatchReindexLayer(Layer):
    """top[n] = bottom[0][index[n]] for the 1-D index blob bottom[1] (values in [0, bottom[0].shape[0]));
    the gradient adds each top row back into the row it came from.  No gradient to the indices."""

    exact_bottoms = 2
    exact_tops = 1

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise self.error(f"the index bottom must be 1-D, got shape {bottom[1].shape}")
        top[0].reshape((bottom[1].shape[0],) + tuple(bottom[0].shape[1:]))

    def forward(self, bottom, top):
        idx_f = bottom[1].data_t
        n0 = bottom[0].shape[0]
        if bool((idx_f < 0).any()):
            raise self.error("Index specified for reindex layer was negative.")
        if bool((idx_f >= n0).any()):
            raise self.error(f"Index specified for reindex layer was greater than batch size ({n0}).")
        self._idx = idx_f.to(torch.int64)
        top[0].data_t = bottom[0].data_t[self._idx]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("Cannot backprop to index.")
        if propagate_down[0]:
            d = torch.zeros_like(bottom[0].data_t)
            bottom[0].diff_t = d.index_add(0, self._idx, top[0].diff_t.to(d.dtype))


@register("Filter")
class FilterLayer(Layer):
    """Forward the items (along axis 0) of bottoms 0..k-1 whose selector (the last bottom, N x 1 x ...) is
    nonzero; tops have the selected count (at set-up, as Caffe, the full count).  Gradients go back to the
    selected items, zero elsewhere; none to the selector."""

    min_bottoms = 2
    min_tops = 1

    def layer_setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error(f"needs one top per filtered bottom: {len(bottom) - 1} filtered bottoms, "
                             f"{len(top)} tops")
        self._first_reshape = True

    def allow_force_backward(self, bottom_index: int) -> bool:
        return True  # as Caffe: force_backward on the selector reaches the error in backward

    def reshape(self, bottom, top):
        sel = bottom[-1]
        if sel.num_axes == 0:
            raise self.error("the selector blob needs a first axis")
        for i in range(1, sel.num_axes):
            if sel.shape[i] != 1:
                raise self.error(f"Selector blob dimensions must be singletons (1), except the first "
                                 f"(shape {sel.shape})")
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes == 0 or b.shape[0] != sel.shape[0]:
                raise self.error(f"Each bottom should have the same 0th dimension as the selector blob: "
                                 f"bottom[{i}] {b.shape}, selector {sel.shape}")
        self._indices = torch.nonzero(sel.data_t.reshape(-1) != 0).reshape(-1)
        n = int(self._indices.numel())
        if self._first_reshape:
            n = bottom[0].shape[0]
            self._first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((n,) + tuple(b.shape[1:]))

    def forward(self, bottom, top):
        for t, b in zip(top, bottom):
            t.data_t = b.data_t[self._indices.to(b.device)]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise self.error("Filter Layer cannot backpropagate to filter index inputs")
        for i, t in enumerate(top):
            if propagate_down[i]:
                d = torch.zeros_like(bottom[i].data_t)
                d[self._indices.to(d.device)] = t.diff_t.to(d.dtype)
                bottom[i].diff_t = d


@register("Parameter")
class ParameterLayer(Layer):
    """A learnable blob of ``parameter_param.shape`` (initialised to zero; weights come from a caffemodel or
    the solver) given as the top: the top shares the parameter's data and diff."""

    exact_bottoms = 0
    exact_tops = 1

    def layer_setup(self, bottom, top):
        shape = tuple(int(d) for d in self.layer_param.parameter_param.shape.dim)
        dt = top[0].dtype if top else torch.float32
        self.blobs = [make_param(self, shape, None, dt, "parameter_param")]
        top[0].reshape(shape)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        top[0].share_data(self.blobs[0])
        top[0].share_diff(self.blobs[0])
