"""tools/build_lmdb.py on a synthetic ImageNet-shaped tree: splits, labels, keys, the gray rule, broken files,
Caffe's Datum bytes, kill-and-resume, and reading the result with the Data layer."""
import json
import os
import signal
import subprocess
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # subprocesses get 1 explicitly (data_helpers)

import numpy as np
import pytest

from data_helpers import (PYTHON, BUILD_LMDB, WNIDS, datum_of, env_for_subprocess,
                          make_imagenet_tree, read_lmdb, run_build, write)

R = 24  # a small --resize keeps the tests fast


@pytest.fixture(scope="module")
def bl():
    from colorization import build_lmdb

    return build_lmdb


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc")
    exp = make_imagenet_tree(root)
    return root, exp


def build(bl, *args):
    assert bl.main(["--quiet", "--workers", "0", *map(str, args)]) == 0


@pytest.fixture(scope="module")
def built(bl, tree, tmp_path_factory):
    root, _ = tree
    out = tmp_path_factory.mktemp("out") / "db"
    build(bl, "--root", root, "--split", "all", "--out", out, "--resize", R, "--val-first", 6,
          "--test-last", 10, "--vgg-last", 15)
    return out


def _manifest(path):
    with open(os.path.join(path, "manifest.json")) as f:
        return json.load(f)


def test_train_split_counts_labels_keys_and_reasons(tree, built):
    _, exp = tree
    m = _manifest(built / "train")
    train = exp["train"]
    ok = {k for k, e in train.items() if e["status"] == "ok"}
    gray = {k for k, e in train.items() if e["status"] == "gray"}
    skip = {k: e["reason"] for k, e in train.items() if e["status"] == "skip"}
    assert m["inputs"] == len(train)
    assert m["count"] == len(ok)
    assert set(m["gray"]) == gray
    assert set((built / "train" / "gray.txt").read_text().split()) == gray
    assert set(m["skipped"]) == set(skip)
    for k, reason in skip.items():
        assert reason in m["skipped"][k], (k, m["skipped"][k])
    conv = {k: e["reason"] for k, e in train.items() if e["status"] == "ok" and e["reason"]}
    assert set(m["converted"]) == set(conv)
    for k, note in conv.items():
        assert note in m["converted"][k], (k, m["converted"][k])
    records = read_lmdb(built / "train")
    assert len(records) == len(ok)
    rels, idx = [], []
    for key, value in records:
        i, rel = key.decode().split("_", 1)
        assert len(i) == 8
        idx.append(int(i))
        rels.append(rel)
        d = datum_of(value)
        assert (d.channels, d.height, d.width, d.encoded) == (3, R, R, False)
        assert len(d.data) == 3 * R * R
        assert d.label == train[rel]["label"] == WNIDS.index(rel.split("/")[0])
    assert set(rels) == ok
    assert idx == sorted(idx) and len(set(idx)) == len(idx) and max(idx) < len(train)
    assert rels != sorted(rels)  # seeded shuffle, as convert_imageset --shuffle


def test_val_test_vgg_membership(tree, built):
    _, exp = tree
    names = sorted(exp["val"])  # by file name
    for split, chosen in (("val", names[:6]), ("test", names[-10:]), ("vgg", names[-15:])):
        m = _manifest(built / split)
        colour = [n for n in chosen if exp["val"][n]["status"] == "ok"]
        assert m["inputs"] == len(chosen) and m["count"] == len(colour)
        assert sorted(m["gray"]) == sorted(n for n in chosen if exp["val"][n]["status"] == "gray")
        skipped = {n: exp["val"][n]["reason"] for n in chosen if exp["val"][n]["status"] == "skip"}
        assert set(m["skipped"]) == set(skipped)
        assert all(r in m["skipped"][n] for n, r in skipped.items())
        records = read_lmdb(built / split)
        keys = [k.decode() for k, _ in records]
        assert keys == [f"{chosen.index(n):08d}_{n}" for n in colour]  # file-name order, index in the split
        for (_, v), n in zip(records, colour):
            assert datum_of(v).label == exp["val_labels"][n]
    top = _manifest(built)
    assert set(top["splits"]) == {"train", "val", "test", "vgg"}
    assert top["count"] == sum(_manifest(built / s)["count"] for s in top["splits"])
    assert "val/ILSVRC2012_val_00000020.JPEG" in top["gray"]


