"""tools/evaluate_auc.py scores every image of a split once; its gray baseline equals a brute-force AuC."""
import subprocess
import sys

import lmdb
import numpy as np
import pytest
import skimage.data
from skimage.color import rgb2lab
from skimage.transform import resize

import torchcaffe as caffe
from conftest import REPO


def test_evaluate_auc_on_a_tiny_split(tmp_path):
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    imgs = [(resize(p, (64, 64), anti_aliasing=True) * 255).round().astype(np.uint8) for p in photos]
    db = tmp_path / "split"
    with lmdb.open(str(db), map_size=1 << 26) as env, env.begin(write=True) as txn:
        for i, im in enumerate(imgs):
            datum = caffe.io.array_to_datum(im[..., ::-1].transpose(2, 0, 1).copy(), label=0)
            txn.put(f"{i:08d}".encode(), datum.SerializeToString())
    deploy = REPO / "prototxt" / "demo" / "colorization_deploy.prototxt"
    weights = tmp_path / "init.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))
    prior = tmp_path / "prior.npy"
    np.save(prior, np.full(313, 1 / 313))
    out = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate_auc.py"), "-prototxt", str(deploy),
                          "-caffemodel", str(weights), "-lmdb", str(db), "-prior", str(prior), "-batch", "2"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "3 images of" in out.stdout
    gray_line = [l for l in out.stdout.splitlines() if l.strip().startswith("gray")][0]
    reported = float(gray_line.split("AuC")[1].split("%")[0])
    # brute force: the fraction of pixels whose |ab| <= t, averaged over t = 0..150
    ab = np.concatenate([rgb2lab(im)[..., 1:].reshape(-1, 2) for im in imgs])
    err = np.sqrt((ab ** 2).sum(1))
    expected = 100 * np.mean([(err <= t).mean() for t in range(151)])
    assert abs(reported - expected) < 0.02, (reported, expected)


def _one_line(err):
    lines = [l for l in err.splitlines() if l.strip() and "it/s" not in l and "img/s" not in l and "%|" not in l]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def keep_log_state():
    """The commands run in-process set the runtime's log level: restore it for the tests that follow."""
    from torchcaffe import glog

    saved = dict(glog._state)
    yield
    glog._state.clear()
    glog._state.update(saved)


def test_evaluate_auc_errors_are_one_line(tmp_path, capsys, keep_log_state):
    import torch

    from colorization.evaluate_auc import main

    deploy = REPO / "prototxt" / "demo" / "colorization_deploy.prototxt"
    weights = tmp_path / "init.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))
    base = ["-prototxt", str(deploy), "-caffemodel", str(weights), "-prior", str(tmp_path / "prior.npy")]
    np.save(tmp_path / "prior.npy", np.full(313, 1 / 313))
    capsys.readouterr()
    assert main(base + ["-lmdb", str(tmp_path / "nowhere")]) == 1
    assert "-lmdb " in (line := _one_line(capsys.readouterr().err)) and "nowhere: no such LMDB" in line
    # a record that is not a Datum
    db = tmp_path / "split"
    im = np.zeros((3, 16, 16), np.uint8)
    with lmdb.open(str(db), map_size=1 << 24) as env, env.begin(write=True) as txn:
        txn.put(b"00000000", caffe.io.array_to_datum(im, label=0).SerializeToString())
        txn.put(b"00000001", b"\x08\x03garbage that is no Datum")
    assert main(base + ["-lmdb", str(db), "-batch", "2"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("evaluate_auc: ") and "split" in line and "00000001" in line, line
    if not torch.cuda.is_available():
        assert main(base + ["-lmdb", str(db), "-gpu", "0"]) == 1
        assert _one_line(capsys.readouterr().err).startswith("evaluate_auc: -gpu 0:")
