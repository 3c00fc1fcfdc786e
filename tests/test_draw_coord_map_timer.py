"""caffe.draw (and tools/draw_net.py), caffe.coord_map and caffe.Timer.

BVLC's own python/caffe/test/test_draw.py and test_coord_map.py also pass against these modules (run
through an ``import torchcaffe as caffe`` shim; see the README).  Here: the graph of the project's demo net
against its prototxt, a rendered PNG, the command line, crop alignment checked on a running net, Timer."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import torchcaffe as caffe
from torchcaffe import coord_map, draw
from torchcaffe.net_spec import NetSpec, layers as L
from torchcaffe.proto import caffe_pb2
from torchcaffe.timer import Timer
from data_helpers import load_tool

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "prototxt" / "demo" / "colorization_train_val.prototxt"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot program is not installed")
draw_net_tool = load_tool("draw_net")
try:
    import pydot  # noqa: F401
    HAVE_PYDOT = True
except ImportError:
    HAVE_PYDOT = False
needs_pydot = pytest.mark.skipif(not HAVE_PYDOT, reason="pydot is not installed (pip install pydot)")


def demo_param():
    param = caffe_pb2.NetParameter()
    text_format.Merge(DEMO.read_text(), param)
    return param


def _unquote(s):
    return s[1:-1] if s and s[0] == s[-1] == '"' else s


@needs_pydot
def test_graph_of_the_demo_net_has_its_layers_blobs_and_edges():
    param = demo_param()
    g = draw.get_pydot_graph(param, "LR", phase=caffe.TRAIN, display_lrm=True)
    train = [l for l in param.layer if not any(r.phase == caffe.TEST for r in l.include)]
    nodes = {_unquote(n.get_name()): n for n in g.get_nodes()}
    blobs = {b for l in train for b in list(l.bottom) + list(l.top)}
    assert set(nodes) == {f"{l.name}_{l.type}" for l in train} | {b + "_blob" for b in blobs}
    assert len(g.get_edges()) == sum(len(l.bottom) + len(l.top) for l in train)
    edges = {(_unquote(e.get_source()), _unquote(e.get_destination())): _unquote(e.get("label"))
             for e in g.get_edges()}
    assert edges[("data_Data", "data_blob")] == "Batch 8"                       # TRAIN batch size
    assert edges[("conv8_313_Convolution", "conv8_313_blob")] == "313"         # num_output
    assert edges[("conv8_313_blob", "conv8_313_boost_Python")] == ""
    conv = nodes["conv1_2_Convolution"].get("label")
    assert conv == r'"conv1_2\n(Convolution)\nkernel size: 3\nstride: 2\npad: 1\nlr mult: 1.0, 1.0"'
    assert nodes["relu1_1_ReLU"].get("fillcolor") == "#90EE90"                 # in place
    assert nodes["conv1_2_Convolution"].get("fillcolor") == "#FF5050"
    assert nodes["data_l_blob"].get("shape") == "octagon"
    # TB: words separated by spaces; lr multipliers only with display_lrm
    tb = draw.get_pydot_graph(param, "TB", phase=caffe.TRAIN)
    label = {_unquote(n.get_name()): n.get("label") for n in tb.get_nodes()}["conv1_2_Convolution"]
    assert label == '"conv1_2 (Convolution) kernel size: 3 stride: 2 pad: 1"'
    # phase filter: the TEST Data layer reads the TEST batch size
    test = draw.get_pydot_graph(param, "LR", phase=caffe.TEST)
    assert {(_unquote(e.get_source()), _unquote(e.get_destination())): _unquote(e.get("label"))
            for e in test.get_edges()}[("data_Data", "data_blob")] == "Batch 4"


@needs_pydot
def test_layer_label_pooling_and_lr_mult_rules():
    lp = caffe_pb2.LayerParameter(name="pool1", type="Pooling")
    lp.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
    lp.pooling_param.kernel_size, lp.pooling_param.stride = 3, 2
    assert draw.get_layer_label(lp, "LR") == r'"pool1\n(Pooling AVE)\nkernel size: 3\nstride: 2\npad: 0"'
    ip = caffe_pb2.LayerParameter(name="fc", type="InnerProduct")
    assert draw.get_layer_lr_mult(ip) == (1.0, 1.0)
    ip.param.add(lr_mult=0)
    ip.param.add(lr_mult=0)
    assert draw.get_layer_lr_mult(ip) == (0.0, 0.0)
    assert "lr mult" not in draw.get_layer_label(ip, "LR", display_lrm=True)      # both zero: not shown
    with pytest.raises(ValueError, match="ReLU layers do not have"):
        draw.get_layer_lr_mult(caffe_pb2.LayerParameter(name="r", type="ReLU"))
    both = caffe_pb2.LayerParameter(name="x", type="ReLU")
    both.include.add(phase=caffe.TRAIN)
    both.exclude.add(phase=caffe.TEST)
    net = caffe_pb2.NetParameter(layer=[both])
    with pytest.raises(ValueError, match="layer x has both include and exclude"):
        draw.get_pydot_graph(net, "LR", phase=caffe.TRAIN)


@needs_pydot
@needs_dot
def test_draw_net_to_file_renders_png(tmp_path):
    out = tmp_path / "net.png"
    draw.draw_net_to_file(demo_param(), str(out), "TB", caffe.TRAIN)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10000


@needs_pydot
def test_draw_net_command_line(tmp_path, capsys):
    raw = tmp_path / "net.raw"
    assert draw_net_tool.main([str(DEMO), str(raw), "--phase", "TEST", "--rankdir", "BT"]) == 0
    text = raw.read_text()
    assert text.startswith("digraph colorization_demo {") and "rankdir=BT" in text and "Batch 4" in text
    assert draw_net_tool.main([str(DEMO), str(raw), "--phase", "VAL"]) == 2
    assert "unknown phase 'VAL'" in capsys.readouterr().err
    assert draw_net_tool.main([str(tmp_path / "missing.prototxt"), str(raw)]) == 1
    assert "cannot read" in capsys.readouterr().err


# ---- coord_map ------------------------------------------------------------------------------------------

def test_coord_map_by_hand_and_crop_aligns_in_a_running_net(tmp_path):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=5, stride=1, pad=0)     # 16 x 16
    n.pool = L.Pooling(n.conv, kernel_size=2, stride=2)                              # 8 x 8
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=1, kernel_size=2, stride=2))  # 16 x 16
    # by hand: conv maps x -> x - 2 (centre of a 5-wide window), pool x -> (x - 0.5) / 2, deconv x -> 2x + 0.5
    # so a data coordinate x sits at x - 2 in up, and up's y at y + 2 in data
    ax, a, b = coord_map.coord_map_from_to(n.data, n.up)
    assert ax == 1 and np.allclose(a, 1) and np.allclose(b, -2)
    ax, a, b = coord_map.coord_map_from_to(n.up, n.data)
    assert ax == 1 and np.allclose(a, 1) and np.allclose(b, 2)
    ax, a, b = coord_map.coord_map_from_to(n.pool, n.data)          # pool's y covers data 2y + 0.5 + 2
    assert ax == 1 and np.allclose(a, 2) and np.allclose(b, 2.5)
    n.crop = coord_map.crop(n.data, n.up)
    crop_layer = n.to_proto().layer[-1]
    assert crop_layer.type == "Crop" and crop_layer.crop_param.axis == 2
    assert list(crop_layer.crop_param.offset) == [2]
    (tmp_path / "net.prototxt").write_text(str(n.to_proto()))
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    x = np.random.default_rng(0).standard_normal((1, 1, 20, 20)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    assert net.blobs["crop"].data.shape == net.blobs["up"].data.shape == (1, 1, 16, 16)
    assert np.array_equal(net.blobs["crop"].data, x[:, :, 2:18, 2:18])


def test_coord_map_errors():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 10, 10]))
    n.other = L.Input(shape=dict(dim=[1, 1, 10, 10]))
    n.fc = L.InnerProduct(n.data, num_output=3)
    with pytest.raises(RuntimeError, match="Could not compute map"):
        coord_map.coord_map_from_to(n.data, n.other)
    n.pool = L.Pooling(n.data, kernel_size=2, stride=2)
    with pytest.raises(AssertionError, match="scale mismatch"):
        coord_map.crop(n.data, n.pool)
    n.padded = L.Convolution(n.data, num_output=1, kernel_size=1, pad=2)
    with pytest.raises(AssertionError, match="negative offset"):
        coord_map.crop(n.data, n.padded)
    with pytest.raises(coord_map.UndefinedMapException):
        coord_map.coord_map(n.fc.fn)


# ---- Timer ----------------------------------------------------------------------------------------------

def test_timer_as_pycaffe():
    if "Timer" in getattr(caffe, "_LAZY", {}):        # exported as caffe.Timer by torchcaffe's lazy table
        assert caffe.Timer is Timer
    t = Timer()
    assert t.ms == 0.0                                 # never started: 0 (and a warning)
    t.start()
    time.sleep(0.03)
    t.stop()
    ms = t.ms
    assert ms >= 25 and ms == int(ms)                  # whole milliseconds on the CPU, as Caffe's
    time.sleep(0.02)
    assert t.ms == ms                                  # stopped: unchanged
    t.start()
    t.start()                                          # no-op while running
    time.sleep(0.01)
    assert t.ms >= 5                                   # reading while running stops it
    assert t.ms == t.ms
