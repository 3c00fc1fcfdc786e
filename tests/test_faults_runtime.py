"""Faults and bad input against the runtime (torchcaffe, the caffe command): no code from data files (the
resume sidecar), a NaN loss stops training, weights that do not fit are named, damaged solver states and
Python layers that raise name what is wrong, prototxt comments that are not UTF-8 parse, temporaries of
killed writes are removed, -log_dir / -gpu mistakes are one line.  The inputs are made here."""
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

import torchcaffe as caffe
from test_cli import REPO, caffe_cmd, subprocess_env, write_tiny
from torchcaffe import cli, mode, protoio
from torchcaffe import solver as S
from torchcaffe.layer import LayerError
from torchcaffe.net import NetError
from torchcaffe.proto import caffe_pb2


pytestmark = pytest.mark.usefixtures("glog_info")


def _fatal_line(err: str) -> str:
    """The caffe command failed cleanly: no traceback, one F line (the last)."""
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("F") or "-log_dir" in last, err
    return last


class _Boom:
    """Pickles as a call that creates the folder ``path`` when it is unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


# ---- 1. no code from data files ------------------------------------------------------------------------

def _snapshotted(tmp_path, monkeypatch, **kw):
    d = write_tiny(tmp_path / "t", max_iter=4, snapshot=2, test_interval=0, test_iter=None, **kw)
    monkeypatch.chdir(d)
    s = caffe.get_solver("solver.prototxt")
    s.step(2)
    return d, s, s.snapshot()


def test_sidecar_is_json_and_a_pickled_one_is_refused_without_running_it(tmp_path, monkeypatch, capfd):
    d, s, state = _snapshotted(tmp_path, monkeypatch)
    side = json.loads(open(state + S.SIDECAR_SUFFIX, "rb").read().decode("utf-8"))
    assert side["format"] == "torchcaffe-resume" and side["iter"] == 2
    # a crafted pickle beside the genuine solverstate: refused, never unpickled
    marker = tmp_path / "PWNED"
    with open(state + S.SIDECAR_SUFFIX, "wb") as f:
        pickle.dump({"ranks": [_Boom(marker)]}, f)
    r = caffe.get_solver("solver.prototxt")
    with pytest.raises(S.SolverError, match=r"tiny_iter_2\.solverstate\.rng: a pickled resume sidecar .* never "
                                            r"unpickled"):
        r.restore(state)
    capfd.readouterr()
    assert cli.main(["train", "-solver", "solver.prototxt", "-snapshot", state]) == 1
    last = _fatal_line(capfd.readouterr().err)
    assert "tiny_iter_2.solverstate.rng" in last and "pickled" in last
    assert not marker.exists()
    # a damaged or foreign JSON file is refused too; without a sidecar the restore is Caffe's
    for bad in (b'{"format": "torchcaffe-resume", "version": 2, "ranks": 5}', b"[1, 2]", b"\xff\xfe garbage"):
        with open(state + S.SIDECAR_SUFFIX, "wb") as f:
            f.write(bad)
        with pytest.raises(S.SolverError, match=r"\.solverstate\.rng: "):
            caffe.get_solver("solver.prototxt").restore(state)
    os.remove(state + S.SIDECAR_SUFFIX)
    r = caffe.get_solver("solver.prototxt")
    r.restore(state)
    assert r.iter == 2


def test_sidecar_round_trips_rng_states(tmp_path, monkeypatch):
    """The JSON sidecar restores torch, numpy and Python generators exactly (the exact-resume tests of
    test_solver / test_solver_resume check whole trajectories)."""
    d, s, state = _snapshotted(tmp_path, monkeypatch)
    want = (torch.rand(3), np.random.rand(3), __import__("random").random())
    torch.manual_seed(123), np.random.seed(123), __import__("random").seed(123)
    caffe.get_solver("solver.prototxt").restore(state)
    got = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


# ---- 6. a non-finite loss stops training ---------------------------------------------------------------

def _nan_at_iteration(d, it, batch=8):
    with h5py.File(d / "train.h5", "r+") as f:
        x = f["data"][()]
        x[it * batch + 3, 0] = np.nan
        f["data"][...] = x


def test_nan_loss_stops_at_its_iteration_and_keeps_the_last_snapshot(tmp_path, monkeypatch, capfd):
    d = write_tiny(tmp_path / "t", max_iter=6, snapshot=1, test_interval=0, test_iter=None, shuffle=False)
    _nan_at_iteration(d, 3)
    monkeypatch.chdir(d)
    assert cli.main(["train", "-solver", "solver.prototxt"]) == 1
    last = _fatal_line(capfd.readouterr().err)
    assert "Iteration 3, loss = nan" in last and "snap/tiny_iter_3.solverstate" in last
    assert "-nonfinite_loss continue" in last
    snaps = sorted(p.name for p in (d / "snap").glob("*.caffemodel"))
    assert snaps == [f"tiny_iter_{i}.caffemodel" for i in (1, 2, 3)]
    w = protoio.read_net_weights(str(d / "snap/tiny_iter_3.caffemodel"))
    assert all(np.isfinite(protoio.proto_to_array(b)).all() for l in w.layer for b in l.blobs)
    # the Python API raises the same error; a flag / attribute keeps Caffe's behaviour (train on)
    s = caffe.get_solver("solver.prototxt")
    with pytest.raises(S.DivergenceError, match="Iteration 3"):
        s.step(6)
    assert s.iter == 3
    s = caffe.get_solver("solver.prototxt")
    s.stop_on_nonfinite_loss = False
    s.step(6)
    assert s.iter == 6
    monkeypatch.setenv(S.NONFINITE_ENV, "stop")
    assert cli.main(["train", "-solver", "solver.prototxt", "-nonfinite_loss", "continue"]) == 0
    assert (d / "snap/tiny_iter_6.caffemodel").exists()
    assert cli.main(["train", "-solver", "solver.prototxt", "-nonfinite_loss", "maybe"]) == 1


# ---- 4. damaged HDF5 solver states ---------------------------------------------------------------------

def test_hdf5_solverstate_truncated_or_incomplete_names_file_and_field(tmp_path, monkeypatch):
    d, s, state = _snapshotted(tmp_path, monkeypatch, snapshot_format="HDF5")
    assert state.endswith(".solverstate.h5")
    os.remove(state + S.SIDECAR_SUFFIX)
    data = open(state, "rb").read()
    cut = tmp_path / "cut.solverstate.h5"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(S.SolverError, match=r"cut\.solverstate\.h5: not a readable HDF5 solver state"):
        caffe.get_solver("solver.prototxt").restore(str(cut))
    for field in ("history", "iter"):
        p = tmp_path / f"no_{field}.solverstate.h5"
        p.write_bytes(data)
        with h5py.File(p, "r+") as f:
            del f[field]
        with pytest.raises(S.SolverError, match=rf"no_{field}\.solverstate\.h5: the HDF5 solver state lacks "
                                                rf"'{field}'"):
            caffe.get_solver("solver.prototxt").restore(str(p))


# ---- 5 / issue 9.6: weights that do not fit ------------------------------------------------------------

NET = """name: "n"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 3 } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y" inner_product_param { num_output: 2 } }
"""


def _net(text=NET):
    p = caffe_pb2.NetParameter()
    protoio.parse_prototxt_string(text, p)
    return caffe.Net(p, caffe.TEST)


def test_copy_from_blob_count_and_shape_errors_are_caffes(tmp_path):
    """The messages are those of BVLC's Net::CopyTrainedLayersFrom (net.cpp); a real BVLC build stops on a
    same-named layer without blobs with "Check failed: ... (2 vs. 0) Incompatible number of blobs for layer
    ip1" (run here on 2026-12-01)."""
    src = _net().to_proto()
    del src.layer[1].blobs[1:]  # ip1 without its bias
    with pytest.raises(NetError, match=r"^Incompatible number of blobs for layer ip1 "):
        _net().copy_from(src)
    src = _net().to_proto()
    del src.layer[1].blobs[:]  # a same-named layer without blobs is not skipped either
    with pytest.raises(NetError, match=r"^Incompatible number of blobs for layer ip1 "):
        _net().copy_from(src)
    wide = _net(NET.replace("num_output: 3", "num_output: 5")).to_proto()
    with pytest.raises(NetError, match=r"^Cannot copy param 0 weights from layer 'ip1' .*; shape mismatch.  "
                                       r"Source param shape is 5 4 \(20\); target param shape is 3 4 \(12\)\. "
                                       r"To learn this layer's parameters from scratch"):
        _net().copy_from(wide)