def test_gray_rule_is_cic_rule_on_the_stored_image(tree, built):
    """Every stored image is colour under cic's rule, and the rule decides gray.txt."""
    from cic.gray import is_gray_image

    for key, value in read_lmdb(built / "vgg"):
        d = datum_of(value)
        bgr = np.frombuffer(d.data, np.uint8).reshape(3, R, R).transpose(1, 2, 0)
        assert not is_gray_image(np.ascontiguousarray(bgr[:, :, ::-1]))
    assert _manifest(built / "test")["params"]["gray_threshold"] == 5.0


def test_gray_threshold_flag(bl, tree, tmp_path):
    root, exp = tree
    out = tmp_path / "t"
    build(bl, "--root", root, "--split", "val", "--val-first", 5, "--out", out, "--resize", R,
          "--gray-threshold", 1000)  # nothing has |a| or |b| above 1000: everything is gray
    m = _manifest(out)
    assert m["count"] == 0 and len(m["gray"]) == 4 and len(m["skipped"]) == 1 and read_lmdb(out) == []


def test_compute_prior_reads_a_built_split(tree, built, tmp_path, capsys):
    """tools/compute_prior.py (the cic tool) reads the split; it finds no gray image in it (same rule)."""
    from colorization import compute_prior as cp

    out = tmp_path / "prior_probs.npy"
    assert cp.main(["--lmdb", str(built / "vgg"), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    prior = np.load(out)
    assert prior.shape == (313,) and abs(prior.sum() - 1) < 1e-9
    m = _manifest(built / "vgg")
    assert f"{m['count']} images counted, 0 gray skipped" in capsys.readouterr().out


def _caffe_datum_bytes(img_hwc: np.ndarray, label: int) -> bytes:
    """What BVLC Caffe's CVMatToDatum + set_label + SerializeToString produce, encoded by hand."""
    def varint(n):
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    h, w, c = img_hwc.shape
    data = img_hwc.transpose(2, 0, 1).tobytes()
    return (b"\x08" + varint(c) + b"\x10" + varint(h) + b"\x18" + varint(w) + b"\x22" + varint(len(data)) + data
            + b"\x28" + varint(label) + b"\x38\x00")


def test_datum_bytes_are_convert_imagesets(tree, built):
    import cv2

    root, exp = tree
    records = dict(read_lmdb(built / "val"))
    for key, value in list(records.items())[:3]:
        name = key.decode().split("_", 1)[1]
        img = cv2.resize(cv2.imread(str(root / "val" / name), cv2.IMREAD_COLOR), (R, R),
                         interpolation=cv2.INTER_LINEAR)
        assert value == _caffe_datum_bytes(img, exp["val_labels"][name])


def test_devkit_ground_truth_labels(bl, tree, tmp_path):
    """ILSVRC2012_validation_ground_truth.txt + meta.mat give the labels val.txt gives (sorted wnid order)."""
    import scipy.io

    root, exp = tree
    ids = [3, 1, 2]  # devkit ILSVRC2012_IDs are not in sorted-wnid order
    id_of = {w: i for w, i in zip(WNIDS, ids)}
    syn = np.zeros((5,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for k, w in enumerate(WNIDS):
        syn[k] = (id_of[w], w, 0)
    syn[3] = (1001, "n00001740", 3)  # a non-leaf synset, ignored
    syn[4] = (1002, "n99999999", 2)
    gt_dir = tmp_path / "devkit" / "data"
    gt_dir.mkdir(parents=True)
    scipy.io.savemat(gt_dir / "meta.mat", {"synsets": syn})
    names = sorted(exp["val"])
    (gt_dir / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{id_of[WNIDS[exp['val_labels'][n]]]}\n" for n in names))
    out = tmp_path / "val_gt"
    build(bl, "--root", root, "--split", "val", "--val-first", 8, "--out", out, "--resize", R,
          "--val-labels", gt_dir / "ILSVRC2012_validation_ground_truth.txt")
    for key, value in read_lmdb(out):
        n = key.decode().split("_", 1)[1]
        assert datum_of(value).label == exp["val_labels"][n]
    assert "devkit ground truth" in _manifest(out)["source"]["labels"]


def test_val_in_class_folders_and_synsets_order(bl, tree, tmp_path):
    """val/ sorted into wnid folders (a common layout): file-name order, labels from the folders in the
    order of --synsets (Caffe's synsets.txt)."""
    root, exp = tree
    names = [n for n in sorted(exp["val"]) if exp["val"][n]["status"] == "ok"][:6]
    order = [WNIDS[2], WNIDS[0], WNIDS[1]]
    for k, n in enumerate(names):
        write(tmp_path / "ilsvrc" / "val" / WNIDS[k % 3] / n, (root / "val" / n).read_bytes())
    (tmp_path / "synsets.txt").write_text("".join(f"{w} some words\n" for w in order))
    out = tmp_path / "db"
    build(bl, "--root", tmp_path / "ilsvrc", "--split", "val", "--out", out, "--resize", R,
          "--synsets", tmp_path / "synsets.txt")
    recs = read_lmdb(out)
    assert [k.decode() for k, _ in recs] == [f"{k:08d}_{WNIDS[k % 3]}/{n}" for k, n in enumerate(names)]
    assert [datum_of(v).label for _, v in recs] == [order.index(WNIDS[k % 3]) for k in range(len(names))]


def test_any_folder_list_and_encoded(bl, tree, tmp_path):
    import cv2

    root, exp = tree
    # a plain folder: class sub-folders give the labels
    out = tmp_path / "folder"
    build(bl, "--root", root / "train", "--split", "all", "--out", out, "--resize", R)
    m = _manifest(out)
    assert m["count"] == sum(e["status"] == "ok" for e in exp["train"].values())
    keys = [k.decode() for k, _ in read_lmdb(out)]
    assert [k.split("_", 1)[1] for k in keys] == sorted(k.split("_", 1)[1] for k in keys)  # not shuffled
    # a convert_imageset list (label after the last space; paths may hold spaces)
    write(tmp_path / "imgs" / "a b.JPEG", (root / "val" / "ILSVRC2012_val_00000001.JPEG").read_bytes())
    write(tmp_path / "imgs" / "c.JPEG", (root / "val" / "ILSVRC2012_val_00000002.JPEG").read_bytes())
    (tmp_path / "list.txt").write_text("c.JPEG 7\na b.JPEG 3\n")
    out = tmp_path / "listdb"
    build(bl, "--root", tmp_path / "imgs", "--list", tmp_path / "list.txt", "--split", "all", "--out", out,
          "--resize", 0, "--encoded", "--encode-type", "png")
    recs = read_lmdb(out)
    assert [k for k, _ in recs] == [b"00000000_c.JPEG", b"00000001_a b.JPEG"]
    d = datum_of(recs[1][1])
    assert d.encoded and d.label == 3 and not d.HasField("channels")
    img = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(img, cv2.imread(str(tmp_path / "imgs" / "a b.JPEG")))  # lossless, full size


def test_resume_guards_and_map_growth(bl, tree, tmp_path, capsys):
    root, _ = tree
    out = tmp_path / "val"
    args = ["--root", root, "--split", "val", "--val-first", 12, "--out", out, "--resize", R]
    build(bl, *args, "--map-size", 4096 * 8, "--commit-every", 3)  # 32 KiB map: must grow
    m = _manifest(out)
    assert m["map_size"] > 4096 * 8
    first = read_lmdb(out)
    assert len(first) == m["count"]
    build(bl, *args)  # finished: not redone
    assert "already complete" in capsys.readouterr().err
    assert read_lmdb(out) == first
    assert bl.main(["--quiet", "--workers", "0", *map(str, args[:-2]), "--resize", "32"]) == 2  # other params
    assert "--overwrite" in capsys.readouterr().err


def test_resume_after_a_cut_journal_line_with_the_database_ahead(bl, tree, tmp_path):
    """A kill between the LMDB commit and the journal line (or in the middle of the line): the inputs after
    the last whole journal line are done again and written with identical bytes."""
    root, _ = tree
    args = ["--root", root, "--split", "train", "--out", tmp_path / "db", "--resize", R, "--commit-every", 4]
    build(bl, *args)
    full = read_lmdb(tmp_path / "db")
    ref = _manifest(tmp_path / "db")
    journal = tmp_path / "db" / "build_journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    assert lines[0].startswith('{"format"') or '"header"' in lines[0]
    journal.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # header, 2 commits, half a line
    (tmp_path / "db" / "manifest.json").unlink()
    build(bl, *args)
    assert read_lmdb(tmp_path / "db") == full
    m = _manifest(tmp_path / "db")
    for k in ("count", "gray", "skipped", "converted"):
        assert m[k] == ref[k], k


def test_kill_and_resume_gives_the_same_database(bl, tree, tmp_path):
    root, _ = tree
    common = ["--root", str(root), "--split", "train", "--resize", str(R), "--commit-every", "2",
              "--chunksize", "1"]
    ref = tmp_path / "ref"
    build(bl, *common, "--out", ref)
    out = tmp_path / "killed"
    cmd = [PYTHON, str(BUILD_LMDB), "--quiet", *common, "--out", str(out), "--workers", "2",
           "--test-delay", "0.15"]
    p = subprocess.Popen(cmd, env=env_for_subprocess(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    journal = out / "build_journal.jsonl"
    t0 = time.time()
    try:
        while time.time() - t0 < 60:
            if journal.exists() and journal.read_text().count('"commit"') >= 3:
                break
            if p.poll() is not None:
                break
            time.sleep(0.05)
        assert p.poll() is None, "the build finished before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)  # the build and its workers
    finally:
        p.wait(10)
    commits = journal.read_text().count('"commit"')
    assert 3 <= commits < 13
    assert not (out / "manifest.json").exists()
    r = run_build(*common, "--out", str(out), "--workers", "2")
    assert "train:" in r.stdout
    assert read_lmdb(out) == read_lmdb(ref)
    a, b = _manifest(out), _manifest(ref)
    for k in ("count", "gray", "skipped", "converted", "inputs"):
        assert a[k] == b[k], k
    assert a["sessions"] == 2


def test_data_layer_reads_a_built_split(built):
    """The colorization Data layer settings (TRAIN, random crop, mirror, no mean, BGR in [0, 255])."""
    import torch

    from torchcaffe.blob import Blob
    from torchcaffe.layer import create_layer
    from torchcaffe.proto import caffe_pb2
    from google.protobuf import text_format

    lp = caffe_pb2.LayerParameter()
    text_format.Parse(f'name: "data" type: "Data" top: "data" top: "label" '
                      f'transform_param {{ crop_size: 16 mirror: true }} '
                      f'data_param {{ source: "{built / "train"}" batch_size: 4 backend: LMDB }}', lp)
    torch.manual_seed(0)
    layer = create_layer(lp, caffe_pb2.TRAIN, "cpu")
    top = [Blob(), Blob()]
    layer.setup([], top)
    layer.forward([], top)
    assert top[0].shape == (4, 3, 16, 16)
    assert top[0].data.min() >= 0 and top[0].data.max() <= 255
    labels = [datum_of(v).label for _, v in read_lmdb(built / "train")[:4]]
    np.testing.assert_array_equal(top[1].data, labels)
    layer.close()
