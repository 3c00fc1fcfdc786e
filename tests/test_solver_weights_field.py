"""The solver's ``weights`` field (BVLC's final master): each comma-separated caffemodel is copied into the train
net and every test net when the solver is made; ``caffe train -weights`` or ``-snapshot`` replaces the field,
as caffe.cpp does."""
import numpy as np

import torchcaffe as caffe
from torchcaffe import cli

NET = """
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "a"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "a" top: "b"
  inner_product_param { num_output: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "Reduction" bottom: "b" top: "loss" loss_weight: 1 }
"""


def _model(d, name, layer, value):
    """A caffemodel that holds ``layer`` alone, every value ``value``."""
    net = caffe.Net(str(d / "net.prototxt"), caffe.TEST)
    for p in net.params[layer]:
        p.data[...] = value
    net.save(str(d / name))
    full = caffe.proto.caffe_pb2.NetParameter()
    full.ParseFromString((d / name).read_bytes())
    keep = [lp for lp in full.layer if lp.name == layer]
    del full.layer[:]
    full.layer.extend(keep)
    (d / name).write_bytes(full.SerializeToString())


def _setup(d, weights_line):
    (d / "net.prototxt").write_text(NET)
    _model(d, "a.caffemodel", "ip1", 1.0)
    _model(d, "b.caffemodel", "ip2", 2.0)
    (d / "solver.prototxt").write_text(
        f'net: "net.prototxt" {weights_line} test_iter: 1 test_interval: 1000 base_lr: 0 lr_policy: "fixed" '
        'max_iter: 1 snapshot_prefix: "snap" display: 0\n')


def test_weights_field_loads_each_model_into_train_and_test_nets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _setup(tmp_path, 'weights: "a.caffemodel, b.caffemodel"')
    solver = caffe.get_solver("solver.prototxt")
    for net in (solver.net, solver.test_nets[0]):
        assert np.all(net.params["ip1"][0].data == 1.0) and np.all(net.params["ip1"][1].data == 1.0)
        assert np.all(net.params["ip2"][0].data == 2.0)


def test_train_weights_flag_replaces_the_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _setup(tmp_path, 'weights: "b.caffemodel"')
    assert cli.main(["train", "-solver", "solver.prototxt", "-weights", "a.caffemodel"]) == 0
    net = caffe.Net("net.prototxt", caffe.TEST, weights="snap_iter_1.caffemodel")
    assert np.all(net.params["ip1"][0].data == 1.0)
    assert not np.any(net.params["ip2"][0].data == 2.0)  # b.caffemodel, named only by the field, was not loaded
