"""The Data layer: BVLC Caffe's golden batches, TRAIN randomness, resumption, sharding, encoded records."""
import gc
import os
import threading

os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses get 1 explicitly (data_helpers)

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from torchcaffe.blob import Blob
from torchcaffe.layer import LayerError, create_layer
from torchcaffe.proto import caffe_pb2

from data_helpers import GOLDEN_DATA, write_lmdb

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def layer_param(text: str) -> caffe_pb2.LayerParameter:
    lp = caffe_pb2.LayerParameter()
    text_format.Parse(text, lp)
    return lp


def make_layer(text: str, phase: int, ntop: int = 2):
    layer = create_layer(layer_param(text), phase, "cpu")
    top = [Blob() for _ in range(ntop)]
    layer.setup([], top)
    return layer, top


def run(layer, top, n):
    out = []
    for _ in range(n):
        layer.forward([], top)
        out.append((top[0].data.copy(), top[1].data.copy() if len(top) > 1 else None))
    return out


def golden_param():
    net = caffe_pb2.NetParameter()
    text_format.Parse((GOLDEN_DATA / "data_layer.prototxt").read_text(), net)
    return net.layer[0]


def test_golden_batches_layer_direct(monkeypatch):
    monkeypatch.chdir(GOLDEN_DATA)  # source: "datum_lmdb", relative to the working directory as in Caffe
    z = np.load(GOLDEN_DATA / "data_layer_golden.npz")
    layer = create_layer(golden_param(), TEST, "cpu")
    top = [Blob(), Blob()]
    layer.setup([], top)
    assert top[0].shape == (3, 3, 16, 16) and top[1].shape == (3,)
    for b in range(2):  # batch 1 wraps around the five records
        layer.forward([], top)
        np.testing.assert_allclose(top[0].data, z[f"batch{b}_data"], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(top[1].data, z[f"batch{b}_label"])
    layer.close()


def test_golden_batches_through_net(monkeypatch):
    import torchcaffe as caffe

    monkeypatch.chdir(GOLDEN_DATA)
    z = np.load(GOLDEN_DATA / "data_layer_golden.npz")
    net = caffe.Net(str(GOLDEN_DATA / "data_layer.prototxt"), caffe.TEST)
    for b in range(2):
        net.forward()
        np.testing.assert_allclose(net.blobs["data"].data, z[f"batch{b}_data"], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(net.blobs["label"].data, z[f"batch{b}_label"])
    st = net.state()["data"]
    assert st["offset"] == 6 and st["batch"] == 2


def test_missing_source_names_layer_and_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LayerError, match=r"layer 'mydata'.*'no_such_lmdb' does not exist"):
        make_layer('name: "mydata" type: "Data" top: "data" data_param { source: "no_such_lmdb" batch_size: 2 '
                   'backend: LMDB }', TEST)


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    """12 records of 3x10x12 whose pixels encode (record, h, w); labels 100 + record."""
    path = tmp_path_factory.mktemp("db") / "lmdb"
    imgs = []
    for r in range(12):
        base = (np.arange(10 * 12).reshape(10, 12) + 0).astype(np.uint8)
        imgs.append(np.stack([base, np.full((10, 12), r, np.uint8), base[::-1]]))
    write_lmdb(path, imgs, labels=[100 + r for r in range(12)])
    return str(path)


TRAIN_PROTO = ('name: "data" type: "Data" top: "data" top: "label" '
               'transform_param {{ crop_size: 6 mirror: true scale: 0.5 mean_value: 10 }} '
               'data_param {{ source: "{src}" batch_size: 5 backend: LMDB prefetch: {pf} }}')


def test_train_is_seeded_and_resumes_exactly(small_db):
    torch.manual_seed(1701)  # what caffe.set_random_seed(1701) does for torch
    a, ta = make_layer(TRAIN_PROTO.format(src=small_db, pf=4), TRAIN)
    ref = run(a, ta, 7)
    torch.manual_seed(1701)
    b, tb = make_layer(TRAIN_PROTO.format(src=small_db, pf=1), TRAIN)
    first = run(b, tb, 3)
    st = b.state()
    assert st["offset"] == 15 and st["batch"] == 3
    import json

    st = json.loads(json.dumps(st))  # JSON-serialisable
    rest_b = run(b, tb, 4)
    for x, y in zip(ref, first + rest_b):  # prefetch depth does not change the sequence
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
    torch.manual_seed(5)  # another global seed: the state's seed wins
    c, tc = make_layer(TRAIN_PROTO.format(src=small_db, pf=2), TRAIN)
    run(c, tc, 1)
    c.set_state(st)
    rest_c = run(c, tc, 4)
    for x, y in zip(ref[3:], rest_c):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])
    # labels: records in key order, wrapping around (12 records, batches of 5)
    labels = np.concatenate([r[1] for r in ref])
    np.testing.assert_array_equal(labels, 100 + (np.arange(35) % 12))
    # the record's identity is channel 1 (mean 10, scale 0.5): check it against the label
    rec = np.concatenate([r[0][:, 1, 0, 0] for r in ref]) / 0.5 + 10
    np.testing.assert_array_equal(rec, labels - 100)
    # another seed gives other crops
    torch.manual_seed(1702)
    d, td = make_layer(TRAIN_PROTO.format(src=small_db, pf=4), TRAIN)
    other = run(d, td, 2)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(ref, other))
    for lay in (a, b, c, d):
        lay.close()


