"""torchcaffe.io against BVLC pycaffe's caffe.io, as recorded in a real BVLC build
(``tests/bvlc_golden/make_io_golden.py`` -> ``io_golden.npz``): Transformer pre/de-processing, oversample,
resize through scipy's zoom and of a constant image, BlobProto / BlobProtoVector / Datum conversion (the
serialized bytes too) and load_image."""
from __future__ import annotations

import numpy as np
import pytest

from bvlc_golden import trainval_case
from torchcaffe import io
from torchcaffe.proto import caffe_pb2

Z = np.load(trainval_case.HERE / "io_golden.npz")


def case(name):
    if f"{name}/ok" not in Z.files:
        pytest.fail(f"case {name} was not recorded in BVLC")
    ins = {k.split("/")[2]: Z[k] for k in Z.files if k.startswith(f"{name}/in/")}
    outs = {k.split("/")[2]: Z[k] for k in Z.files if k.startswith(f"{name}/out/")}
    return ins, outs


def same(actual, expected, rtol=1e-6, atol=1e-6):
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def assert_proto_array(got, bvlc):
    """BlobProto -> array: BVLC's values; dtype float64 as pycaffe gives with the protobuf of Caffe's day
    (``np.array`` of a list of Python floats).  The BVLC build here runs protobuf 7, whose repeated float
    field turns into float32 under ``np.array``: same values, a library artifact torchcaffe does not copy."""
    assert got.dtype == np.float64 and bvlc.dtype in (np.float32, np.float64)
    assert got.shape == bvlc.shape and np.array_equal(got, bvlc)


def test_recorded_cases():
    # everything recorded but the uint8 Datum writer, which needs ndarray.tostring (gone in numpy 2)
    assert sum(k.endswith("/ok") for k in Z.files) == 11
    assert [f.split(":")[0] for f in Z["failed"]] == ["datum_uint8"]


@pytest.mark.parametrize("name", ["pre_channel_mean", "pre_full_mean"])
def test_transformer(name):
    ins, outs = case(name)
    t = io.Transformer({"data": (2, 3, 6, 7)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255.0)
    t.set_mean("data", ins["mean"])
    t.set_input_scale("data", 0.017)
    pre = t.preprocess("data", ins["img"])
    assert pre.dtype == outs["pre"].dtype
    same(pre, outs["pre"], rtol=1e-6, atol=1e-5)
    same(t.deprocess("data", outs["pre"]), outs["de"], atol=1e-6)


def test_transformer_transpose_only():
    ins, outs = case("pre_transpose_only")
    t = io.Transformer({"x": (1, 3, 6, 7)})
    t.set_transpose("x", (2, 0, 1))
    assert np.array_equal(t.preprocess("x", ins["img"]), outs["pre"])


def test_oversample():
    ins, outs = case("oversample")
    crops = io.oversample(list(ins["ims"]), (4, 5))
    assert crops.dtype == outs["crops"].dtype and np.array_equal(crops, outs["crops"])


def test_resize_zoom_and_constant():
    ins, outs = case("resize_zoom")
    same(io.resize_image(ins["two"], (9, 13)), outs["two_up"])
    same(io.resize_image(ins["two"], (3, 4)), outs["two_down"])
    same(io.resize_image(ins["four"], (7, 8), interp_order=0), outs["four_o0"])
    ins, outs = case("resize_constant")
    r = io.resize_image(ins["c"], (8, 3))
    assert r.dtype == outs["out"].dtype and np.array_equal(r, outs["out"])


def test_blobproto():
    ins, outs = case("blobproto")
    bp = io.array_to_blobproto(ins["a"], ins["d"])
    ref = caffe_pb2.BlobProto.FromString(outs["proto"].tobytes())
    assert bp == ref
    for got, key in ((io.blobproto_to_array(ref), "back"), (io.blobproto_to_array(ref, return_diff=True), "back_diff")):
        assert_proto_array(got, outs[key])
    legacy = caffe_pb2.BlobProto.FromString(outs["legacy_proto"].tobytes())
    assert np.array_equal(io.blobproto_to_array(legacy), outs["legacy"])
    assert io.blobproto_to_array(legacy).shape == (2, 1, 2, 3)
    assert np.array_equal(io.blobproto_to_array(legacy, True), outs["legacy_diff"])


def test_blobprotovector():
    ins, outs = case("blobprotovector")
    arrs = [ins[f"a{i}"] for i in range(3)]
    s = io.arraylist_to_blobprotovector_str(arrs)
    assert caffe_pb2.BlobProtoVector.FromString(s) == caffe_pb2.BlobProtoVector.FromString(outs["str"].tobytes())
    back = io.blobprotovector_str_to_arraylist(outs["str"].tobytes())
    for i in range(3):
        assert_proto_array(back[i], outs[f"b{i}"])


def test_datum():
    ins, outs = case("datum_float")
    d = io.array_to_datum(ins["arr"], label=5)
    assert d == caffe_pb2.Datum.FromString(outs["datum"].tobytes())
    got = io.datum_to_array(d)
    assert got.dtype == outs["back"].dtype and np.array_equal(got, outs["back"])
    ins, outs = case("datum_uint8_parsed")
    got = io.datum_to_array(caffe_pb2.Datum.FromString(ins["datum"].tobytes()))
    assert got.dtype == outs["back"].dtype and np.array_equal(got, outs["back"])


def test_load_image(tmp_path):
    ins, outs = case("load_image")
    path = tmp_path / "img.png"
    path.write_bytes(ins["png"].tobytes())
    for color, key in ((True, "color"), (False, "gray")):
        img = io.load_image(str(path), color=color)
        assert img.dtype == outs[key].dtype
        same(img, outs[key], atol=1e-6)
