"""colorization.evaluate (tools/evaluate.py): the Table 1 protocol against brute-force numpy references, a tiny
Caffe classifier with hand-chosen weights, its cache (resume, interruption, other settings) and its report."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from colorization import evaluate as ev
from colorization.report import check_html
from eval_helpers import CLASSES, DEPLOY, REPO, Setup, brute_topk, solid, write_lmdb


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return Setup(tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="module")
def reference(setup):
    return setup.reference()


@pytest.fixture(scope="module")
def first_run(setup):
    out = setup.folder / "run1" / "eval.json"
    assert ev.main(setup.argv(out, "--chunk", 3, "--html", setup.folder / "run1" / "html",
                              "--synsets", setup.synsets)) == 0
    return out


def load(path):
    return json.loads(path.read_text())


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def brute_auc(ab_pred, ab_gt, weights=None):
    """Mean over t = 0..150 of the (weighted) fraction of pixels with |ab_pred - ab_gt| <= t, in percent."""
    err = np.sqrt(((ab_pred - ab_gt) ** 2).sum(-1)).ravel()
    w = np.ones_like(err) if weights is None else weights.ravel()
    return 100 * np.mean([(w * (err <= t)).sum() / w.sum() for t in range(151)])


def nearest_bins(ab):
    import cic

    centers = cic.load_bins()
    d = ((ab.reshape(-1, 1, 2) - centers[None]) ** 2).sum(-1)
    return d.argmin(1)


def test_known_predictions_of_the_tiny_classifier(setup, first_run):
    """Hand-derived: the red patch (230, 20, 20) minus the VGG mean scores 'red' highest (19.7 against 'dark'
    6.8); its gray version (L only, about 119 in each channel) scores 'dark' highest (3.9 against 'neutral' 2)."""
    r = rows(first_run.with_suffix(".csv"))
    assert CLASSES[int(r[0]["ground_truth_top1_class"])] == "red"
    assert CLASSES[int(r[0]["gray_top1_class"])] == "dark"
    assert r[0]["ground_truth_top1_correct"] == "1" and r[0]["gray_top1_correct"] == "0"
    # the green, blue and yellow patches are what they look like
    assert [CLASSES[int(x["ground_truth_top1_class"])] for x in r[1:4]] == ["green", "blue", "yellow"]


def test_topk_accuracy_against_bruteforce(setup, first_run, reference):
    ref = reference
    labels = [lab for _, lab in setup.items]
    s = load(first_run)
    assert s["count"] == len(labels) == s["labelled"]
    for name in ev.VARIANTS:
        for k in (1, 5):
            assert s[name][f"top{k}"] == pytest.approx(brute_topk(ref[name], labels, k)), (name, k)
    res = ev.load_cache(first_run.with_suffix(".cache"))
    assert res.keys == [f"{i:08d}_img{i}" for i in range(len(labels))]
    for v, name in enumerate(ev.VARIANTS):
        order = np.argsort(-ref[name], axis=1, kind="stable")[:, :5]
        np.testing.assert_array_equal(res.top5[:, v], order, err_msg=name)
        np.testing.assert_allclose(res.top5_score[:, v], np.take_along_axis(ref[name], order, 1), atol=2e-3)


def test_auc_against_bruteforce(first_run, reference):
    s = load(first_run)
    ref = reference
    gt = ref["ab_gt"]
    assert s["ground_truth"]["auc_raw"] == 100.0 and s["ground_truth"]["auc_rebalanced"] == 100.0
    assert s["gray"]["auc_raw"] == pytest.approx(brute_auc(0 * gt, gt), abs=0.05)
    assert s["model"]["auc_raw"] == pytest.approx(brute_auc(ref["ab_model"], gt), abs=0.05)
    # rebalanced without a prior: each pixel weighted by 1 / (frequency of its nearest bin over the split)
    q = nearest_bins(gt)
    freq = np.bincount(q, minlength=313)
    w = 1.0 / freq[q]
    assert s["gray"]["auc_rebalanced"] == pytest.approx(brute_auc(0 * gt, gt, w), abs=0.1)
    assert s["model"]["auc_rebalanced"] == pytest.approx(brute_auc(ref["ab_model"], gt, w), abs=0.1)
    # the per-image CSV: the first image's gray AuC
    r = rows(first_run.with_suffix(".csv"))
    assert float(r[0]["gray_auc_raw"]) == pytest.approx(brute_auc(0 * gt[0], gt[0]), abs=0.05)


def test_uniform_prior_makes_rebalanced_equal_raw(setup, tmp_path):
    prior = tmp_path / "uniform.npy"
    np.save(prior, np.full(313, 1 / 313))
    out = tmp_path / "u.json"
    assert ev.main(setup.argv(out, "--prior", prior, "--limit", 3, classifier=False)) == 0
    s = load(out)
    assert s["count"] == 3 and "top1" not in s["model"]
    for name in ev.VARIANTS:
        assert s[name]["auc_rebalanced"] == pytest.approx(s[name]["auc_raw"], abs=1e-9)


def test_html_report_is_valid_and_offline(first_run):
    page = (first_run.parent / "html" / "report.html").read_text()
    assert check_html(page) == []
    assert "data:image/png;base64," in page and "Ground truth" in page and "red" in page
    s = load(first_run)
    assert f"{s['model']['auc_raw']:.2f}" in page


def test_check_html_finds_problems():
    assert any("never closed" in p for p in check_html("<!DOCTYPE html><html><head><title>x</title></head>"
                                                        "<body><div></body></html>"))
    assert any("outside" in p for p in check_html('<!DOCTYPE html><html><head><title>x</title></head><body>'
                                                   '<img src="https://example.org/a.png"></body></html>'))
    assert "no <!DOCTYPE html>" in check_html("<html><head><title>x</title></head><body></body></html>")


def test_resume_skips_done_chunks_and_repairs_damaged_ones(setup, first_run, tmp_path):
    cache = tmp_path / "c"
    out = tmp_path / "a.json"
    assert ev.main(setup.argv(out, "--chunk", 3, "--cache", cache)) == 0
    before = load(out)
    chunks = sorted(cache.glob("chunk_*.npz"))
    assert [c.name for c in chunks] == ["chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz"]
    stamp0 = chunks[0].stat().st_mtime_ns
    chunks[1].unlink()
    chunks[2].write_bytes(chunks[2].read_bytes()[:50])   # a damaged file
    (cache / ".chunk_000001.npz.123.tmp").write_bytes(b"left by a killed run")
    assert ev.main(setup.argv(out, "--chunk", 3, "--cache", cache)) == 0
    after = load(out)
    assert chunks[0].stat().st_mtime_ns == stamp0          # not recomputed
    assert chunks[1].exists() and np.load(chunks[2])["keys"].shape == (2,)
    for name in ev.VARIANTS:
        assert after[name] == before[name]


def test_interrupted_run_resumes(setup, first_run, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    out = tmp_path / "a.json"
    real = ev.evaluate_chunk
    calls = []

    def flaky(keys, *a, **k):
        calls.append(keys)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(keys, *a, **k)

    monkeypatch.setattr(ev, "evaluate_chunk", flaky)
    assert ev.main(setup.argv(out, "--chunk", 3, "--cache", cache)) == 130
    assert [c.name for c in cache.glob("chunk_*.npz")] == ["chunk_000000.npz"]
    assert ev.main(setup.argv(out, "--chunk", 3, "--cache", cache)) == 0
    assert len(calls) == 4   # chunk 0 not computed again
    ref = load(first_run)
    for name in ev.VARIANTS:
        assert load(out)[name] == pytest.approx(ref[name])


def test_cache_of_other_settings_is_refused(setup, first_run, tmp_path, capsys):
    cache = first_run.with_suffix(".cache")
    other = tmp_path / "other.caffemodel"
    from eval_helpers import colorizer_weights

    colorizer_weights(other, seed=1)
    argv = setup.argv(tmp_path / "x.json", "--cache", cache)
    argv[argv.index("--caffemodel") + 1] = str(other)
    capsys.readouterr()
    assert ev.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate: ") and "caffemodel" in err and "\n" not in err
    # the exact float32 path and the fast path do not share a cache either
    assert ev.main(setup.argv(tmp_path / "y.json", "--cache", cache, "--exact")) == 1
    assert "exact" in capsys.readouterr().err


def test_image_folder_with_labels_file_matches_the_lmdb(setup, first_run, tmp_path):
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    lines = []
    for i, (rgb, lab) in enumerate(setup.items):
        cv2.imwrite(str(folder / f"val_{i:03d}.png"), rgb[..., ::-1])
        lines.append(f"val_{i:03d}.png {lab}")
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    argv = setup.argv(tmp_path / "f.json", "--labels", tmp_path / "val.txt", "--resize", 16)
    i = argv.index("--lmdb")
    argv[i:i + 2] = ["--images", str(folder)]
    assert ev.main(argv) == 0
    a, b = load(tmp_path / "f.json"), load(first_run)
    for name in ev.VARIANTS:
        assert a[name] == pytest.approx(b[name], abs=1e-9)
    assert [r["label"] for r in rows(tmp_path / "f.csv")] == [str(lab) for _, lab in setup.items]


@pytest.mark.parametrize("change, message", [
    (("--caffemodel", "missing.caffemodel"), "missing.caffemodel: no such file"),
    (("--lmdb", "nowhere"), "nowhere: not an LMDB directory"),
    (("--classifier-mean", "1,2"), "expected 3 values"),
    (("--labels", "val.txt"), "--labels applies to --images"),
])
def test_user_errors_are_one_line(setup, tmp_path, capsys, change, message):
    argv = setup.argv(tmp_path / "e.json")
    if change[0] in argv:
        argv[argv.index(change[0]) + 1] = change[1]
    else:
        argv += list(change)
    assert ev.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate: ") and message in err and "\n" not in err


def test_evaluate_auc_tool_keeps_its_flags(setup, tmp_path):
    """tools/evaluate_auc.py (the old command line) is evaluate without a classifier; its gray baseline equals
    the brute-force AuC of ab = 0 (migrated from the former test_evaluate_auc.py)."""
    from skimage.color import rgb2lab

    prior = tmp_path / "prior.npy"
    np.save(prior, np.full(313, 1 / 313))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate_auc.py"), "-prototxt", str(DEPLOY),
                          "-caffemodel", str(setup.weights), "-lmdb", str(setup.db), "-prior", str(prior),
                          "-batch", "2", "--no-progress"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert f"{len(setup.items)} images of" in out.stdout
    gray = [line for line in out.stdout.splitlines() if line.strip().startswith("Grayscale")][0]
    reported = float(gray.split(")")[1].split("%")[0])
    ab = np.stack([rgb2lab(rgb)[..., 1:] for rgb, _ in setup.items])
    assert reported == pytest.approx(brute_auc(0 * ab, ab), abs=0.01)
    assert not list(tmp_path.iterdir()) or all(p.name == "prior.npy" for p in tmp_path.iterdir())


def test_runtime_log_level_is_restored(setup, tmp_path):
    from torchcaffe import glog

    before = glog.get_level()
    assert ev.main(setup.argv(tmp_path / "l.json", "--limit", 1, classifier=False)) == 0
    assert glog.get_level() == before


def test_v1_format_classifier_gives_the_same_results(setup, first_run, tmp_path):
    """The public VGG16 Caffe files are in the old V1 format (``layers``, ``input_dim``, 4-D blobs): the tiny
    classifier written that way scores exactly as its current-format twin."""
    import torchcaffe as caffe

    new = caffe.proto.caffe_pb2.NetParameter()
    with open(setup.cls_weights, "rb") as f:
        new.ParseFromString(f.read())
    fc = [layer for layer in new.layer if layer.name == "fc8"][0]
    w, b = (caffe.io.blobproto_to_array(blob) for blob in fc.blobs)
    (tmp_path / "v1.prototxt").write_text(
        'name: "tiny_v1"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
        f'layers {{ name: "fc8" type: INNER_PRODUCT bottom: "data" top: "fc8" '
        f'inner_product_param {{ num_output: {len(CLASSES)} }} }}\n'
        'layers { name: "prob" type: SOFTMAX bottom: "fc8" top: "prob" }\n')
    old = caffe.proto.caffe_pb2.NetParameter(name="tiny_v1")
    layer = old.layers.add(name="fc8", type=caffe.proto.caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    for arr, shape in ((w, (1, 1) + w.shape), (b, (1, 1, 1) + b.shape)):
        blob = layer.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
        blob.data.extend(arr.ravel().tolist())
    (tmp_path / "v1.caffemodel").write_bytes(old.SerializeToString())
    argv = setup.argv(tmp_path / "v1.json")
    argv[argv.index("--classifier-prototxt") + 1] = str(tmp_path / "v1.prototxt")
    argv[argv.index("--classifier-caffemodel") + 1] = str(tmp_path / "v1.caffemodel")
    assert ev.main(argv) == 0
    a, b = load(tmp_path / "v1.json"), load(first_run)
    for name in ev.VARIANTS:
        assert a[name] == b[name]


def test_missing_or_corrupt_lmdb_and_absent_gpu_are_one_line(setup, tmp_path, capsys):
    """The old evaluate_auc flags: a missing LMDB, a record that is not a Datum (named by its key) and
    ``-gpu 0`` without CUDA each end in one line naming what the user gave (migrated from helper app's
    test_evaluate_auc.py)."""
    import lmdb
    import torch

    import torchcaffe as caffe

    prior = tmp_path / "prior.npy"
    np.save(prior, np.full(313, 1 / 313))
    base = ["-prototxt", str(DEPLOY), "-caffemodel", str(setup.weights), "-prior", str(prior), "--no-progress"]

    def one_line():
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        return lines[0]

    capsys.readouterr()
    assert ev.main(base + ["-lmdb", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in one_line()
    db = tmp_path / "split"
    with lmdb.open(str(db), map_size=1 << 24) as env, env.begin(write=True) as txn:
        txn.put(b"00000000", caffe.io.array_to_datum(np.zeros((3, 16, 16), np.uint8), label=0).SerializeToString())
        txn.put(b"00000001", b"\x08\x03garbage that is no Datum")
    assert ev.main(base + ["-lmdb", str(db), "-batch", "2"]) == 1
    line = one_line()
    assert "split" in line and "00000001" in line, line
    if not torch.cuda.is_available():
        assert ev.main(base + ["-lmdb", str(db), "-gpu", "0"]) == 1
        assert "-gpu 0" in one_line()
