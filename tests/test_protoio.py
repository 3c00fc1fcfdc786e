"""Caffe's files through torchcaffe.protoio: prototxt, binaryproto, caffemodel (> 64 MB), HDF5 weights, atomic
writes, blob conversion and Caffe's shape rule."""
import os
import shutil

import h5py
import numpy as np
import pytest

from torchcaffe import protoio
from torchcaffe.blob import Blob
from torchcaffe.proto import caffe_pb2

from format_helpers import V1_DIR, golden, leftovers, net_from_text

CFE = protoio.CaffeFormatError
COLORNET = golden("data_and_colornet", "narrow_colornet.caffemodel")


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ---------------------------------------------------------------------------------------------------------
# prototxt
# ---------------------------------------------------------------------------------------------------------

def test_read_prototxt_golden_and_class_or_instance():
    path = golden("data_and_colornet", "narrow_colornet_deploy.prototxt")
    a = protoio.read_prototxt(path, caffe_pb2.NetParameter)
    b = caffe_pb2.NetParameter(name="stale")
    b.layer.add().name = "stale"
    assert protoio.read_prototxt(path, b) is b  # an instance is cleared, then filled
    assert a == b and a.layer[0].name != "stale" and len(a.layer) > 10
    text = open(path).read()
    assert protoio.parse_prototxt_string(text, caffe_pb2.NetParameter) == a


@pytest.mark.parametrize("text,line,col,what", [
    ('name: "x"\nlayer {\n  name: "a"\n  typo: 3\n}\n', 4, 3, 'no field named "typo"'),
    ('name: "x"\nlayer {\n  name: "a"\n', 3, 9, 'Expected "}"'),
    ('name: "x"\n\nname: "y"\n', 3, 7, 'multiple "name"'),
    ('layer {\n  convolution_param { num_output: -3 }\n}\n', 2, 35, "Value out of range: -3"),
    ('force_backward: maybe\n', 1, 17, "true"),
])
def test_corrupt_prototxt_names_line_and_column(tmp_path, text, line, col, what):
    p = tmp_path / "bad.prototxt"
    p.write_text(text)
    with pytest.raises(CFE) as e:
        protoio.read_prototxt(p, caffe_pb2.NetParameter)
    msg = one_line(e)
    assert msg.startswith(f"{p}:{line}:{col}: "), msg
    assert what in msg
    with pytest.raises(CFE, match=rf"^<string>:{line}:{col}: "):
        protoio.parse_prototxt_string(text, caffe_pb2.NetParameter())
    with pytest.raises(CFE, match=rf"^net\.pt:{line}:{col}: "):
        protoio.parse_prototxt_string(text, caffe_pb2.NetParameter, source="net.pt")


def test_missing_directory_and_binary_files(tmp_path):
    missing = tmp_path / "nope.prototxt"
    for fn in (lambda p: protoio.read_prototxt(p, caffe_pb2.NetParameter),
               lambda p: protoio.read_binaryproto(p, caffe_pb2.BlobProto),
               protoio.read_net_param, protoio.read_net_weights, protoio.read_solver_param):
        with pytest.raises(CFE) as e:
            fn(missing)
        assert one_line(e) == f"{missing}: no such file"
    with pytest.raises(CFE, match="is a directory"):
        protoio.read_prototxt(tmp_path, caffe_pb2.NetParameter)
    with pytest.raises(CFE, match=r"bin\.prototxt:1: not UTF-8"):
        p = tmp_path / "bin.prototxt"
        p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
        protoio.read_prototxt(p, caffe_pb2.NetParameter)


def test_net_and_solver_readers_tell_the_kinds_apart(tmp_path):
    solver = golden("solver", "solver_adam_step.prototxt")
    with pytest.raises(CFE) as e:
        protoio.read_net_param(solver)
    assert one_line(e).startswith(f"{solver}:1:") and "solver definition, not a net" in str(e.value)
    net = golden("layers", "layers.prototxt")
    with pytest.raises(CFE) as e:
        protoio.read_solver_param(net)
    assert "net definition, not a solver" in one_line(e)
    empty = tmp_path / "empty.prototxt"
    empty.write_text('name: "nothing"\n')
    with pytest.raises(CFE, match="defines no layers"):
        protoio.read_net_param(empty)


