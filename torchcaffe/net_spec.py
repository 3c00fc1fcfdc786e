"""Writing nets in Python: ``NetSpec``, ``layers`` and ``params``, with pycaffe's semantics.

``import torchcaffe as caffe; L, P = caffe.layers, caffe.params``::

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 224, 224]))
    n.conv1 = L.Convolution(n.data, num_output=64, kernel_size=3, pad=1,
                            param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    print(n.to_proto())

The rules are those of BVLC Caffe's ``python/caffe/net_spec.py``, so that a script written for pycaffe writes
the same prototxt here:

* ``layers.<Type>(*bottoms, **kwargs)`` describes one layer of type ``<Type>``.  ``ntop=k`` gives it k tops
  (the call returns the one ``Top``, a tuple of tops, or, for ``ntop=0``, the layer itself);
  ``in_place=True`` makes its tops its (first ``ntop``) bottoms.
* Every other keyword is a field: keywords ending in ``param`` (``param``, ``transform_param``,
  ``convolution_param``, ...) are fields of ``LayerParameter``; any other keyword is looked up first in the
  layer type's own parameter message (``Convolution`` -> ``convolution_param``, ``BatchNorm`` ->
  ``batch_norm_param``: the ``LayerParameter`` field whose message is ``<Type>Parameter``) and, when that
  message has no such field or the type has no message (``Deconvolution`` has none: give it
  ``convolution_param=dict(...)``), in ``LayerParameter`` itself (``name``, ``include``, ``loss_weight``,
  ``propagate_down``, ...).  Dicts become messages, lists repeated fields, and a single value given to a
  repeated field becomes a one-element list.
* Blob and layer names: ``NetSpec.to_proto`` names each assigned top after its attribute and each layer after
  its first top's name (a ``name=`` keyword overrides the layer name); anything not assigned gets an
  automatic name ``<Type><k>`` (a counter per type, in the order the layers are reached).  Layers appear in
  the order a depth-first walk from the assigned tops, in assignment order, first reaches them.
* ``params.<Type>.<CONSTANT>`` is the enum constant of ``<Type>Parameter`` (``params.Pooling.MAX``).
"""
from __future__ import annotations

from collections import Counter, OrderedDict

from .proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "layers", "params", "to_proto", "assign_proto", "param_name_dict"]


def param_name_dict() -> dict:
    """``{layer type: parameter field stem}`` from ``LayerParameter``'s ``*_param`` fields.

    The type is the field's message name without ``Parameter`` (``BatchNormParameter`` -> ``BatchNorm``), the
    stem the field name without ``_param`` (``batch_norm``).  Fields that belong to no layer type
    (``transform_param``, ``loss_param``) are listed too and never match a type name in practice.
    """
    result = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                result[type_name[: -len("Parameter")]] = field.name[: -len("_param")]
    return result


def _is_repeated(proto, name: str) -> bool:
    return hasattr(getattr(proto, name), "extend")


def assign_proto(proto, name: str, val) -> None:
    """Assign a Python value to field ``name`` of the message ``proto``.

    Dicts fill a sub-message (recursively), lists extend a repeated field (a list of dicts adds one message
    per dict), and other values are set directly (or appended when the field is repeated).  A value that is
    not a list given to a repeated field is treated as a one-element list.
    """
    if _is_repeated(proto, name) and not isinstance(val, (list, tuple)):
        val = [val]
    if isinstance(val, (list, tuple)):
        field = getattr(proto, name)
        for item in val:
            if isinstance(item, dict):
                sub = field.add()
                for k, v in item.items():
                    assign_proto(sub, k, v)
            else:
                field.append(item)
    elif isinstance(val, dict):
        sub = getattr(proto, name)
        for k, v in val.items():
            assign_proto(sub, k, v)
    else:
        setattr(proto, name, val)


def _has_field(proto, name: str) -> bool:
    return name in proto.DESCRIPTOR.fields_by_name


class Top:
    """One output blob of a layer (``fn``), the ``n``-th of its tops."""

    def __init__(self, fn: "Function", n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> "caffe_pb2.NetParameter":
        """A NetParameter with every layer needed to compute this top (automatic names)."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames) -> None:
        self.fn._to_proto(layers, names, autonames)

    def __repr__(self) -> str:
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """One layer: its type, its bottoms (``Top`` objects) and its keyword parameters."""

    def __init__(self, type_name: str, inputs, params: dict):
        self.type_name = type_name
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):  # BVLC's message (its test_net_spec checks it)
                raise TypeError(f"{type_name} input {i} is not a Top (type is {type(inp)})")
        self.inputs = tuple(inputs)
        params = dict(params)
        self.ntop = params.pop("ntop", 1)
        self.in_place = params.pop("in_place", False)
        if self.in_place and not 0 < self.ntop <= len(self.inputs):
            raise ValueError(f"layers.{type_name}: in_place needs a bottom for each top "
                             f"({self.ntop} tops, {len(self.inputs)} bottoms)")
        self.params = params
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames) -> str:
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    @staticmethod
    def _get_top_name(top: Top, names, autonames) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames) -> None:
        if self in layers:
            return
        bottom_names = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottom_names.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom[: self.ntop])
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)

        stem = _PARAM_NAMES.get(self.type_name)
        for key, value in self.params.items():
            if key.endswith("param"):
                target = layer
            elif stem is not None and _has_field(getattr(layer, stem + "_param"), key):
                target = getattr(layer, stem + "_param")
            elif _has_field(layer, key):
                target = layer
            else:
                where = f"{stem}_param or " if stem is not None else ""
                raise AttributeError(f"layer {layer.name!r} ({self.type_name}): {key!r} is a field of neither "
                                     f"{where}LayerParameter")
            assign_proto(target, key, value)
        layers[self] = layer

    def __repr__(self) -> str:
        return f"<Function {self.type_name}>"


def to_proto(*tops) -> "caffe_pb2.NetParameter":
    """A NetParameter with every layer needed to compute ``tops`` (all names automatic)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Tops assigned as attributes (or items); ``to_proto`` names them after their attributes."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value) -> None:
        if not isinstance(value, (Top, Function)):
            raise TypeError(f"NetSpec.{name}: expected a top (or a layer with ntop=0), got {value!r}")
        self.tops[name] = value

    def __getattr__(self, name: str):
        try:
            return self.__dict__["tops"][name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top {name!r}") from None

    def __setitem__(self, name: str, value) -> None:
        self.__setattr__(name, value)

    def __getitem__(self, name: str):
        return self.tops[name]

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tops

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def to_proto(self) -> "caffe_pb2.NetParameter":
        names = {value: key for key, value in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """``layers.<Type>(*bottoms, **params)``: describe a layer of type ``<Type>``."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        layer_fn.__name__ = type_name
        return layer_fn


class Parameters:
    """``params.<Type>.<NAME>``: the enum constant ``NAME`` of ``caffe_pb2.<Type>Parameter``."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        message = getattr(caffe_pb2, type_name + "Parameter")

        class _Param:
            def __getattr__(self, const_name: str):
                return getattr(message, const_name)

        return _Param()


_PARAM_NAMES = param_name_dict()
layers = Layers()
params = Parameters()
