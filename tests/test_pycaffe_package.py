"""``import caffe`` gives torchcaffe (unless a real BVLC pycaffe comes first on the path); the rest of BVLC's
final pycaffe API: layer_type_list, solver rank/count, has_nccl, Solver.lr, Net.load_hdf5 / save_hdf5,
forward_all, forward_backward_all; Python layers' blob vectors; the data layers' import structure."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import torchcaffe
from torchcaffe.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, pythonpath, cwd):
    """Run ``code`` in a fresh interpreter with ``pythonpath`` (in that order) from the folder ``cwd``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                       timeout=120, cwd=str(cwd))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_import_caffe_gives_torchcaffe(tmp_path):
    out = run_python("""
        import caffe, torchcaffe
        from caffe.proto import caffe_pb2
        import caffe.io, caffe.net_spec
        from caffe import layers as L, params as P
        assert caffe.Net is torchcaffe.Net and caffe.Layer is torchcaffe.Layer
        assert caffe_pb2 is torchcaffe.proto.caffe_pb2 and caffe.proto.caffe_pb2 is caffe_pb2
        assert caffe.io is torchcaffe.io and caffe.net_spec is torchcaffe.net_spec
        assert caffe.TRAIN == 0 and caffe.TEST == 1
        from caffe.pycaffe import Net, SGDSolver
        assert Net is torchcaffe.Net
        print(caffe.__file__)
    """, [REPO], tmp_path)
    assert out == str(REPO / "caffe" / "__init__.py")


def test_a_bvlc_pycaffe_earlier_on_the_path_takes_precedence(tmp_path):
    fake = tmp_path / "bvlc" / "caffe"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("BVLC = True\n")
    out = run_python("import caffe; print(getattr(caffe, 'BVLC', False), caffe.__file__)", [tmp_path / "bvlc", REPO],
                     tmp_path)
    assert out == f"True {fake / '__init__.py'}"


def test_pycaffe_module_functions():
    import caffe

    types = caffe.layer_type_list()
    assert {"Convolution", "InnerProduct", "Python", "Input", "Data"} <= set(types)
    assert list(types) == sorted(types)
    assert caffe.solver_count() == 1 and caffe.solver_rank() == 0
    assert caffe.has_nccl() is False
    caffe.set_multiprocess(False)
    try:
        caffe.set_solver_count(4)
        caffe.set_solver_rank(2)
        assert (caffe.solver_count(), caffe.solver_rank()) == (4, 2)
        with pytest.raises(ValueError, match="at least 1"):
            caffe.set_solver_count(0)
    finally:
        torchcaffe.common._state.update(rank=None, count=None)
    caffe.log("a line from pycaffe")


def test_data_layers_learn_their_shard_without_importing_solver_or_net(tmp_path):
    out = run_python("""
        import sys
        import torchcaffe.builtin.data, torchcaffe.builtin.input
        print(sorted(m for m in ("torchcaffe.solver", "torchcaffe.net", "torchcaffe.parallel") if m in sys.modules))
    """, [REPO], tmp_path)
    assert out == "[]"


def test_hdf5_data_layer_shards_by_set_solver_count(tmp_path):
    import torchcaffe as caffe

    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = np.arange(8, dtype=np.float32).reshape(8, 1)
    (tmp_path / "list.txt").write_text(str(tmp_path / "d.h5") + "\n")
    p = caffe_pb2.NetParameter()
    text_format.Parse(f'layer {{ name: "d" type: "HDF5Data" top: "x" hdf5_data_param {{ source: '
                      f'"{tmp_path / "list.txt"}" batch_size: 2 }} }}', p)
    try:
        caffe.set_solver_count(2)
        caffe.set_solver_rank(1)
        net = caffe.Net(p, caffe.TRAIN)
        net.forward()
        np.testing.assert_array_equal(net.blobs["x"].data.ravel(), [1, 3])  # rank 1 of 2 keeps odd rows
    finally:
        torchcaffe.common._state.update(rank=None, count=None)


SOLVER_NET = """
name: "lr"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } loss_weight: 1 }
"""


def test_solver_lr_follows_the_policy(tmp_path):
    import torchcaffe as caffe

    (tmp_path / "net.prototxt").write_text(SOLVER_NET)
    (tmp_path / "s.prototxt").write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.5 lr_policy: "step" '
                                         f'gamma: 0.1 stepsize: 2 max_iter: 5 display: 0 '
                                         f'snapshot_after_train: false')
    s = caffe.SGDSolver(str(tmp_path / "s.prototxt"))
    assert s.lr == pytest.approx(0.5)
    s.step(2)
    assert s.lr == pytest.approx(0.05)
    s.step(2)
    assert s.lr == pytest.approx(0.005)