def test_uncovered_layers_are_named_and_logged(tmp_path, capfd):
    net = _net()
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    capfd.readouterr()
    full = caffe.Net(protoio.parse_prototxt_string(NET, caffe_pb2.NetParameter), caffe.TEST, weights=str(path))
    assert full.uncovered_layers == [] and "left at their initial values" not in capfd.readouterr().err
    # a caffemodel cut at a field boundary parses as a smaller valid file: ip2 is not covered
    data = path.read_bytes()
    proto = caffe_pb2.NetParameter.FromString(data)
    head = caffe_pb2.NetParameter()
    head.name = proto.name
    head.layer.extend(proto.layer[:3])
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[:len(head.SerializeToString())])
    assert data.startswith(cut.read_bytes()) and len(cut.read_bytes()) < len(data)  # a prefix: ip2 cut off
    half = _net()
    half.copy_from(str(cut))
    assert half.uncovered_layers == ["ip2"]
    err = capfd.readouterr().err
    line = [l for l in err.splitlines() if "left at their initial values" in l]
    assert len(line) == 1 and line[0].startswith("W") and line[0].endswith(": ip2") and "cut.caffemodel" in line[0]
    # weights of an unrelated net cover nothing
    other = _net(NET.replace('"ip1"', '"fc_a"').replace('"ip2"', '"fc_b"'))
    other.copy_from(str(path))
    assert other.uncovered_layers == ["fc_a", "fc_b"]
    assert "0 of the 2 layers with parameters" in capfd.readouterr().err


