"""A TEST-phase :class:`~torchcaffe.net.Net` as a ``torch.nn.Module``: the plain graph, or a fast inference path.

``caffe.Net`` itself stays exact (Caffe's arithmetic in float32, layer by layer, through Blobs).  This module
turns a built net (its weights as they are now) into one ``torch.nn.Module`` of the same graph, with the
same inputs and outputs::

    ref = to_module(net)                 # plain torch.nn: Conv2d, ConvTranspose2d, ReLU, BatchNorm2d ... in fp32
    fast = to_module(net, optimize=True) # the fast inference path (see below)
    outs = fast(data_l=x)                # {output blob name: tensor}; to_module(net, outputs=[...]) picks others

With ``optimize=True`` (each option can also be set on its own):

* ``fold_batchnorm``: a BatchNorm with global statistics (and a following Scale, if any) whose output feeds
  only Convolution / Deconvolution layers is folded into their weights.  The normalized blob's zero padding
  is not zero in the raw blob, so the folded layers add a bias *map* (the layer applied to the constant mean
  image, computed once per input size), which keeps the fold exact at the borders too;
* ``channels_last``: NHWC activations and weights, which oneDNN (CPU) and cuDNN run fastest;
* ``dtype``: ``"auto"`` picks bfloat16 where the hardware computes it natively (CPUs with AMX or AVX512-BF16,
  CUDA GPUs with bf16 support) and float32 elsewhere; the net's outputs are float32 again;
* ``stem`` (on the CPU): in a batch, the leading full-resolution layers run one image at a time, so that
  their activations stay in cache (the batch's rest runs batched, where it gains); the same arithmetic;
* ``compile``: ``torch.compile`` the graph (off by default on the CPU, where it rarely pays for its start-up
  time at batch 1; measure with ``tools/benchmark.py``);
* on CUDA, TF32 matmuls/convolutions are allowed.

Built-in layers without a torch.nn counterpart (Pooling with Caffe's rounding, Softmax, Concat, ...) run their
own exact ``compute``; Python layers run through their Blob interface in float32 (the exact path).  Only
TEST-phase nets (no backward, no data layers) can be converted.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blob import Blob

__all__ = ["to_module", "NetModule", "native_bf16", "choose_dtype"]

_FOLD_INTO = ("Convolution", "Deconvolution")
_SKIP = ("Silence",)


# ---------------------------------------------------------------------------------------------------------
# hardware
# ---------------------------------------------------------------------------------------------------------

def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device="cpu") -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (AMX or AVX512-BF16 on x86; bf16-capable
    CUDA GPUs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = getattr(torch._C, "_cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16"})


def choose_dtype(dtype, device) -> torch.dtype:
    if dtype in (None, "auto"):
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if isinstance(dtype, str):
        try:
            return {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                    "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[dtype]
        except KeyError:
            raise ValueError(f"dtype must be auto, fp32, bf16 or fp16, got '{dtype}'") from None
    return dtype


# ---------------------------------------------------------------------------------------------------------
# graph steps
# ---------------------------------------------------------------------------------------------------------

class _Scale(nn.Module):
    """Per-channel affine y = x * w (+ b), axis 1 (a folded-away BatchNorm's or Scale's arithmetic when it cannot be folded)."""

    def __init__(self, w: torch.Tensor, b: Optional[torch.Tensor]):
        super().__init__()
        self.register_buffer("w", w.reshape(1, -1, 1, 1).clone())
        self.register_buffer("b", None if b is None else b.reshape(1, -1, 1, 1).clone())

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = x * self.w.reshape(shape)
        return y if self.b is None else y + self.b.reshape(shape)


class _LayerCompute(nn.Module):
    """A built-in layer without a torch.nn counterpart: its own exact ``compute``, parameters as buffers."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        for i, b in enumerate(layer.blobs):
            self.register_buffer(f"p{i}", b.data_t.detach().clone())

    def forward(self, *xs):
        # differentiable in its inputs when they need gradients (a plain module's autograd); else no graph
        grad = torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in xs)
        with torch.set_grad_enabled(grad):
            params = [getattr(self, f"p{i}") for i in range(len(self.layer.blobs))]
            if params and xs and xs[0].is_floating_point():
                params = [p.to(xs[0].dtype) for p in params]
            return tuple(self.layer.compute(list(xs), params))


