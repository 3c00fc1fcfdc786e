"""Caffe Python layers of Colorful Image Colorization (``python_param { module: 'colorization_layers'
layer: '<Name>' param_str: '<JSON>' }``).

Every layer is a thin wrapper over :mod:`cic`. It has two paths that share one implementation:

* ``forward_torch(bottom) -> [tops]`` / ``backward_torch(top_diff, propagate_down, bottom) -> [bottom diffs]``
  on torch tensors on the net's device -- the fast path that the ``torchcaffe`` runtime calls;
* pycaffe's ``setup / reshape / forward / backward`` on blobs with numpy ``.data`` / ``.diff`` (a real BVLC
  Caffe): the blobs are viewed as CPU tensors, the torch path runs, and the results are copied back.

``param_str`` is JSON (empty = all defaults). Unknown keys and bad values raise ``ValueError`` naming the
layer class and the key. A relative file path resolves as Caffe resolves the other paths of a prototxt,
against the working directory; when the file is not there, the toolkit's ``data/`` is tried (where the 313
bins ship). A missing file's error lists both places.

Layers (bottoms -> tops; ``param_str`` keys with their defaults):

* ``BGR2LabLayer``: N x 3 x H x W BGR 0..255 (the Data blob) -> N x 3 x H x W Lab. No keys.
* ``NNEncLayer``: N x 2 x H x W ab -> N x Q x H x W soft-encoding.
  ``{"k": 5, "sigma": 5, "bins": "pts_in_hull.npy"}`` (the released layer used k 10).
* ``NonGrayMaskLayer``: N x 2 x H x W ab -> N x 1 x H x W, 1 at every pixel of a non-gray image, 0 in a
  gray one. ``{"threshold": 5}``.
* ``PriorBoostLayer``: N x Q x H x W encoding -> N x 1 x H x W rebalancing weight of each pixel's argmax bin.
  ``{"prior": "prior_probs.npy", "lambda": 0.5}`` (the file holds the already smoothed prior).
* ``ClassRebalanceMultLayer``: (N x C x H x W scores, N x 1 x H x W weights) -> a copy of the scores;
  backward multiplies the gradient by the weights. No keys.
* ``SoftmaxCrossEntropyLossLayer``: (scores, target of the same shape) -> loss, shape (1,). No keys.
* ``AnnealedMeanLayer``: N x Q x H x W scores -> N x 2 x H x W ab. ``{"T": 0.38, "bins": "pts_in_hull.npy"}``.
* ``BilinearUpsampleLayer``: N x C x h x w (and optionally a reference blob whose H x W it copies) ->
  N x C x H x W. ``{"size": [H, W], "align_corners": false}``; give ``size`` or a second bottom.

Gradients: ``ClassRebalanceMultLayer``, ``SoftmaxCrossEntropyLossLayer`` (to the scores),
``BilinearUpsampleLayer`` (the adjoint of the interpolation, to its first bottom) and ``AnnealedMeanLayer``
(T > 0) propagate gradients. The data-preparation layers (BGR2Lab, NNEnc, NonGrayMask, PriorBoost) have no
gradient: like the released Caffe layers, their ``backward`` leaves the bottom diffs untouched and
``backward_torch`` returns ``None`` for every bottom. No layer sends a gradient to a weight, target or
reference bottom (``None`` there too).
"""
from __future__ import annotations

import json
import math

import torch

import cic  # the installed toolkit (or its checkout on PYTHONPATH: PYTHONPATH=$TOOLKIT/layers:$TOOLKIT in a BVLC Caffe)
from cic import to_tensor

try:
    import caffe  # a real BVLC Caffe
except ImportError:
    try:
        import torchcaffe as caffe
    except ImportError:
        caffe = None


class _Base:  # neither Caffe nor torchcaffe importable: the layers still work standalone
    pass


_CaffeLayer = getattr(caffe, "Layer", None) or _Base