def test_golden_solvers_read():
    s = protoio.read_solver_param(golden("solver", "solver_adam_step.prototxt"))
    assert isinstance(s, caffe_pb2.SolverParameter) and s.base_lr > 0
    assert s.type == "Adam"


def test_write_prototxt_round_trip(tmp_path):
    net = protoio.read_net_param(golden("data_and_colornet", "narrow_colornet_deploy.prototxt"))
    p = tmp_path / "out.prototxt"
    protoio.write_prototxt(net, p)
    assert protoio.read_net_param(p) == net
    assert protoio.to_prototxt_string(net) == p.read_text()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------
# binaryproto / caffemodel
# ---------------------------------------------------------------------------------------------------------

def test_golden_caffemodel_round_trip(tmp_path):
    net = protoio.read_binaryproto(COLORNET, caffe_pb2.NetParameter)
    p = tmp_path / "copy.caffemodel"
    protoio.write_binaryproto(net, p)
    again = protoio.read_binaryproto(p, caffe_pb2.NetParameter())
    assert again == net
    assert protoio.read_net_weights(p) == protoio.read_net_weights(COLORNET)
    for l in again.layer:
        for bp in l.blobs:
            assert bp.HasField("shape")
            assert protoio.proto_to_array(bp).shape == protoio.proto_shape(bp)


@pytest.mark.parametrize("keep", [0.5, 0.9, -1, 20])
def test_truncated_caffemodel(tmp_path, keep):
    data = open(COLORNET, "rb").read()
    n = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    p = tmp_path / "cut.caffemodel"
    p.write_bytes(data[:n])
    with pytest.raises(CFE) as e:
        protoio.read_net_weights(p)
    msg = one_line(e)
    assert msg.startswith(f"{p}: ") and "truncated" in msg and "caffe.NetParameter" in msg
    with pytest.raises(CFE, match="truncated"):
        protoio.read_binaryproto(p, caffe_pb2.NetParameter)


def test_corrupt_and_wrong_kind_weight_files(tmp_path):
    p = tmp_path / "noise.caffemodel"
    p.write_bytes(bytes([0xFF]) * 64)
    with pytest.raises(CFE, match=r"noise\.caffemodel: cannot parse"):
        protoio.read_net_weights(p)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(CFE, match="holds no layers"):
        protoio.read_net_weights(empty)
    text = tmp_path / "deploy.caffemodel"
    shutil.copy(golden("data_and_colornet", "narrow_colornet_deploy.prototxt"), text)
    with pytest.raises(CFE) as e:
        protoio.read_net_weights(text)
    assert "text prototxt" in one_line(e)


def test_caffemodel_over_64_mb_round_trip(tmp_path):
    n = 18_500_000  # 74 MB of floats: over protobuf's old 64 MB default limit
    values = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    values[:3] = [np.inf, -0.0, np.finfo(np.float32).tiny]
    net = caffe_pb2.NetParameter(name="big")
    layer = net.layer.add(name="fc_big", type="InnerProduct")
    layer.blobs.add().CopyFrom(protoio.array_to_proto(values.reshape(1850, 10000)))
    layer.blobs.add().CopyFrom(protoio.array_to_proto(np.arange(1850, dtype=np.float32)))
    p = tmp_path / "big.caffemodel"
    try:
        protoio.write_binaryproto(net, p)
        assert os.path.getsize(p) > 70 * 2 ** 20
        back = protoio.read_net_weights(p)
        got = protoio.proto_to_array(back.layer[0].blobs[0])
        assert got.shape == (1850, 10000) and got.dtype == np.float32
        assert np.array_equal(got.ravel(), values) and np.signbit(got.ravel()[1])
        np.testing.assert_array_equal(protoio.proto_to_array(back.layer[0].blobs[1]), np.arange(1850))
    finally:
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------------------

class Crash(Exception):
    pass


