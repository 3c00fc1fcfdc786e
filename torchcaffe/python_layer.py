"""Python layers: pycaffe's ``caffe.Layer`` base class and the ``Python`` layer type that runs them.

A prototxt names a Python layer as BVLC Caffe does::

    layer { type: "Python" bottom: "x" top: "y"
            python_param { module: "my_module" layer: "MyLayer" param_str: "{...}" } }

The module is imported from ``sys.path``, the folders in ``$TORCHCAFFE_LAYERS_PATH`` (``os.pathsep``
separated) and the toolkit's own ``layers/`` folder.  The object gets ``param_str`` and ``phase`` before
``setup(bottom, top)``; then ``reshape``, ``forward`` and ``backward`` receive blobs whose ``data`` and
``diff`` are writable numpy arrays -- a layer written for BVLC's pycaffe runs unchanged.

If the object also has ``forward_torch(bottom_tensors) -> top_tensors`` (and optionally
``backward_torch(top_diffs, propagate_down, bottom_tensors) -> bottom_diffs``), those are called instead, with
tensors on the net's device: no copy to the host and back.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import List

from .blob import Blob
from .layer import Layer as _BuiltinLayer
from .layer import register

__all__ = ["Layer", "PythonLayer", "layer_search_path"]


class _BlobVec(list):
    """pycaffe's ``layer.blobs``: a list of Blobs with ``add_blob(*shape)``."""

    def __init__(self, device="cpu"):
        super().__init__()
        self._device = device

    def add_blob(self, *shape) -> None:
        self.append(Blob(tuple(int(s) for s in shape), device=self._device))


class Layer:
    """Base class of Python layers (pycaffe's ``caffe.Layer``).

    Subclasses define ``setup``, ``reshape``, ``forward`` and ``backward`` (bottom/top: lists of blobs);
    the runtime sets ``param_str`` and ``phase`` before ``setup``.
    """

    param_str = ""
    phase = 0

    def __init__(self, param=None):
        # BVLC's layer factory constructs the class with the LayerParameter; keep it for the layer to read.
        self.layer_param = param

    @property
    def blobs(self) -> _BlobVec:
        vec = self.__dict__.get("_blobs")
        if vec is None:
            vec = self.__dict__["_blobs"] = _BlobVec(getattr(self, "_device", "cpu"))
        return vec

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must define reshape(bottom, top)")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must define forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        pass


def layer_search_path() -> List[str]:
    """Folders searched for Python layer modules after ``sys.path``."""
    paths = [p for p in os.environ.get("TORCHCAFFE_LAYERS_PATH", "").split(os.pathsep) if p]
    toolkit_layers = Path(__file__).resolve().parents[1] / "layers"
    if toolkit_layers.is_dir():
        paths.append(str(toolkit_layers))
    return paths


def _import(module: str):
    for p in layer_search_path():
        if p not in sys.path:
            sys.path.append(p)
    return importlib.import_module(module)


@register("Python")
class PythonLayer(_BuiltinLayer):
    """The ``Python`` layer type: runs a user-written layer object (pycaffe's PythonLayer)."""

    def layer_setup(self, bottom, top):
        pp = self.layer_param.python_param
        if not pp.module or not pp.layer:
            raise self.error("python_param needs both 'module' and 'layer'")
        try:
            mod = _import(pp.module)
        except Exception as e:  # an ImportError or an error raised while importing the user's module
            raise self.error(f"cannot import python_param.module '{pp.module}': {type(e).__name__}: {e} "
                             f"(searched sys.path and {', '.join(layer_search_path()) or 'nothing else'})") from e
        cls = getattr(mod, pp.layer, None)
        if cls is None:
            raise self.error(f"module '{pp.module}' ({getattr(mod, '__file__', '?')}) has no layer class "
                             f"'{pp.layer}'")
        try:
            obj = cls(self.layer_param)  # as BVLC's layer factory does
        except TypeError:
            obj = cls()
        obj._device = self.device
        obj.param_str = pp.param_str
        obj.phase = self.phase
        self.obj = obj
        self.fast = callable(getattr(obj, "forward_torch", None))
        self.fast_backward = callable(getattr(obj, "backward_torch", None))
        self._user("setup", bottom, top)
        blobs = getattr(obj, "blobs", None)
        self.blobs = blobs if isinstance(blobs, list) else []

    def _user(self, method: str, *args):
        """Call the user object's ``method``; an exception it raises becomes a LayerError naming the layer
        (name, type, module.class and method), chained to the original."""
        try:
            return getattr(self.obj, method)(*args)
        except Exception as e:
            from .layer import LayerError

            if isinstance(e, LayerError):
                raise
            pp = self.layer_param.python_param
            raise self.error(f"{pp.module}.{pp.layer}.{method} raised {type(e).__name__}: {e}") from e

    def reshape(self, bottom, top):
        self._user("reshape", bottom, top)

    def forward(self, bottom, top):
        if self.fast:
            outs = self._user("forward_torch", [b.data_t for b in bottom])
            if len(outs) != len(top):
                raise self.error(f"forward_torch returned {len(outs)} tensors for {len(top)} tops")
            for t, o in zip(top, outs):
                t.data_t = o
        else:
            self._user("forward", bottom, top)

    def backward(self, top, propagate_down, bottom):
        if self.fast_backward:
            grads = self._user("backward_torch", [t.diff_t for t in top], list(propagate_down),
                               [b.data_t for b in bottom])
            for b, need, g in zip(bottom, propagate_down, grads):
                if need and g is not None:
                    b.diff_t = g
        else:
            self._user("backward", top, list(propagate_down), bottom)