class _BlobLayer(nn.Module):
    """A layer that runs through Blobs (Python layers): float32, contiguous, the exact path."""

    exact_float32 = True

    def __init__(self, layer, n_bottom: int, n_top: int):
        super().__init__()
        self.layer = layer
        self.bottom = [Blob(device=layer.device) for _ in range(n_bottom)]
        self.top = [Blob(device=layer.device) for _ in range(n_top)]

    @torch.compiler.disable
    def forward(self, *xs):
        for b, x in zip(self.bottom, xs):
            b.data_t = x.float().contiguous()
        self.layer.reshape(self.bottom, self.top)
        self.layer.forward(self.bottom, self.top)
        return tuple(t.data_t for t in self.top)


class _FoldedConv(nn.Module):
    """A Convolution / Deconvolution with a preceding per-channel affine x -> x * s + t folded in:
    ``f(W, x * s + t) + b = f(W * s, x) + (b + f(W, t))``; the second term, a bias map, depends on the input
    size only (the layer's zero padding is applied to x * s + t, not to x), so it is computed once per size."""

    def __init__(self, conv: nn.Module, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.conv = conv
        w = conv.weight.detach().double()
        b = conv.bias.detach().double() if conv.bias is not None else None
        self._orig = (w.clone(), b, shift.double())
        g = conv.groups
        if isinstance(conv, nn.ConvTranspose2d):  # weight (C_in, C_out / g, k, k)
            w = w * scale.double().reshape(-1, *([1] * (w.dim() - 1)))
        else:  # weight (C_out, C_in / g, k, k): input channel of (o, j) is (o // (C_out / g)) * (C_in / g) + j
            co, cig = w.shape[:2]
            s = scale.double().reshape(g, 1, cig, *([1] * (w.dim() - 2)))
            w = (w.reshape(g, co // g, cig, *w.shape[2:]) * s).reshape(w.shape)
        conv.weight = nn.Parameter(w.float(), requires_grad=False)
        conv.bias = None
        self._maps: Dict[tuple, torch.Tensor] = {}

    def bias_map(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape[2:]), x.dtype, x.device, x.is_contiguous(memory_format=torch.channels_last))
        m = self._maps.get(key)
        if m is None:
            w, b, t = self._orig
            const = t.reshape(1, -1, *([1] * (x.dim() - 2))).expand(1, -1, *x.shape[2:]).to(x.device)
            c = self.conv
            if isinstance(c, nn.ConvTranspose2d):
                m = F.conv_transpose2d(const, w.to(x.device), b.to(x.device) if b is not None else None,
                                       c.stride, c.padding, c.output_padding, c.groups, c.dilation)
            else:
                m = F.conv2d(const, w.to(x.device), b.to(x.device) if b is not None else None,
                             c.stride, c.padding, c.dilation, c.groups)
            flat = m.reshape(m.shape[1], -1)
            if bool((flat == flat[:, :1]).all()):  # no border effect: an ordinary bias vector
                m = flat[:, 0].reshape(1, -1, *([1] * (x.dim() - 2)))
            m = m.to(x.dtype)
            if m.shape[2:] == x.shape[2:] and x.dim() == 4 and key[3]:
                m = m.contiguous(memory_format=torch.channels_last)
            self._maps[key] = m
        return m

    def forward(self, x):
        return self.conv(x) + self.bias_map(x)


def _conv_module(layer) -> nn.Module:
    n = layer.num_spatial
    if n != 2:
        return _LayerCompute(layer)
    w = layer.blobs[0].data_t.detach().clone()
    kw = dict(kernel_size=tuple(layer.kernel), stride=tuple(layer.stride), padding=tuple(layer.pad),
              dilation=tuple(layer.dilation), groups=layer.group, bias=layer.bias_term)
    if layer.reverse:
        m = nn.ConvTranspose2d(layer.channels, layer.num_output, **kw)
    else:
        m = nn.Conv2d(layer.channels, layer.num_output, **kw)
    m.weight = nn.Parameter(w, requires_grad=False)
    if layer.bias_term:
        m.bias = nn.Parameter(layer.blobs[1].data_t.detach().clone(), requires_grad=False)
    return m


def _batchnorm_affine(layer):
    """(scale, shift) of a global-statistics BatchNorm: y = x * scale + shift (float64)."""
    b0, b1, b2 = (b.data_t.detach().double() for b in layer.blobs)
    sf = 0.0 if float(b2.reshape(())) == 0 else 1.0 / float(b2.reshape(()))
    mean, var = b0 * sf, b1 * sf
    inv = 1.0 / torch.sqrt(var.float() + layer.eps).double()  # Caffe adds eps in float32
    return inv, -mean * inv


def _module_for(layer, n_bottom: int, n_top: int) -> nn.Module:
    kind = layer.layer_param.type
    if kind in ("Convolution", "Deconvolution") and n_bottom == 1:
        return _conv_module(layer)
    if kind == "ReLU":
        return nn.ReLU() if layer.negative_slope == 0 else nn.LeakyReLU(layer.negative_slope)
    if kind == "BatchNorm" and layer.use_global_stats and len(layer.blobs[0].shape) == 1:
        bn = nn.BatchNorm2d(layer.channels, eps=layer.eps, affine=False)
        b0, b1, b2 = (b.data_t.detach() for b in layer.blobs)
        sf = 0.0 if float(b2.reshape(())) == 0 else 1.0 / float(b2.reshape(()))
        bn.running_mean.copy_(b0 * sf)
        bn.running_var.copy_(b1 * sf)
        return bn.eval()
    if kind == "Python":
        return _BlobLayer(layer, n_bottom, n_top)
    if hasattr(layer, "compute"):
        return _LayerCompute(layer)
    return _BlobLayer(layer, n_bottom, n_top)


# ---------------------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------------------

class NetModule(nn.Module):
    """A net's graph as one module: ``forward(*inputs, **named_inputs) -> {output name: tensor}``."""

    def __init__(self, steps, inputs: List[str], outputs: List[str], dtype=torch.float32,
                 channels_last: bool = False, name: str = "net"):
        super().__init__()
        self.name = name
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.dtype = dtype
        self.channels_last = channels_last
        self.mods = nn.ModuleList([s[0] for s in steps])
        self.wiring = [(s[1], s[2]) for s in steps]  # (bottom value ids, top value ids)
        self.layer_names = [s[3] for s in steps]
        self._in_ids: Dict[str, int] = {}
        self._out_ids: Dict[str, int] = {}
        self._last_use: List[List[int]] = []
        self.stem = 0                  # leading steps run one image at a time (set by to_module; 0: none)
        self._stem_out: List[int] = []

    def _finish(self, in_ids: Dict[str, int], out_ids: Dict[str, int]) -> None:
        self._in_ids, self._out_ids = dict(in_ids), dict(out_ids)
        keep = set(out_ids.values())
        last: Dict[int, int] = {}
        for i, (bottoms, _) in enumerate(self.wiring):
            for v in bottoms:
                last[v] = i
        self._last_use = [[v for v in set(b) if last[v] == i and v not in keep] for i, (b, _) in enumerate(self.wiring)]
        self.set_stem(self.stem)

    def set_stem(self, steps: int) -> None:
        """Run the first ``steps`` layers one image at a time, and the rest on the whole batch.

        On a CPU the full-resolution layers of a batch do not fit in cache (8 x 64 x 224 x 224 in bf16 is 51 MB),
        so batching them makes every image slower than alone; the smaller layers after them gain from the
        batch. Only per-image layers belong in a stem (to_module picks it so)."""
        self.stem = int(steps)
        made = {v for _, tops in self.wiring[:self.stem] for v in tops}
        used = {v for bottoms, _ in self.wiring[self.stem:] for v in bottoms} | set(self._out_ids.values())
        self._stem_out = sorted(made & used)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, *args, **kwargs) -> Dict[str, torch.Tensor]:
        if len(args) > len(self.inputs):
            raise TypeError(f"{self.name}: {len(self.inputs)} inputs ({', '.join(self.inputs)}), got {len(args)}")
        given = dict(zip(self.inputs, args))
        given.update(kwargs)
        missing = [n for n in self.inputs if n not in given]
        unknown = [n for n in given if n not in self._in_ids]
        if missing or unknown:
            raise TypeError(f"{self.name}: inputs are {', '.join(self.inputs)}; missing {missing}, unknown {unknown}")
        env: Dict[int, torch.Tensor] = {}
        raw: Dict[int, torch.Tensor] = {}
        for n, x in given.items():
            x = torch.as_tensor(x)
            raw[self._in_ids[n]] = x.float()
            env[self._in_ids[n]] = self._prepare(x)
        start = 0
        sizes = {t.shape[0] if t.dim() else 0 for t in env.values()}
        batch = sizes.pop() if len(sizes) == 1 else 0
        if self.stem and batch > 1:
            parts: Dict[int, List[torch.Tensor]] = {v: [] for v in self._stem_out}
            for i in range(batch):
                one = {v: t[i:i + 1] for v, t in env.items()}
                self._run(one, {v: t[i:i + 1] for v, t in raw.items()}, 0, self.stem)
                for v in self._stem_out:
                    parts[v].append(one[v])
            for v, ts in parts.items():
                cl = ts[0].dim() == 4 and ts[0].is_contiguous(memory_format=torch.channels_last)
                env[v] = torch.cat(ts).contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
            start = self.stem
        self._run(env, raw, start, len(self.mods))
        return {n: _as_output(env[v]) for n, v in self._out_ids.items()}

    def _run(self, env: Dict[int, torch.Tensor], raw: Dict[int, torch.Tensor], lo: int, hi: int) -> None:
        """Steps lo..hi-1 on the values in ``env`` (float32 originals of the inputs in ``raw``)."""
        for i in range(lo, hi):
            mod, (bottoms, tops) = self.mods[i], self.wiring[i]
            if getattr(mod, "exact_float32", False):
                xs = [raw[v] if v in raw else env[v] for v in bottoms]
            else:  # a layer's own compute may have answered in float32 (e.g. Softmax)
                xs = [self._prepare(env[v]) if env[v].dtype != self.dtype else env[v] for v in bottoms]
            ys = mod(*xs)
            if not isinstance(ys, tuple):
                ys = (ys,)
            for v, y in zip(tops, ys):
                env[v] = y
            for v in self._last_use[i]:
                env.pop(v, None)


def _as_output(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() and t.dtype != torch.float32:
        t = t.float()
    return t.contiguous()


def to_module(net, outputs: Optional[Sequence[str]] = None, *, optimize: bool = False,
              fold_batchnorm: Optional[bool] = None, channels_last: Optional[bool] = None, dtype=None,
              compile: bool = False, device=None, stem: Optional[int] = None) -> NetModule:
    """``net`` (a TEST-phase torchcaffe Net, weights loaded) as a module; see the module docstring.

    ``outputs``: blob names to return (default: the net's outputs).  With ``optimize`` the defaults of
    ``fold_batchnorm`` and ``channels_last`` are True and of ``dtype`` "auto"; otherwise False and float32.
    ``stem``: how many leading layers run one image at a time in a batch (:meth:`NetModule.set_stem`); by
    default, with ``optimize`` on a CPU, the leading per-image layers whose output is over
    ``STEM_BYTES`` per image at the net's current input size; otherwise 0.
    """
    from .proto import caffe_pb2

    if net.phase != caffe_pb2.TEST:
        raise ValueError(f"to_module: net '{net.name}' is a TRAIN-phase net; only TEST-phase nets convert")
    device = torch.device(device) if device is not None else net.device
    fold = optimize if fold_batchnorm is None else fold_batchnorm
    cl = optimize if channels_last is None else channels_last
    dt = choose_dtype(dtype if dtype is not None else ("auto" if optimize else torch.float32), device)
    outputs = list(net.outputs if outputs is None else outputs)
    for n in outputs:
        if n not in net.blobs:
            raise ValueError(f"to_module: net '{net.name}' has no blob '{n}'")

    # SSA: every top gets a new value id (in-place layers rebind the name); Split tops alias their bottom
    names = net._blob_names
    current: Dict[str, int] = {}
    in_ids: Dict[str, int] = {}
    steps = []  # [layer, bottom ids, top ids, name]
    counter = 0
    for lid, layer in enumerate(net.layers):
        lp = layer.layer_param
        bnames = [names[i] for i in net.bottom_ids[lid]]
        tnames = [names[i] for i in net.top_ids[lid]]
        if lp.type == "Input":
            for t in tnames:
                current[t] = in_ids[t] = counter
                counter += 1
            continue
        if lp.type in ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData") \
                or getattr(layer, "is_loss", False):
            raise ValueError(f"to_module: layer '{lp.name}' (type {lp.type}) has no place in a deploy net")
        bids = [current[b] for b in bnames]
        if lp.type == "Split":
            for t in tnames:
                current[t] = bids[0]
            continue
        if lp.type in _SKIP:
            continue
        tids = []
        for t in tnames:
            current[t] = counter
            tids.append(counter)
            counter += 1
        steps.append([layer, bids, tids, lp.name])
    out_ids = {n: current[n] for n in outputs}

    consumers: Dict[int, List[int]] = {}
    for si, (_, bids, _, _) in enumerate(steps):
        for v in bids:
            consumers.setdefault(v, []).append(si)

    mods: List[nn.Module] = [_module_for(s[0], len(s[1]), len(s[2])) for s in steps]
    if fold:
        _fold_affines(steps, mods, consumers, set(out_ids.values()))
    keep = [i for i, m in enumerate(mods) if m is not None]
    built = [(mods[i], steps[i][1], steps[i][2], steps[i][3]) for i in keep]
    module = NetModule(built, list(in_ids), outputs, dtype=dt, channels_last=cl, name=f"to_module({net.name})")
    if stem is None:
        stem = _auto_stem(net, [steps[i][0] for i in keep], dt) if optimize and device.type == "cpu" else 0
    module.stem = stem
    module._finish(in_ids, out_ids)
    module.eval()
    for m in module.mods:
        for p in m.parameters(recurse=False):
            p.requires_grad_(False)
    module.to(device)
    _cast(module, dt, cl)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if compile:
        module.forward = torch.compile(module.forward, dynamic=False,
                                       mode="reduce-overhead" if device.type == "cuda" else None)
    return module


#: Layer types that compute each image on its own (may run in a per-image stem).
_PER_IMAGE = ("Convolution", "Deconvolution", "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power",
              "BatchNorm", "Scale", "Bias", "Pooling", "LRN")
#: A leading layer whose output is at least this large per image runs in the stem (a few of them fill a
#: core's L2 cache; batched, they go out to memory and back).
STEM_BYTES = 1 << 20


def _auto_stem(net, layers, dtype: torch.dtype) -> int:
    size = torch.empty((), dtype=dtype).element_size()
    n = 0
    for layer in layers:
        tops = [net.blobs[t] for t in layer.layer_param.top]
        if layer.type not in _PER_IMAGE or not tops or any(
                b.num < 1 or b.count // b.num * size < STEM_BYTES for b in tops):
            break
        n += 1
    return n


def _cast(module: NetModule, dtype: torch.dtype, channels_last: bool) -> None:
    for m in module.mods:
        if isinstance(m, (_BlobLayer,)):
            continue
        if dtype != torch.float32:
            m.to(dtype)
        if channels_last:
            for c in m.modules():
                if isinstance(c, (nn.Conv2d, nn.ConvTranspose2d)):
                    c.weight.data = c.weight.data.contiguous(memory_format=torch.channels_last)


def _fold_affines(steps, mods, consumers, outs: set) -> None:
    """Fold each global-statistics BatchNorm (and a Scale directly after it) into the Convolution /
    Deconvolution layers that consume its output, when they are its only consumers."""
    for si, (layer, bids, tids, _) in enumerate(steps):
        if not isinstance(mods[si], nn.BatchNorm2d):
            continue
        scale, shift = _batchnorm_affine(layer)
        out = tids[0]
        fold_steps = [si]
        nxt = consumers.get(out, [])
        if len(nxt) == 1 and steps[nxt[0]][0].layer_param.type == "Scale" and out not in outs:
            s_layer = steps[nxt[0]][0]
            if len(steps[nxt[0]][1]) == 1 and s_layer.blobs and len(s_layer.blobs[0].shape) == 1 \
                    and getattr(s_layer, "axis", 1) == 1:
                a = s_layer.blobs[0].data_t.detach().double()
                c = s_layer.blobs[1].data_t.detach().double() if len(s_layer.blobs) > 1 else 0.0
                scale, shift = scale * a, shift * a + c
                fold_steps.append(nxt[0])
                out = steps[nxt[0]][2][0]
                nxt = consumers.get(out, [])
        if not nxt or out in outs or any(not isinstance(mods[j], (nn.Conv2d, nn.ConvTranspose2d)) for j in nxt):
            continue
        for j in nxt:
            mods[j] = _FoldedConv(mods[j], scale, shift)
            steps[j][1] = [bids[0]]
        for j in fold_steps:
            mods[j] = None


# ---------------------------------------------------------------------------------------------------------
# mixed-precision training (opt-in)
# ---------------------------------------------------------------------------------------------------------

PRECISION_ENV = "TORCHCAFFE_PRECISION"
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def training_precision(precision: Optional[str] = None) -> str:
    """The training precision: ``precision``, else the environment variable TORCHCAFFE_PRECISION (which
    ``caffe train -precision`` sets), else "fp32" (Caffe-exact)."""
    p = (precision or os.environ.get(PRECISION_ENV, "") or "fp32").lower()
    if p not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"{PRECISION_ENV} / -precision must be fp32, bf16 or fp16, got '{p}'")
    return p


def mixed_precision(device, precision: Optional[str] = None):
    """The context a training step runs in: nothing for fp32; ``torch.autocast`` to bf16 / fp16 otherwise
    (convolutions and matrix products in the low precision, weights, blobs, losses and updates in float32)."""
    import contextlib

    p = training_precision(precision)
    if p == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_AUTOCAST[p])
