"""The layer base classes and the registry of layer types.

Every built-in layer subclasses :class:`Layer` and registers itself with :func:`register` under its Caffe
type name.  A layer follows Caffe's life cycle:

* ``setup(bottom, top)``   -- once: checks blob counts, ``layer_setup`` (create ``self.blobs``), ``reshape``;
* ``reshape(bottom, top)`` -- before each forward: give each top its shape from the bottoms' shapes;
* ``forward(bottom, top)`` -- write ``top[i].data_t``;
* ``backward(top, propagate_down, bottom)`` -- write ``bottom[i].diff_t`` where ``propagate_down[i]``
  (overwriting, as Caffe does) and *add* into ``self.blobs[j].diff_t`` where ``self.param_propagate_down[j]``.

``bottom`` and ``top`` are lists of :class:`~torchcaffe.blob.Blob`.  Most layers derive from
:class:`TorchLayer` instead: they write one differentiable torch function ``compute`` and get ``forward`` and
an exact ``backward`` (by autograd on the recorded graph of that one layer) for free.
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .blob import Blob, _Synced
from .proto import caffe_pb2

__all__ = ["Layer", "TorchLayer", "register", "layer_types", "create_layer", "LayerError"]

_REGISTRY: Dict[str, type] = {}


class LayerError(ValueError):
    """A layer's parameters or blobs are unusable; the message names the layer."""


@functools.lru_cache(maxsize=None)
def _error_class(base: type, like: type) -> type:
    if issubclass(base, like):
        return base
    try:
        return type(base.__name__, (base, like), {"__module__": base.__module__, "user_type": like,
                                                  "__str__": BaseException.__str__})
    except TypeError:  # an exception type that cannot be combined (another instance layout)
        return base


def typed_error(base: type, message: str, like: Optional[type] = None) -> Exception:
    """A ``base`` error (LayerError, NetError) with ``message`` that is also a ``like`` where possible: the type
    of the exception a user's Python layer raised, which BVLC's pycaffe hands to the caller unchanged (so
    ``except RuntimeError`` around ``caffe.Net(...)`` still catches it)."""
    if like is not None and issubclass(like, Exception):
        try:
            return _error_class(base, like)(message)
        except TypeError:  # its constructor wants more than a message
            pass
    return base(message)


def register(*type_names: str) -> Callable[[type], type]:
    """Class decorator: make a Layer subclass available under Caffe type name(s)."""

    def deco(cls: type) -> type:
        for name in type_names:
            _REGISTRY[name] = cls
        if getattr(cls, "type", None) is None:
            cls.type = type_names[0]
        return cls

    return deco


def layer_types() -> List[str]:
    """The sorted list of supported layer type names."""
    from . import builtin  # noqa: F401  (importing registers the built-in layers)

    return sorted(_REGISTRY)


def create_layer(param: "caffe_pb2.LayerParameter", phase: int, device: torch.device) -> "Layer":
    """Instantiate the layer that ``param.type`` names (Caffe's LayerRegistry::CreateLayer)."""
    from . import builtin  # noqa: F401

    cls = _REGISTRY.get(param.type)
    if cls is None:
        raise LayerError(
            f"layer '{param.name}' has unknown type '{param.type}'; supported types: "
            + ", ".join(sorted(_REGISTRY)))
    return cls(param, phase, device)


def _input_copy(b: Blob) -> Blob:
    """A blob with a copy of ``b``'s data and ``b``'s own diff (what an in-place layer reads as input)."""
    c = Blob.__new__(Blob)
    c.device, c.dtype = b.device, b.dtype
    c._data = _Synced(b.data_t.clone())
    c._diff = b._diff
    return c