NET = """
name: "h5"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 5 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "out"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""


def make_net(seed, text=NET, phase=None):
    import torchcaffe as caffe

    p = caffe_pb2.NetParameter()
    text_format.Parse(text, p)
    caffe.set_random_seed(seed)
    return caffe.Net(p, caffe.TEST if phase is None else phase)


def test_save_hdf5_load_hdf5_round_trip_in_bvlcs_layout(tmp_path):
    a, b = make_net(1), make_net(2)
    path = str(tmp_path / "w.h5")
    a.save_hdf5(path)
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
    # the layout BVLC Caffe's Net::ToHDF5 writes (checked against it): a group per layer, params or not
    assert names == ["data", "data/data", "data/ip", "data/ip/0", "data/ip/1", "data/ip2", "data/ip2/0",
                     "data/ip2/1", "data/relu"]
    assert not np.array_equal(a.params["ip"][0].data, b.params["ip"][0].data)
    held = b.params["ip"][0].data
    assert b.load_hdf5(path) == ["ip", "ip2"]
    for name in ("ip", "ip2"):
        for x, y in zip(a.params[name], b.params[name]):
            np.testing.assert_array_equal(x.data, y.data)
    np.testing.assert_array_equal(held, a.params["ip"][0].data)  # loaded into the held memory


def test_load_hdf5_of_a_caffemodel_is_a_clear_error(tmp_path):
    from torchcaffe.net import NetError

    a = make_net(1)
    a.save(str(tmp_path / "w.caffemodel"))
    with pytest.raises(NetError, match=r"w\.caffemodel: not an HDF5 weights file"):
        a.load_hdf5(str(tmp_path / "w.caffemodel"))


def test_forward_all_batches_and_drops_the_padding():
    net = make_net(3)
    x = np.random.RandomState(0).randn(12, 3).astype(np.float32)
    outs = net.forward_all(data=x)
    assert outs["out"].shape == (12, 2)
    w1, b1 = (p.data for p in net.params["ip"])
    w2, b2 = (p.data for p in net.params["ip2"])
    np.testing.assert_allclose(outs["out"], np.maximum(x @ w1.T + b1, 0) @ w2.T + b2, rtol=1e-5, atol=1e-5)
    outs = net.forward_all(blobs=["ip"], data=x[:7])
    assert outs["out"].shape == (7, 2) and outs["ip"].shape == (7, 4)


def test_forward_backward_all():
    net = make_net(4, "force_backward: true\n" + NET)
    x = np.random.RandomState(1).randn(7, 3).astype(np.float32)
    g = np.random.RandomState(2).randn(7, 2).astype(np.float32)
    outs, diffs = net.forward_backward_all(data=x, out=g)
    assert outs["out"].shape == (7, 2) and diffs["data"].shape == (7, 3)
    w1, b1 = (p.data for p in net.params["ip"])
    w2 = net.params["ip2"][0].data
    a = x @ w1.T + b1
    np.testing.assert_allclose(diffs["data"], ((g @ w2) * (a > 0)) @ w1, rtol=1e-4, atol=1e-5)


LAYER = '''
import caffe

class Iterates(caffe.Layer):
    def setup(self, bottom, top):
        assert len(bottom) == 1 and len(top) == 1 and bottom[-1] is bottom[0]
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        for b in bottom:
            pass
'''


def test_python_layer_blob_vectors_index_but_do_not_iterate(tmp_path, monkeypatch):
    import torchcaffe as caffe
    from torchcaffe.net import NetError

    (tmp_path / "iter_layer.py").write_text(LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "caffe", caffe)
    p = caffe_pb2.NetParameter()
    text_format.Parse('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 } } } '
                      'layer { name: "p" type: "Python" bottom: "x" top: "y" '
                      'python_param { module: "iter_layer" layer: "Iterates" } }', p)
    net = caffe.Net(p, caffe.TEST)
    with pytest.raises(TypeError, match=r"index it instead: bottom\[i\]"):
        net.forward()


def test_the_names_of_bvlcs_final_pycaffe():
    """Every public name of BVLC Caffe 1.0's ``caffe`` module, Net and SGDSolver (listed from a BVLC build)."""
    import caffe

    module = ['AdaDeltaSolver', 'AdaGradSolver', 'AdamSolver', 'Classifier', 'Detector', 'Layer', 'NCCL',
              'NesterovSolver', 'Net', 'NetSpec', 'RMSPropSolver', 'SGDSolver', 'TEST', 'TRAIN', 'Timer',
              'get_solver', 'has_nccl', 'init_log', 'io', 'layer_type_list', 'layers', 'log', 'params', 'proto',
              'pycaffe', 'set_device', 'set_mode_cpu', 'set_mode_gpu', 'set_multiprocess', 'set_random_seed',
              'set_solver_count', 'set_solver_rank', 'solver_count', 'solver_rank', 'to_proto', 'net_spec']
    have = set(dir(caffe))
    assert [n for n in module if n not in have] in ([], ['Classifier', 'Detector', 'Timer'])
    net = make_net(1)
    for n in ['_backward', '_batch', '_blob_loss_weights', '_blob_names', '_blobs', '_bottom_ids', '_forward',
              '_inputs', '_layer_names', '_outputs', '_top_ids', 'after_backward', 'after_forward', 'backward',
              'before_backward', 'before_forward', 'blob_loss_weights', 'blobs', 'bottom_names',
              'clear_param_diffs', 'copy_from', 'forward', 'forward_all', 'forward_backward_all', 'inputs',
              'layer_dict', 'layers', 'load_hdf5', 'outputs', 'params', 'reshape', 'save', 'save_hdf5',
              'share_with', 'top_names']:
        assert hasattr(net, n), n
    for n in ['add_callback', 'apply_update', 'lr', 'restore', 'share_weights', 'snapshot', 'solve', 'step']:
        assert hasattr(caffe.SGDSolver, n), n
    assert net._inputs == [0] and net._top_ids(1) == [1] and net._bottom_ids(1) == [0]
    assert net._forward(0, len(net.layers) - 1) == 0.0
    assert list(net.blob_loss_weights) == net.blob_names
    nccl = caffe.NCCL(None, "")
    net.after_backward(nccl)
    net._backward(len(net.layers) - 1, 0)
