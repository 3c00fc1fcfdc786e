"""pycaffe's ``caffe.draw``: draw a ``NetParameter`` as a graph with pydot (and graphviz's ``dot``).

Layers are boxes (labelled with name, type and, for Convolution / Deconvolution / Pooling, kernel size,
stride and pad; learning-rate multipliers with ``display_lrm``), blobs are octagons, in-place neuron layers
are green; edges from a layer to its tops are labelled with the batch size (Data) or ``num_output``
(Convolution, Deconvolution, InnerProduct).  ``phase`` keeps only the layers of that phase, by the
include / exclude phase rules as pycaffe applies them.

Needs the ``pydot`` package; rendering (``draw_net``, ``draw_net_to_file`` with an image extension) also
needs graphviz's ``dot`` program.  ``draw_net_to_file(..., 'net.raw')`` writes the dot source without it.
"""
from __future__ import annotations

from .proto import caffe_pb2

try:
    import pydotplus as pydot  # pycaffe prefers pydotplus where installed
except ImportError:
    try:
        import pydot
    except ImportError:  # reported when a graph is made
        pydot = None

LAYER_STYLE_DEFAULT = {'shape': 'record', 'fillcolor': '#6495ED', 'style': 'filled'}
NEURON_LAYER_STYLE = {'shape': 'record', 'fillcolor': '#90EE90', 'style': 'filled'}
BLOB_STYLE = {'shape': 'octagon', 'fillcolor': '#E0E0E0', 'style': 'filled'}

_LEARNING_LAYERS = ('Convolution', 'Deconvolution', 'InnerProduct')


def _pydot():
    if pydot is None:
        raise ImportError("torchcaffe.draw needs pydot (pip install pydot) and graphviz's dot program "
                          "(e.g. apt-get install graphviz)")
    return pydot


def get_pooling_types_dict():
    """``{pool method number: name}``, e.g. ``{0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC'}``."""
    desc = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {v.number: k for k, v in desc.values_by_name.items()}


def get_edge_label(layer):
    """The label of the edges from ``layer`` to its tops."""
    if layer.type == 'Data':
        return 'Batch ' + str(layer.data_param.batch_size)
    if layer.type in ('Convolution', 'Deconvolution'):
        return str(layer.convolution_param.num_output)
    if layer.type == 'InnerProduct':
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer):
    """``(weights lr_mult, bias lr_mult)`` of a Convolution / Deconvolution / InnerProduct layer (1 where
    not given)."""
    if layer.type not in _LEARNING_LAYERS:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    params = layer.param
    if len(params) > 2:
        raise ValueError(f"layer {layer.name}: could not parse the learning rate multiplier "
                         f"({len(params)} param blocks)")
    mults = [p.lr_mult for p in params] + [1.0] * (2 - len(params))
    return mults[0], mults[1]


def get_layer_label(layer, rankdir, display_lrm=False):
    """The quoted node label of ``layer``: name, (type), spatial parameters, lr multipliers -- separated
    by spaces for a vertical layout (``rankdir`` TB / BT), by line breaks otherwise."""
    separator = ' ' if rankdir in ('TB', 'BT') else r'\n'
    parts = [layer.name]
    if layer.type == 'Pooling':
        parts.append('(%s %s)' % (layer.type, get_pooling_types_dict()[layer.pooling_param.pool]))
    else:
        parts.append('(%s)' % layer.type)
    if layer.type in ('Convolution', 'Deconvolution', 'Pooling'):
        if layer.type == 'Pooling':
            p = layer.pooling_param
            kernel, stride, pad = p.kernel_size, p.stride, p.pad
        else:
            p = layer.convolution_param
            kernel = p.kernel_size[0] if len(p.kernel_size) else 1
            stride = p.stride[0] if len(p.stride) else 1
            pad = p.pad[0] if len(p.pad) else 0
        parts.append(separator.join(["kernel size: %d" % kernel, "stride: %d" % stride, "pad: %d" % pad]))
    if display_lrm and layer.type in _LEARNING_LAYERS:
        lrm0, lrm1 = get_layer_lr_mult(layer)
        if lrm0 or lrm1:
            parts.append("lr mult: %.1f, %.1f" % (lrm0, lrm1))
    return '"%s"' % separator.join(parts)


def choose_color_by_layertype(layertype):
    """The fill colour of a layer node."""
    return {'Convolution': '#FF5050', 'Deconvolution': '#FF5050', 'Pooling': '#FF9900',
            'InnerProduct': '#CC33FF'}.get(layertype, '#6495ED')


def _in_phase(layer, phase):
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    included = len(layer.include) == 0
    for rule in layer.include:
        included = included or rule.phase == phase
    for rule in layer.exclude:
        included = included and rule.phase != phase
    return included


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """A ``pydot.Dot`` graph of the NetParameter ``caffe_net`` (layers of ``phase`` only, if given)."""
    pd = _pydot()
    graph = pd.Dot(caffe_net.name if caffe_net.name else 'Net', graph_type='digraph', rankdir=rankdir)
    nodes = {}
    edges = []

    def blob_node(name):
        key = name + '_blob'
        if key not in nodes:
            nodes[key] = pd.Node('"%s"' % key, label='"%s"' % name, **BLOB_STYLE)
        return key

    for layer in caffe_net.layer:
        if not _in_phase(layer, phase):
            continue
        key = "%s_%s" % (layer.name, layer.type)
        label = get_layer_label(layer, rankdir, display_lrm=display_lrm)
        if len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]:
            style = NEURON_LAYER_STYLE                         # an in-place neuron layer
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
        nodes[key] = pd.Node('"%s"' % key, label=label, **style)
        for bottom in layer.bottom:
            edges.append((blob_node(bottom), key, '""'))
        for top in layer.top:
            edges.append((key, blob_node(top), get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pd.Edge(nodes[src], nodes[dst], label=label))
    return graph


def draw_net(caffe_net, rankdir, ext='png', phase=None, display_lrm=False):
    """The drawing of ``caffe_net`` as bytes in format ``ext`` (any graphviz output format; needs dot)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext == 'raw':
        return graph.to_string().encode()
    try:
        return graph.create(format=ext)
    except FileNotFoundError as e:
        raise RuntimeError(f"drawing a net as {ext} needs graphviz's dot program ({e}); install graphviz, or "
                           "write the dot source with a .raw file name") from None


def draw_net_to_file(caffe_net, filename, rankdir='LR', phase=None, display_lrm=False):
    """Draw ``caffe_net`` into ``filename`` in the format its extension names (``.png``, ``.pdf``,
    ``.svg``, ...; ``.raw``: the dot source)."""
    ext = filename[filename.rfind('.') + 1:]
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, 'wb') as f:
        f.write(data)