class Layer:
    """Base class of built-in layers (the C++ ``caffe::Layer`` contract)."""

    type: Optional[str] = None
    #: exact / minimum / maximum numbers of bottoms and tops (None = unchecked), as Caffe's ExactNumBottomBlobs...
    exact_bottoms: Optional[int] = None
    min_bottoms: Optional[int] = None
    max_bottoms: Optional[int] = None
    exact_tops: Optional[int] = None
    min_tops: Optional[int] = None
    max_tops: Optional[int] = None
    #: Caffe's EqualNumBottomTopBlobs
    equal_bottom_top: bool = False
    #: Caffe's AutoTopBlobs: create the minimum number of anonymous tops when none are given
    auto_top_blobs: bool = False
    #: loss layers weigh their first top by 1 unless the prototxt says otherwise
    is_loss: bool = False
    #: used in place (a top is its bottom) on a blob whose memory a user holds (so the tops are written into
    #: it), the layer's ``forward`` gets a copy of that bottom's data: what it keeps for its backward is the
    #: input it saw
    copies_in_place_input: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fwd = cls.__dict__.get("forward")
        if fwd is None or getattr(fwd, "_guards_in_place", False):
            return

        @functools.wraps(fwd)
        def forward(self, bottom, top):
            if self.copies_in_place_input and getattr(self, "need_backward", True):
                # only a top whose memory a user holds is written into; others get new memory
                if any(t is b and t._data.exposed for t in top for b in bottom):
                    bottom = [_input_copy(b) if any(t is b for t in top) else b for b in bottom]
            return fwd(self, bottom, top)

        forward._guards_in_place = True
        cls.forward = forward

    def __init__(self, param: "caffe_pb2.LayerParameter", phase: int, device):
        self.layer_param = param
        self.phase = phase
        self.device = torch.device(device)
        self.blobs: List[Blob] = []
        self.param_propagate_down: List[bool] = []

    # -- identity -----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.layer_param.name

    def error(self, message: str) -> LayerError:
        """A LayerError whose message names this layer and its type."""
        return LayerError(f"layer '{self.name}' (type {self.layer_param.type}): {message}")

    # -- life cycle ---------------------------------------------------------------------------------------
    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self.check_blob_counts(bottom, top)
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)
        if len(self.param_propagate_down) != len(self.blobs):
            self.param_propagate_down = [True] * len(self.blobs)

    def layer_setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Read parameters and create ``self.blobs`` (unless they were given)."""

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        raise NotImplementedError

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        raise NotImplementedError

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        """Default: no gradient (data layers, Silence-like sinks override as needed)."""

    def state(self):
        """Position of this layer's input stream (data cursor, RNG), for exact resumption; None if stateless."""
        return None

    def set_state(self, state) -> None:
        """Restore what :meth:`state` returned."""

    def allow_force_backward(self, bottom_index: int) -> bool:
        return True

    def set_need_backward(self, need: bool, bottom_need: Sequence[bool] = ()) -> None:
        """Told by the net whether this layer's backward will run, and for which bottoms."""
        self.need_backward = need
        self.bottom_need_backward = list(bottom_need)

    def loss_weight(self, top_index: int) -> float:
        """Caffe's default loss weight of a top (1 for the first top of a loss layer, else 0)."""
        return 1.0 if (self.is_loss and top_index == 0) else 0.0

    def check_blob_counts(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        nb, nt = len(bottom), len(top)
        checks = [
            (self.exact_bottoms is not None and nb != self.exact_bottoms, f"takes {self.exact_bottoms} bottom blob(s), got {nb}"),
            (self.min_bottoms is not None and nb < self.min_bottoms, f"takes at least {self.min_bottoms} bottom blob(s), got {nb}"),
            (self.max_bottoms is not None and nb > self.max_bottoms, f"takes at most {self.max_bottoms} bottom blob(s), got {nb}"),
            (self.exact_tops is not None and nt != self.exact_tops, f"produces {self.exact_tops} top blob(s), got {nt}"),
            (self.min_tops is not None and nt < self.min_tops, f"produces at least {self.min_tops} top blob(s), got {nt}"),
            (self.max_tops is not None and nt > self.max_tops, f"produces at most {self.max_tops} top blob(s), got {nt}"),
            (self.equal_bottom_top and nb != nt, f"needs as many tops as bottoms, got {nb} bottoms and {nt} tops"),
        ]
        for bad, msg in checks:
            if bad:
                raise self.error(msg)

    # -- serialisation ------------------------------------------------------------------------------------
    def to_proto(self, write_diff: bool = False) -> "caffe_pb2.LayerParameter":
        """The layer's parameter with its blobs, as Caffe's Layer::ToProto writes it into a caffemodel."""
        from .protoio import blob_to_proto

        p = caffe_pb2.LayerParameter()
        p.CopyFrom(self.layer_param)
        del p.blobs[:]
        for b in self.blobs:
            p.blobs.add().CopyFrom(blob_to_proto(b, write_diff=write_diff))
        return p


class TorchLayer(Layer):
    """A layer defined by one differentiable function of its bottoms and parameters.

    Subclasses implement ``compute(bottoms, params) -> list of top tensors`` (pure torch, any device) and
    ``reshape``.  ``forward`` runs ``compute`` and writes the results into the tops; when the net will run
    this layer's backward, it records the autograd graph of this one layer, and ``backward`` differentiates
    it: bottom diffs are overwritten and parameter diffs accumulated, exactly as Caffe's hand-written backward
    passes do.

    A top gets the output tensor as its memory (no copy) unless a user holds a view of that memory; then the
    output is copied into it, and an in-place layer (a top that is its bottom) would overwrite its input:
    what its graph saves of that input is kept aside first, so that its backward uses the input its forward
    saw.

    A backward with no recorded graph (no forward since the last backward, or none at all) or whose graph
    saw data that has since been changed in place (a later in-place layer on a shared blob, a solver update)
    differentiates ``compute`` again at the blobs' current data, as Caffe's backward reads the blobs as they
    are.
    """

    need_backward = True
    _graph = None
    copies_in_place_input = False  # only what the graph saves of the input is kept aside (see _record)

    def compute(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        raise NotImplementedError

    def _record(self, bottom: Sequence[Blob], top: Sequence[Blob]):
        """Run ``compute`` with autograd on this one layer; returns (inputs, params, outputs)."""
        xs = [b.data_t for b in bottom]
        ps = [p.data_t for p in self.blobs]
        need_b = getattr(self, "bottom_need_backward", None) or [True] * len(xs)
        xs = [x.detach().requires_grad_(bool(n) and x.is_floating_point()) for x, n in zip(xs, need_b)]
        ps = [p.detach().requires_grad_(bool(need)) for p, need in zip(ps, self.param_propagate_down)]
        # an in-place top whose memory a user holds is written into: what the graph saves of it is copied
        overwritten = {t.data_t.untyped_storage().data_ptr() for t in top
                       if t._data.exposed and any(t is b for b in bottom)}
        if overwritten:
            def pack(t):
                if t.untyped_storage().data_ptr() in overwritten:
                    return t.detach().clone()
                return t

            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                outs = self.compute(xs, ps)
        else:
            with torch.enable_grad():
                outs = self.compute(xs, ps)
        return xs, ps, outs

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        if self.need_backward:
            self._graph = self._record(bottom, top)
            outs = self._graph[2]
        else:
            with torch.no_grad():
                outs = self.compute([b.data_t for b in bottom], [p.data_t for p in self.blobs])
            self._graph = None
        for t, o in zip(top, outs):
            t.data_t = o

    def _recompute(self, bottom: Sequence[Blob], top: Sequence[Blob]):
        """The graph of ``compute`` at the blobs' current data, leaving no trace: parameters that compute
        updates (BatchNorm's statistics) and torch's random generators are as they were before."""
        saved = [(p.data_t, p.data_t._version, p.data_t.clone()) for p in self.blobs]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            graph = self._record(bottom, [])
        with torch.no_grad():
            for t, version, value in saved:
                if t._version != version:  # compute updated it (statistics, not read by the graph)
                    t.copy_(value)
        return graph

    def _gradients(self, graph, top, propagate_down):
        xs, ps, outs = graph
        pairs = [(o, t.diff_t) for o, t in zip(outs, top) if o.requires_grad]
        wrt = [(("b", i), x) for i, x in enumerate(xs) if propagate_down[i] and x.requires_grad]
        wrt += [(("p", j), p) for j, p in enumerate(ps) if p.requires_grad]
        grads = [None] * len(wrt)
        if pairs and wrt:
            grads = torch.autograd.grad([o for o, _ in pairs], [w for _, w in wrt],
                                        grad_outputs=[g for _, g in pairs], allow_unused=True)
        return {key: g for (key, _), g in zip(wrt, grads)}

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        graph, self._graph = self._graph, None
        got = None
        if graph is not None:
            try:
                got = self._gradients(graph, top, propagate_down)
            except RuntimeError as e:
                if "modified by an inplace operation" not in str(e):
                    raise
        if got is None:
            got = self._gradients(self._recompute(bottom, top), top, propagate_down)
        for i, b in enumerate(bottom):
            if propagate_down[i]:
                g = got.get(("b", i))
                if g is None:
                    b.zero_diff()
                else:
                    b.diff_t = g
        for j, p in enumerate(self.blobs):
            g = got.get(("p", j))
            if g is not None:
                with torch.no_grad():
                    p.diff_t.add_(g)