class _TorchLayer(_CaffeLayer):
    """Shared plumbing: JSON params, pycaffe's numpy path on top of the torch path."""

    PARAMS: dict = {}          # param_str key -> default
    BOTTOMS: tuple = (1,)      # allowed numbers of bottoms
    TOPS = 1

    # ---- parameters -------------------------------------------------------------------------------
    def _fail(self, key, msg):
        raise ValueError(f"{type(self).__name__}: param_str key '{key}': {msg}")

    def _parse_params(self) -> dict:
        text = getattr(self, "param_str", "") or ""
        try:
            given = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{type(self).__name__}: param_str is not valid JSON ({e}): {text!r}") from None
        if not isinstance(given, dict):
            raise ValueError(f"{type(self).__name__}: param_str must be a JSON object, got {text!r}")
        for key in given:
            if key not in self.PARAMS:
                allowed = ", ".join(sorted(self.PARAMS)) or "none"
                raise ValueError(f"{type(self).__name__}: unknown param_str key '{key}' (allowed: {allowed})")
        return {**self.PARAMS, **given}

    def _number(self, key, lo=None, hi=None, integer=False, lo_open=False):
        v = self.params[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self._fail(key, f"expected a number, got {v!r}")
        if integer and v != int(v):
            self._fail(key, f"expected an integer, got {v!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            self._fail(key, f"must be {'>' if lo_open else '>='} {lo}, got {v!r}")
        if hi is not None and v > hi:
            self._fail(key, f"must be <= {hi}, got {v!r}")
        return int(v) if integer else float(v)

    def _bins(self):
        """Sets ``self.centers`` (None for the released bins, which cic then uses by default and caches)
        and ``self.q`` (the number of bins)."""
        v = self.params["bins"]
        if not isinstance(v, str) or not v:
            self._fail("bins", f"expected a file path, got {v!r}")
        try:
            path = cic.resolve_data_path(v, must_exist=True, what="bin centres file")
        except FileNotFoundError as e:
            self._fail("bins", str(e))
        if path.resolve() == (cic.DATA_DIR / cic.PTS_IN_HULL).resolve():
            self.centers, self.q = None, cic.Q
        else:
            self.centers = torch.as_tensor(cic.load_bins(path), dtype=torch.float64)
            self.q = self.centers.shape[0]

    # ---- pycaffe interface ----------------------------------------------------------------------
    def setup(self, bottom, top):
        name = type(self).__name__
        if len(bottom) not in self.BOTTOMS:
            raise ValueError(f"{name}: expected {' or '.join(map(str, self.BOTTOMS))} bottom(s), got {len(bottom)}")
        if len(top) != self.TOPS:
            raise ValueError(f"{name}: expected {self.TOPS} top(s), got {len(top)}")
        self.params = self._parse_params()
        self._setup()

    def _setup(self):
        pass

    # BVLC hands a Python layer bottom/top vectors that can be indexed and measured but not iterated
    # (``for``, ``zip`` and ``list`` raise "No to_python (by-value) converter found for C++ type:
    # caffe::Blob<float>*"), so every access below goes through an index.

    def reshape(self, bottom, top):
        # blob.shape (pycaffe and torchcaffe), not blob.data.shape: on a GPU the latter copies the data to the host
        shapes = self.top_shapes([tuple(bottom[i].shape) for i in range(len(bottom))])
        for i in range(len(top)):
            top[i].reshape(*shapes[i])

    def top_shapes(self, shapes):
        raise NotImplementedError

    def forward(self, bottom, top):
        outs = self.forward_torch([to_tensor(bottom[i].data) for i in range(len(bottom))])
        for i in range(len(top)):
            top[i].data[...] = outs[i].detach().cpu().numpy()

    def backward(self, top, propagate_down, bottom):
        prop = [bool(propagate_down[i]) for i in range(len(bottom))]
        diffs = self.backward_torch([to_tensor(top[i].diff) for i in range(len(top))], prop,
                                    [to_tensor(bottom[i].data) for i in range(len(bottom))])
        for i in range(len(bottom)):
            if prop[i] and diffs[i] is not None:
                bottom[i].diff[...] = diffs[i].detach().cpu().numpy()

    def backward_torch(self, top_diff, propagate_down, bottom):
        return [None] * len(bottom)

    # ---- helpers ----------------------------------------------------------------------------------
    def _expect(self, shape, channels=None, what="bottom[0]"):
        if len(shape) != 4 or (channels is not None and shape[1] != channels):
            c = channels if channels is not None else "C"
            raise ValueError(f"{type(self).__name__}: {what} must be N x {c} x H x W, got {shape}")


class BGR2LabLayer(_TorchLayer):
    """N x 3 x H x W BGR in [0, 255] (Caffe's Data blob) -> N x 3 x H x W CIE Lab (D65)."""

    def top_shapes(self, shapes):
        self._expect(shapes[0], 3)
        return [shapes[0]]

    def forward_torch(self, bottom):
        return [cic.bgr255_to_lab(bottom[0])]


class NNEncLayer(_TorchLayer):
    """N x 2 x H x W ab -> N x Q x H x W soft-encoding on the k nearest bins (Gaussian weights, sigma).

    Defaults are the paper's (k 5, sigma 5); the released training layer used ``{"k": 10, "sigma": 5}``.
    """

    PARAMS = {"k": cic.DEFAULT_K, "sigma": cic.DEFAULT_SIGMA, "bins": cic.PTS_IN_HULL}

    def _setup(self):
        self._bins()
        self.k = self._number("k", lo=1, hi=self.q, integer=True)
        self.sigma = self._number("sigma", lo=0, lo_open=True)

    def top_shapes(self, shapes):
        self._expect(shapes[0], 2)
        n, _, h, w = shapes[0]
        return [(n, self.q, h, w)]

    def forward_torch(self, bottom):
        return [cic.soft_encode(bottom[0], self.k, self.sigma, centers=self.centers)]

    def forward(self, bottom, top):
        # numpy path: the same cic call, writing straight into the (reused) top blob
        cic.soft_encode(to_tensor(bottom[0].data), self.k, self.sigma, centers=self.centers,
                        out=to_tensor(top[0].data))


class NonGrayMaskLayer(_TorchLayer):
    """N x 2 x H x W ab -> N x 1 x H x W: 1 at every pixel of an image with some |a| or |b| above
    ``threshold``, 0 in a gray image (same shape as PriorBoost's output, for an Eltwise PROD)."""

    PARAMS = {"threshold": cic.GRAY_THRESHOLD}

    def _setup(self):
        self.threshold = self._number("threshold", lo=0)

    def top_shapes(self, shapes):
        self._expect(shapes[0], 2)
        n, _, h, w = shapes[0]
        return [(n, 1, h, w)]

    def forward_torch(self, bottom):
        return [cic.nongray_mask(bottom[0], self.threshold)]


class PriorBoostLayer(_TorchLayer):
    """N x Q x H x W encoding -> N x 1 x H x W class-rebalancing weight of each pixel's argmax bin.

    ``prior``: an already smoothed prior (as the released ``prior_probs.npy``); ``lambda``: mix with uniform.
    """

    PARAMS = {"prior": cic.PRIOR_PROBS, "lambda": cic.LAMBDA}

    def _setup(self):
        lam = self._number("lambda", lo=0, hi=1)
        v = self.params["prior"]
        if not isinstance(v, str) or not v:
            self._fail("prior", f"expected a file path, got {v!r}")
        try:
            path = cic.resolve_data_path(v, must_exist=True, what="prior file")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{type(self).__name__}: param_str key 'prior': {e}") from None
        self.weights = cic.rebalance_weights(torch.as_tensor(cic.load_prior(path)), lam)
        self._cache = {}

    def top_shapes(self, shapes):
        self._expect(shapes[0], self.weights.shape[0])
        n, _, h, w = shapes[0]
        return [(n, 1, h, w)]

    def forward_torch(self, bottom):
        x = bottom[0]
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = self.weights.to(device=x.device, dtype=x.dtype)
        return [cic.prior_boost(x, self._cache[key])]


class ClassRebalanceMultLayer(_TorchLayer):
    """(N x C x H x W scores, N x 1 x H x W weights) -> scores, unchanged (a copy).

    Backward: ``d scores = d top * weights`` (broadcast over channels); no gradient to the weights.
    """

    BOTTOMS = (2,)

    def top_shapes(self, shapes):
        self._expect(shapes[0])
        n, _, h, w = shapes[0]
        if shapes[1] != (n, 1, h, w):
            raise ValueError(f"{type(self).__name__}: bottom[1] must be {(n, 1, h, w)}, got {shapes[1]}")
        return [shapes[0]]

    def forward_torch(self, bottom):
        return [bottom[0].clone()]

    def backward_torch(self, top_diff, propagate_down, bottom):
        d = top_diff[0] * bottom[1].to(top_diff[0].dtype) if propagate_down[0] else None
        return [d, None]


class SoftmaxCrossEntropyLossLayer(_TorchLayer):
    """(N x C x ... scores, target distribution of the same shape) -> loss, shape (1,).

    loss = -sum over pixels and channels of target * log_softmax(scores, channel axis) / N; gradient to
    the scores (softmax - target) * loss_weight / N (loss_weight = top[0].diff[0]); none to the target.
    This is the normalization of the released ``SoftmaxCrossEntropyLoss`` (see paper_facts.md).
    """

    BOTTOMS = (2,)

    def top_shapes(self, shapes):
        if shapes[0] != shapes[1] or len(shapes[0]) < 2:
            raise ValueError(f"{type(self).__name__}: scores and target must have one shape (N, C, ...), "
                             f"got {shapes[0]} and {shapes[1]}")
        return [(1,)]

    def forward_torch(self, bottom):
        z, target = bottom
        loss = -(target.to(z.dtype) * torch.log_softmax(z, dim=1)).sum() / z.shape[0]
        return [loss.reshape(1)]

    def backward_torch(self, top_diff, propagate_down, bottom):
        if not propagate_down[0]:
            return [None, None]
        z, target = bottom
        scale = top_diff[0].reshape(-1)[0].to(z.dtype) / z.shape[0]
        return [(torch.softmax(z, dim=1) - target.to(z.dtype)) * scale, None]


class AnnealedMeanLayer(_TorchLayer):
    """N x Q x H x W scores (logits) -> N x 2 x H x W ab = sum_q softmax(z / T)_q c_q.

    T = 1: the mean, T = 0: the mode (no gradient). Backward (T > 0): the exact gradient of the map.
    """

    PARAMS = {"T": cic.DEFAULT_T, "bins": cic.PTS_IN_HULL}

    def _setup(self):
        self._bins()
        self.T = self._number("T", lo=0)

    def top_shapes(self, shapes):
        self._expect(shapes[0], self.q)
        n, _, h, w = shapes[0]
        return [(n, 2, h, w)]

    def forward_torch(self, bottom):
        return [cic.annealed_mean(bottom[0], self.T, centers=self.centers)]

    def backward_torch(self, top_diff, propagate_down, bottom):
        if not propagate_down[0] or self.T == 0:
            return [None]
        with torch.enable_grad():
            z = bottom[0].detach().requires_grad_(True)
            out = cic.annealed_mean(z, self.T, centers=self.centers)
            (g,) = torch.autograd.grad(out, z, top_diff[0].to(out.dtype))
        return [g]


class BilinearUpsampleLayer(_TorchLayer):
    """N x C x h x w -> N x C x H x W bilinear resize; H, W from ``size`` or from a second bottom.

    The arithmetic is exactly ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``
    (half-pixel centres, edge coordinates clamped; ``{"align_corners": true}`` for the corner-aligned
    variant). Backward: the adjoint of that linear map, to the first bottom only.
    """

    PARAMS = {"size": None, "align_corners": False}
    BOTTOMS = (1, 2)

    def setup(self, bottom, top):
        super().setup(bottom, top)
        has_size = self.params["size"] is not None
        if has_size == (len(bottom) == 2):
            raise ValueError(f"{type(self).__name__}: give either param_str key 'size' or a second bottom "
                             f"(got size={self.params['size']!r} and {len(bottom)} bottom(s))")

    def _setup(self):
        size = self.params["size"]
        if size is not None:
            ok = (isinstance(size, list) and len(size) == 2
                  and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size))
            if not ok:
                self._fail("size", f"expected [H, W] with positive integers, got {size!r}")
        if not isinstance(self.params["align_corners"], bool):
            self._fail("align_corners", f"expected true or false, got {self.params['align_corners']!r}")
        self.align_corners = self.params["align_corners"]

    def _size(self, shapes):
        return tuple(self.params["size"]) if self.params["size"] is not None else tuple(shapes[1][2:4])

    def top_shapes(self, shapes):
        self._expect(shapes[0])
        if len(shapes) == 2:
            self._expect(shapes[1], what="bottom[1]")
        return [tuple(shapes[0][:2]) + self._size(shapes)]

    def forward_torch(self, bottom):
        size = self._size([tuple(bottom[i].shape) for i in range(len(bottom))])
        return [cic.upsample_bilinear(bottom[0], size, self.align_corners)]

    def backward_torch(self, top_diff, propagate_down, bottom):
        diffs = [None] * len(bottom)
        if propagate_down[0]:
            size = self._size([tuple(bottom[i].shape) for i in range(len(bottom))])
            with torch.enable_grad():
                x = torch.zeros_like(bottom[0], requires_grad=True)
                out = cic.upsample_bilinear(x, size, self.align_corners)
                (diffs[0],) = torch.autograd.grad(out, x, top_diff[0].to(out.dtype))
        return diffs