def test_atomic_write_crash_keeps_old_file(tmp_path):
    p = tmp_path / "snap.caffemodel"
    p.write_bytes(b"old contents")
    with pytest.raises(Crash):
        with protoio.atomic_write(p) as f:
            f.write(b"half of the new")
            assert leftovers(tmp_path)  # the temporary file is beside the target while writing
            raise Crash()
    assert p.read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with protoio.atomic_write(p, "w") as f:
            f.write("text")
            raise KeyboardInterrupt()
    assert p.read_bytes() == b"old contents" and leftovers(tmp_path) == []
    # no old file: nothing appears
    q = tmp_path / "fresh.bin"
    with pytest.raises(Crash):
        with protoio.atomic_write(q) as f:
            f.write(b"x")
            raise Crash()
    assert not q.exists() and leftovers(tmp_path) == []


def test_atomic_write_success_and_mode(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    os.chmod(p, 0o640)
    with protoio.atomic_write(p, "w") as f:
        f.write("new ü")
    assert p.read_text(encoding="utf-8") == "new ü"
    assert (os.stat(p).st_mode & 0o777) == 0o640
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError):
        with protoio.atomic_write(p, "rb"):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with protoio.atomic_write(tmp_path / "no_dir" / "x.bin"):
            pass


def test_write_binaryproto_crash_mid_write(tmp_path, monkeypatch):
    p = tmp_path / "w.caffemodel"
    shutil.copy(COLORNET, p)
    old = p.read_bytes()
    net = caffe_pb2.NetParameter(name="new")
    net.layer.add(name="x")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(protoio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        protoio.write_binaryproto(net, p)
    monkeypatch.undo()
    assert p.read_bytes() == old and leftovers(tmp_path) == []
    protoio.write_binaryproto(net, p)
    assert protoio.read_binaryproto(p, caffe_pb2.NetParameter) == net


def test_write_net_hdf5_crash_mid_write(tmp_path, monkeypatch):
    p = tmp_path / "w.caffemodel.h5"
    p.write_bytes(b"previous")
    net = caffe_pb2.NetParameter()
    for k in range(3):
        net.layer.add(name=f"l{k}").blobs.add().CopyFrom(protoio.array_to_proto(np.ones((2, 2))))
    real = protoio.proto_to_array
    calls = []

    def failing(bp, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise Crash()
        return real(bp, *a, **kw)

    monkeypatch.setattr(protoio, "proto_to_array", failing)
    with pytest.raises(Crash):
        protoio.write_net_hdf5(net, p)
    assert p.read_bytes() == b"previous" and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------
# blobs
# ---------------------------------------------------------------------------------------------------------

def test_blob_to_proto_and_back():
    b = Blob((2, 3, 4))
    b.data[...] = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    b.diff[...] = -b.data
    bp = protoio.blob_to_proto(b)
    assert list(bp.shape.dim) == [2, 3, 4] and len(bp.data) == 24 and len(bp.diff) == 0
    assert not any(bp.HasField(f) for f in ("num", "channels", "height", "width"))
    np.testing.assert_array_equal(protoio.proto_to_array(bp), b.data)
    assert protoio.proto_to_array(bp, diff=True) is None
    bpd = protoio.blob_to_proto(b, write_diff=True)
    np.testing.assert_array_equal(protoio.proto_to_array(bpd, diff=True), b.diff)
    # the same bytes Caffe's Blob::ToProto gives: shape, then packed data (what add_data in a loop gives)
    ref = caffe_pb2.BlobProto()
    ref.shape.dim.extend([2, 3, 4])
    ref.data.extend(b.data.ravel().tolist())
    assert ref == bp
    # a 0-axis blob has no shape field at all, as BVLC's Blob::ToProto writes it (see test_scalar_param_blobs)
    s = protoio.blob_to_proto(np.float32(2.5))
    assert not s.HasField("shape") and protoio.proto_shape(s) == () and protoio.proto_to_array(s) == 2.5
    assert protoio.proto_to_array(protoio.blob_to_proto(np.zeros((0, 3)))).shape == (0, 3)


def test_legacy_and_double_blobs():
    bp = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3, data=[1, 2, 3, 4, 5, 6])
    assert protoio.proto_shape(bp) == (1, 1, 2, 3)
    assert protoio.proto_to_array(bp).shape == (1, 1, 2, 3)
    only_width = caffe_pb2.BlobProto(width=0)  # any legacy field set means the legacy 4-D shape
    assert protoio.proto_shape(only_width) == (0, 0, 0, 0)
    dbl = caffe_pb2.BlobProto(data=[9.0] * 2, double_data=[0.1, 1e-40], double_diff=[3.0, 4.0])
    dbl.shape.dim.append(2)
    arr = protoio.proto_to_array(dbl)
    assert arr.dtype == np.float32 and arr[0] == np.float32(0.1) and arr[1] == np.float32(1e-40)
    np.testing.assert_array_equal(protoio.proto_to_array(dbl, diff=True), [3, 4])
    assert protoio.proto_to_array(dbl, dtype=np.float64)[0] == 0.1
    bad = caffe_pb2.BlobProto(data=[1, 2, 3])
    bad.shape.dim.extend([2, 2])
    with pytest.raises(CFE, match=r"3 data values but its shape 2 2 \(4\) needs 4"):
        protoio.proto_to_array(bad)
    assert protoio.shape_string((64, 3, 3, 3)) == "64 3 3 3 (1728)" and protoio.shape_string(()) == "(1)"


def test_shape_equals_is_caffes_rule():
    legacy = lambda *d: caffe_pb2.BlobProto(num=d[0], channels=d[1], height=d[2], width=d[3])  # noqa: E731
    assert protoio.shape_equals((6,), legacy(1, 1, 1, 6))            # V1 bias
    assert protoio.shape_equals((12, 128), legacy(1, 1, 12, 128))    # V1 InnerProduct weight
    assert protoio.shape_equals((6, 3, 3, 3), legacy(6, 3, 3, 3))
    assert protoio.shape_equals((), legacy(1, 1, 1, 1))
    assert not protoio.shape_equals((6, 1), legacy(1, 1, 1, 6))      # padding is on the left only
    assert not protoio.shape_equals((12, 128), legacy(12, 128, 1, 1))
    assert not protoio.shape_equals((1, 1, 1, 1, 6), legacy(1, 1, 1, 6))  # more than 4 axes never match
    nd = caffe_pb2.BlobProto()
    nd.shape.dim.extend([1, 6])
    assert protoio.shape_equals((1, 6), nd) and not protoio.shape_equals((6,), nd)
    assert protoio.shape_equals(Blob((1, 6)), nd)                    # a Blob is a target too
    assert protoio.shape_equals((), caffe_pb2.BlobProto())
    assert protoio.shapes_match(legacy(1, 1, 1, 6), (6,)) and not protoio.shapes_match(nd, (6,))


# ---------------------------------------------------------------------------------------------------------
# net weights: golden caffemodels, HDF5
# ---------------------------------------------------------------------------------------------------------

def test_golden_caffemodels_read_as_weights():
    deploy = protoio.read_net_param(golden("data_and_colornet", "narrow_colornet_deploy.prototxt"))
    weights = protoio.read_net_weights(COLORNET)
    names = {l.name for l in deploy.layer}
    assert {l.name for l in weights.layer if l.blobs} <= names
    conv = [l for l in weights.layer if l.type == "Convolution" and l.blobs]
    assert conv and all(protoio.proto_to_array(bp).ndim >= 1 for l in conv for bp in l.blobs)
    init = protoio.read_net_weights(golden("layers", "init.caffemodel"))
    assert any(l.type == "BatchNorm" and len(l.blobs) == 3 for l in init.layer)


def _shared_net():
    net = net_from_text('''
      name: "h5"
      layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 } } }
      layer { name: "ip_a" type: "InnerProduct" bottom: "x" top: "a"
              param { name: "shared_w" } param { name: "bias_a" } }
      layer { name: "ip_b" type: "InnerProduct" bottom: "x" top: "b" param { name: "shared_w" } }
      layer { name: "block/conv" type: "Convolution" bottom: "x" top: "c" }''')
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    for name, arrays in (("ip_a", [w, np.arange(3.0)]), ("ip_b", [w, np.ones(3)]),
                         ("block/conv", [rng.standard_normal((2, 1, 3, 3))])):
        layer = next(l for l in net.layer if l.name == name)
        for a in arrays:
            a = np.asarray(a, dtype=np.float32)
            layer.blobs.add().CopyFrom(protoio.array_to_proto(a, diff=a * 10))
    return net


def test_write_net_hdf5_layout_and_read_back(tmp_path):
    net = _shared_net()
    p = tmp_path / "w.caffemodel.h5"
    protoio.write_net_hdf5(net, p, diff=True)
    assert leftovers(tmp_path) == []
    with h5py.File(p, "r") as f:
        assert set(f) == {"data", "diff"}
        assert set(f["data"]) == {"data", "ip_a", "ip_b", "block"}
        assert len(f["data/data"]) == 0                      # every layer has its group
        assert set(f["data/ip_a"]) == {"0", "1"}
        assert set(f["data/ip_b"]) == {"1"}                  # the shared weight is written by its owner only
        assert set(f["diff/ip_b"]) == {"0", "1"}             # diffs are written regardless of sharing
        assert f["data/ip_a/0"].dtype == np.float32 and f["data/ip_a/0"].shape == (3, 4)
        np.testing.assert_array_equal(f["diff/ip_a/1"][()], np.arange(3.0) * 10)
        assert f["data/block/conv/0"].shape == (2, 1, 3, 3)
    back = protoio.read_net_weights(p)
    by_name = {l.name: l for l in back.layer}
    assert set(by_name) == {"data", "ip_a", "ip_b", "block/conv"}
    src = {l.name: l for l in net.layer}
    for name in ("ip_a", "block/conv"):
        assert len(by_name[name].blobs) == len(src[name].blobs)
        for got, want in zip(by_name[name].blobs, src[name].blobs):
            assert protoio.shape_equals(protoio.proto_shape(want), got)
            np.testing.assert_array_equal(protoio.proto_to_array(got), protoio.proto_to_array(want))
            assert len(got.diff) == 0                        # Caffe's HDF5 copy ignores diff/
    ipb = by_name["ip_b"].blobs
    assert protoio.is_missing_blob(ipb[0]) and not protoio.is_missing_blob(ipb[1])
    np.testing.assert_array_equal(protoio.proto_to_array(ipb[1]), np.ones(3))
    assert not any(protoio.is_missing_blob(bp) for l in net.layer for bp in l.blobs)
    # without diff: no diff group
    q = tmp_path / "nodiff.h5"
    protoio.write_net_hdf5(net, q)
    with h5py.File(q, "r") as f:
        assert set(f) == {"data"}


def test_hdf5_detection_and_errors(tmp_path):
    net = _shared_net()
    odd = tmp_path / "weights.bin"            # HDF5 content under another name is recognised by signature
    protoio.write_net_hdf5(net, odd)
    assert protoio.is_hdf5_weights(odd) and protoio.is_hdf5_weights("x.caffemodel.h5")
    assert not protoio.is_hdf5_weights(COLORNET)
    assert {l.name for l in protoio.read_net_weights(odd).layer} == {"data", "ip_a", "ip_b", "block/conv"}
    cut = tmp_path / "cut.h5"
    cut.write_bytes(odd.read_bytes()[:600])
    with pytest.raises(CFE) as e:
        protoio.read_net_weights(cut)
    assert one_line(e).startswith(f"{cut}: ")
    nodata = tmp_path / "nodata.h5"
    with h5py.File(nodata, "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(CFE, match="no 'data' group"):
        protoio.read_net_weights(nodata)
    dup = caffe_pb2.NetParameter()
    dup.layer.add(name="same")
    dup.layer.add(name="same")
    with pytest.raises(CFE, match="two layers are named 'same'"):
        protoio.write_net_hdf5(dup, tmp_path / "dup.h5")
    assert leftovers(tmp_path) == []


def test_v1_caffemodel_through_hdf5(tmp_path):
    # legacy-shaped V1 blobs written to HDF5 keep their 4-D legacy shape (as Caffe would after FromProto)
    w = protoio.read_net_weights(os.path.join(V1_DIR, "v1_net.caffemodel"))
    p = tmp_path / "v1.caffemodel.h5"
    protoio.write_net_hdf5(w, p)
    back = {l.name: l for l in protoio.read_net_weights(p).layer}
    fc6 = back["fc6"].blobs[0]
    assert protoio.proto_shape(fc6) == (1, 1, 12, 128) and not protoio.shape_equals((12, 128), fc6)
