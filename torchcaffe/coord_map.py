"""pycaffe's ``caffe.coord_map``: the spatial coordinate mapping between tops of a ``NetSpec``, and ``crop``
to align one top with another (as fully convolutional nets do before fusing score maps).

A mapping is ``(axis, scale, shift)``: output coordinate ``y = scale * x + shift`` of input coordinate ``x``
along the spatial axes from ``axis`` on (``axis`` None: any, as for pointwise layers).  Scales and shifts
are numpy arrays with one value per spatial axis (or one for all).
"""
from __future__ import annotations

import numpy as np

#: Layers that leave coordinates unchanged.
PASS_THROUGH_LAYERS = ['AbsVal', 'BatchNorm', 'Bias', 'BNLL', 'Dropout', 'Eltwise', 'ELU', 'Log', 'LRN',
                       'Exp', 'MVN', 'Power', 'ReLU', 'PReLU', 'Scale', 'Sigmoid', 'Split', 'TanH',
                       'Threshold']

IDENTITY = (None, 1, 0)


class UndefinedMapException(Exception):
    """The layer has no defined coordinate mapping (e.g. InnerProduct)."""


class AxisMismatchException(Exception):
    """Two mappings concern different axes."""


def conv_params(fn):
    """``(axis, stride, effective kernel extent, pad)`` of a Convolution / Deconvolution / Im2col (from
    ``convolution_param``) or Pooling (its own fields) layer; legacy ``_h`` / ``_w`` fields are refused."""
    params = fn.params.get('convolution_param', fn.params)
    legacy = {'pad_h', 'pad_w', 'kernel_h', 'kernel_w', 'stride_h', 'stride_w'} & set(fn.params)
    if legacy:
        raise AssertionError(f"cropping does not support legacy _h/_w params ({', '.join(sorted(legacy))})")
    kernel = np.array(params['kernel_size'], ndmin=1)
    dilation = np.array(params.get('dilation', 1), ndmin=1)
    return (params.get('axis', 1), np.array(params.get('stride', 1), ndmin=1),
            (kernel - 1) * dilation + 1, np.array(params.get('pad', 0), ndmin=1))


def crop_params(fn):
    """``(axis, offset)`` of a Crop layer with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get('crop_param', fn.params)
    return params.get('axis', 2), np.array(params.get('offset', 0), ndmin=1)


def coord_map(fn):
    """The mapping ``(axis, scale, shift)`` of one layer function from its input to its output."""
    t = fn.type_name
    if t in ('Convolution', 'Pooling', 'Im2col'):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if t == 'Deconvolution':
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if t in PASS_THROUGH_LAYERS:
        return IDENTITY
    if t == 'Crop':
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset          # axis - 1: the last non-coordinate axis, as conv's axis
    raise UndefinedMapException(f"no coordinate mapping for layer type {t}")


def compose(base_map, next_map):
    """The mapping ``base_map`` after ``next_map``: scales multiply, ``next_map``'s shift is scaled by
    ``base_map``'s scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException(f"cannot compose mappings on axes {ax1} and {ax2}")
    return ax, a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The inverse mapping (output to input)."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mappable_bottoms(top):
    # every bottom maps alike, except a Crop's second bottom (it only gives the size)
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == 'Crop' else inputs


def _ancestors(top):
    """Yield ``(blob, mapping from blob to top)`` walking back from ``top`` through mappable layers."""
    maps = {top: IDENTITY}
    frontier = [top]
    seen = {top}
    yield top, IDENTITY
    while frontier:
        t = frontier.pop()
        try:
            m = coord_map(t.fn)
        except UndefinedMapException:
            continue
        for b in _mappable_bottoms(t):
            maps[b] = compose(maps[t], m)
            if b not in seen:
                seen.add(b)
                frontier.append(b)
                yield b, maps[b]


def coord_map_from_to(top_from, top_to):
    """The mapping from ``top_from``'s coordinates to ``top_to``'s, through their nearest common ancestor
    (``RuntimeError`` when they share none through spatial layers)."""
    from_maps = dict(_ancestors(top_from))
    for blob, to_map in _ancestors(top_to):
        if blob in from_maps:
            return compose(to_map, inverse(from_maps[blob]))
    raise RuntimeError('Could not compute map between tops; are they connected by spatial layers?')


def crop(top_from, top_to):
    """A ``Crop`` layer (NetSpec) cropping ``top_from`` to align with ``top_to``.

    ``AssertionError`` when that is not a pure crop: different scales, a negative or fractional offset.
    """
    from .net_spec import layers as L

    ax, a, b = coord_map_from_to(top_from, top_to)
    if not np.all(a == 1):
        raise AssertionError(f'scale mismatch on crop (a = {a})')
    if not np.all(b <= 0):
        raise AssertionError(f'cannot crop negative offset (b = {b})')
    if not np.all(np.round(b) == b):
        raise AssertionError(f'cannot crop noninteger offset (b = {b})')
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=ax + 1, offset=list(-np.round(b).astype(int))))