# ---- 4. Python layers that raise -----------------------------------------------------------------------

def test_python_layer_exception_names_the_layer(tmp_path, monkeypatch):
    (tmp_path / "badlayer.py").write_text(textwrap.dedent("""
        import torchcaffe as caffe

        class Bad(caffe.Layer):
            def setup(self, bottom, top):
                pass

            def reshape(self, bottom, top):
                top[0].reshape(*bottom[0].data.shape)

            def forward(self, bottom, top):
                raise ZeroDivisionError("no luck")
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    net = _net(NET + 'layer { name: "oops" type: "Python" bottom: "y" top: "z" '
                     'python_param { module: "badlayer" layer: "Bad" } }')
    with pytest.raises(LayerError, match=r"layer 'oops' \(type Python\): badlayer\.Bad\.forward raised "
                                         r"ZeroDivisionError: no luck"):
        net.forward()


def test_python_layer_exception_keeps_its_type(tmp_path, monkeypatch):
    """BVLC's pycaffe passes a Python layer's exception on to the caller (its test_python_layer expects
    caffe.Net to raise the RuntimeError the layer's setup raised); ours is that type and a NetError naming
    the layer."""
    (tmp_path / "badsetup.py").write_text(textwrap.dedent("""
        import torchcaffe as caffe

        class Bad(caffe.Layer):
            def setup(self, bottom, top):
                raise RuntimeError("no setup")
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    text = NET + 'layer { name: "oops" type: "Python" bottom: "y" top: "z" python_param { module: "badsetup" layer: "Bad" } }'
    with pytest.raises(RuntimeError, match=r"layer 'oops' \(type Python\): badsetup\.Bad\.setup raised "
                                           r"RuntimeError: no setup$") as info:
        _net(text)
    assert isinstance(info.value, NetError)


# ---- 7. prototxt comments that are not UTF-8 -----------------------------------------------------------

def test_prototxt_with_latin1_or_gbk_comments_parses(tmp_path):
    """BVLC Caffe's caffe.Net reads the same Latin-1 + GBK commented file (checked with a real build here)."""
    want = protoio.parse_prototxt_string(NET, caffe_pb2.NetParameter)
    for enc, comment in (("latin-1", "# r\xe9seau de neurones\n"), ("gbk", "# \u7f51\u7edc\n")):
        p = tmp_path / f"{enc}.prototxt"
        p.write_bytes(comment.encode(enc) + NET.encode() + ("# fin " + comment).encode(enc))
        assert protoio.read_net_param(str(p)) == want
    p = tmp_path / "str.prototxt"
    p.write_bytes(b'name: "r\xe9seau"\n')
    with pytest.raises(protoio.CaffeFormatError, match=r"str\.prototxt:1:\d+: a string value holds bytes that "
                                                       r"are not UTF-8"):
        protoio.read_net_param(str(p))
    p = tmp_path / "bin.prototxt"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(protoio.CaffeFormatError, match=r"bin\.prototxt:1: not UTF-8 text .* binary file"):
        protoio.read_net_param(str(p))


# ---- 7. temporaries of killed writes; errors name the target -------------------------------------------

def test_killed_snapshot_write_leaves_no_temporary_behind(tmp_path):
    target = tmp_path / "m_iter_10.caffemodel"
    code = textwrap.dedent(f"""
        import os, signal
        from torchcaffe import protoio
        with protoio.atomic_write({str(target)!r}) as f:
            f.write(b"x" * 100000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """)
    r = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), timeout=120)
    assert r.returncode == -signal.SIGKILL
    left = [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    assert len(left) == 1 and left[0].startswith(".m_iter_10.caffemodel.tmp-")
    # one of a live process (this one's parent) is left alone
    live = f".other.tmp-{protoio._HOST}-{os.getppid()}-0123abcd"
    (tmp_path / live).write_bytes(b"busy")
    with protoio.atomic_write(tmp_path / "m_iter_20.caffemodel") as f:  # the next snapshot in the folder
        f.write(b"ok")
    assert sorted(os.listdir(tmp_path)) == sorted([live, "m_iter_20.caffemodel"])


def test_write_errors_name_the_target_not_the_temporary(tmp_path):
    import errno

    with pytest.raises(OSError) as e:
        with protoio.atomic_write(tmp_path / "weights.caffemodel") as f:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(e.value).startswith(f"[Errno {errno.ENOSPC}] cannot write {tmp_path / 'weights.caffemodel'}: No "
                                   f"space left on device")
    assert ".tmp-" not in str(e.value) and not os.listdir(tmp_path)


# ---- 4. -log_dir and -gpu mistakes ---------------------------------------------------------------------

def test_log_dir_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path, monkeypatch, capfd):
    d = write_tiny(tmp_path / "t", max_iter=1)
    monkeypatch.chdir(d)
    (d / "afile").write_text("x")
    for bad, what in (("afile", "is a file"), ("afile/logs", "cannot write a log file there")):
        assert cli.main(["train", "-solver", "solver.prototxt", "-log_dir", bad]) == 1
        err = capfd.readouterr().err
        assert err.strip() == f"-log_dir {bad}: {what}" + (", not a folder" if what == "is a file" else
                                                           ": Not a directory"), err


def test_gpu_that_is_not_there_is_one_line_everywhere(tmp_path, monkeypatch, capfd):
    ids = [0] if not torch.cuda.is_available() else [torch.cuda.device_count() + 3]
    want = "no CUDA device is available" if not torch.cuda.is_available() else "do not exist"
    with pytest.raises(mode.DeviceError, match=rf"^-gpu {ids[0]}: .*{want}"):
        caffe.set_device(ids[0])
    d = write_tiny(tmp_path / "t", max_iter=1)
    monkeypatch.chdir(d)
    capfd.readouterr()
    for argv in (["train", "-solver", "solver.prototxt"], ["test", "-model", "net.prototxt", "-weights", "x"],
                 ["time", "-model", "net.prototxt"], ["device_query"]):
        assert cli.main(argv + ["-gpu", str(ids[0])]) == 1
        last = _fatal_line(capfd.readouterr().err)
        assert want in last and "Error:" not in last, last
        assert f"-gpu {ids[0]}: " in last or argv == ["device_query"], last