def test_train_crops_cover_positions(small_db):
    torch.manual_seed(3)
    layer, top = make_layer(TRAIN_PROTO.format(src=small_db, pf=4), TRAIN)
    seen = set()
    for data, _ in run(layer, top, 160):
        v = data[:, 0, 0, 0] / 0.5 + 10  # pixel value h * 12 + w at the crop's top-left (or top-right)
        v2 = data[:, 0, 0, -1] / 0.5 + 10
        first = np.minimum(v, v2).astype(int)
        mirrored = v > v2
        seen.update(zip(first // 12, first % 12, mirrored))
    layer.close()
    assert seen == {(h, w, m) for h in range(5) for w in range(7) for m in (False, True)}


def test_sharding_follows_caffe_skip(small_db, monkeypatch):
    import torchcaffe.builtin.data as data_mod

    text = ('name: "data" type: "Data" top: "data" top: "label" '
            f'data_param {{ source: "{small_db}" batch_size: 5 backend: LMDB }}')
    got = {}
    for rank in (0, 1):
        monkeypatch.setattr(data_mod, "_shard", lambda rank=rank: (rank, 2))
        layer, top = make_layer(text, TRAIN)
        got[rank] = np.concatenate([lab for _, lab in run(layer, top, 3)]) - 100
        layer.close()
        layer, top = make_layer(text, TEST)  # TEST: every rank reads everything, as Caffe
        np.testing.assert_array_equal(run(layer, top, 1)[0][1] - 100, np.arange(5))
        layer.close()
    np.testing.assert_array_equal(got[0], (np.arange(0, 30, 2) % 12))
    np.testing.assert_array_equal(got[1], (np.arange(1, 30, 2) % 12))


def test_encoded_records_force_gray_and_legacy_fields(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8) for _ in range(3)]
    write_lmdb(tmp_path / "enc", imgs, encoded=True)
    layer, top = make_layer(f'name: "d" type: "Data" top: "data" top: "label" '
                            f'transform_param {{ force_gray: true }} '
                            f'data_param {{ source: "{tmp_path / "enc"}" batch_size: 2 backend: LMDB '
                            f'crop_size: 4 scale: 2 }}', TEST)  # legacy crop_size / scale in data_param
    assert top[0].shape == (2, 1, 4, 4)
    layer.forward([], top)
    for i in range(2):
        g = cv2.imdecode(cv2.imencode(".png", imgs[i])[1], cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(top[0].data[i, 0], g[2:6, 3:7].astype(np.float32) * 2)
    np.testing.assert_array_equal(top[1].data, [0, 1])
    layer.close()


def test_one_top_and_thread_shutdown(small_db):
    before = {t.ident for t in threading.enumerate()}
    layer, top = make_layer(f'name: "d" type: "Data" top: "data" data_param {{ source: "{small_db}" '
                            f'batch_size: 4 backend: LMDB }}', TEST, ntop=1)
    layer.forward([], top)
    assert top[0].shape == (4, 3, 10, 12)
    np.testing.assert_array_equal(top[0].data[2, 1], np.full((10, 12), 2, np.float32))
    new = [t for t in threading.enumerate() if t.ident not in before]
    assert new and all(t.daemon for t in new)
    del layer
    gc.collect()
    for t in new:
        t.join(5)
        assert not t.is_alive()


def test_bad_record_error_names_layer_and_key(tmp_path):
    import lmdb

    write_lmdb(tmp_path / "db", [np.zeros((3, 4, 4), np.uint8)] * 2)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"00000001", b"\xff\xff not a datum")
    env.close()
    layer, top = make_layer(f'name: "bad" type: "Data" top: "data" data_param {{ source: "{tmp_path / "db"}" '
                            f'batch_size: 2 backend: LMDB }}', TEST, ntop=1)
    with pytest.raises(LayerError, match=r"layer 'bad'.*record b'00000001'"):
        layer.forward([], top)
    layer.close()
