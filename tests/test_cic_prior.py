"""cic.prior: rebalancing identities, smoothing against scipy, counting, and tools/compute_prior.py."""
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import color

import cic
from cic_helpers import real_ab, real_rgb

REPO = Path(__file__).resolve().parents[1]


def random_prior(q=313, seed=0):
    p = np.random.default_rng(seed).gamma(0.3, size=q)
    return p / p.sum()


def brute_force_nearest(ab, centers):
    pts = ab.reshape(ab.shape[0], 2, -1).transpose(0, 2, 1).astype(np.float64)
    return ((pts[:, :, None, :] - centers.astype(np.float64)) ** 2).sum(-1).argmin(-1)


def scipy_smoothed(p, centers, sigma):
    """Reference of the documented rule, with scipy: grid placement, gaussian_filter, read-back, renormalize."""
    g = np.gcd.reduce((centers - centers.min(0)).ravel())
    ij = (centers - centers.min(0)) // g
    grid = np.zeros(ij.max(0) + 1)
    grid[ij[:, 0], ij[:, 1]] = p / p.sum()
    sm = gaussian_filter(grid, sigma / g, mode="constant", truncate=4.0)[ij[:, 0], ij[:, 1]]
    return sm / sm.sum()


# ---- rebalancing --------------------------------------------------------------------------------------


def test_rebalance_expectation_is_one():
    p = random_prior()
    for lam in (0.0, 0.25, 0.5, 0.9, 1.0):
        w = cic.rebalance_weights(p, lam)
        assert isinstance(w, np.ndarray) and w.shape == (313,)
        assert np.isclose((p * w).sum(), 1.0, atol=1e-12)


def test_rebalance_formula_and_limits():
    p = random_prior(seed=1)
    w = cic.rebalance_weights(p)  # lambda = 1/2 by default
    ref = 1.0 / (0.5 * p + 0.5 / 313)
    assert np.allclose(w, ref / (p * ref).sum(), rtol=1e-12)
    assert np.allclose(cic.rebalance_weights(p, 1.0), 1.0)              # lambda = 1: uniform
    assert np.allclose(cic.rebalance_weights(p, 0.0), 1.0 / (313 * p))  # lambda = 0: 1/p (normalized)
    assert np.allclose(cic.rebalance_weights(p * 7.0), w)               # counts are normalized first
    wt = cic.rebalance_weights(torch.tensor(p))
    assert isinstance(wt, torch.Tensor) and torch.allclose(wt, torch.tensor(w))


def test_rebalance_errors():
    p = random_prior()
    p[3] = 0
    with pytest.raises(ValueError):
        cic.rebalance_weights(p, 0.0)
    with pytest.raises(ValueError):
        cic.rebalance_weights(p, 1.5)
    assert np.isfinite(cic.rebalance_weights(p, 0.5)).all()  # a zero bin is fine with lambda > 0


# ---- smoothing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [5.0, 2.0, 12.0])
def test_smoothing_matches_scipy_gaussian_filter(sigma):
    c = cic.load_bins()
    p = random_prior(seed=2)
    sm = cic.smooth_prior(p, sigma=sigma)
    assert sm.dtype == np.float64 and sm.shape == (313,)
    assert np.isclose(sm.sum(), 1.0, atol=1e-12)
    assert np.allclose(sm, scipy_smoothed(p, c, sigma), rtol=1e-10, atol=1e-15)


def test_smoothing_on_another_grid():
    gb = cic.gamut_bins(20, levels_step=5)
    p = random_prior(len(gb), seed=3)
    assert np.allclose(cic.smooth_prior(p, gb), scipy_smoothed(p, gb, 5.0), rtol=1e-10, atol=1e-15)


def test_smoothing_hand_case_single_bin():
    # all mass in one interior bin: its 4 grid neighbours get exp(-2) of the centre (sigma = 0.5 cells)
    c = cic.load_bins()
    i = int(np.flatnonzero((c == [0, 0]).all(1))[0])
    p = np.zeros(313)
    p[i] = 1
    sm = cic.smooth_prior(p)
    for nb in ([10, 0], [-10, 0], [0, 10], [0, -10]):
        j = int(np.flatnonzero((c == nb).all(1))[0])
        assert np.isclose(sm[j] / sm[i], np.exp(-2.0), rtol=1e-12)
    j = int(np.flatnonzero((c == [10, 10]).all(1))[0])
    assert np.isclose(sm[j] / sm[i], np.exp(-4.0), rtol=1e-12)
    assert np.allclose(cic.smooth_prior(p, sigma=0), p)


# ---- counting and the accumulator ---------------------------------------------------------------------


def test_bin_counts_against_brute_force():
    ab = real_ab(3, 24, seed=5)
    counts = cic.bin_counts(ab)
    ref = np.bincount(brute_force_nearest(ab, cic.load_bins()).ravel(), minlength=313)
    assert counts.dtype == np.int64 and counts.sum() == ab.size // 2
    assert np.abs(counts - ref).sum() <= 2  # at most a near-tie pixel moves


def test_accumulator_skips_gray_images():
    ab = torch.from_numpy(real_ab(3, 24, seed=6))
    gray = torch.zeros(1, 2, 24, 24)
    gray[0, 0, 3, 3] = 4.9
    acc = cic.PriorAccumulator()
    assert acc.update(torch.cat([ab[:2], gray])) == 2
    acc.update(ab[2:])
    assert (acc.images, acc.skipped) == (3, 1)
    assert torch.equal(acc.counts, cic.bin_counts(ab))
    assert np.allclose(acc.empirical(), cic.bin_counts(ab).double().numpy() / ab[:, 0].numel())
    assert np.allclose(acc.prior(), cic.smooth_prior(acc.empirical()))
    keep = cic.PriorAccumulator(skip_gray=False)
    keep.update(gray)
    assert keep.images == 1 and keep.counts[cic.nearest_bin(gray).reshape(-1)].sum() > 0


def test_prior_boost_is_weight_of_argmax_bin():
    rng = np.random.default_rng(7)
    enc = rng.random((2, 313, 3, 4)).astype(np.float32)
    w = cic.rebalance_weights(random_prior())
    out = cic.prior_boost(enc, w)
    assert out.shape == (2, 1, 3, 4) and out.dtype == np.float32
    assert np.allclose(out[:, 0], w[enc.argmax(1)])


# ---- files --------------------------------------------------------------------------------------------


def test_load_prior_resolves_working_directory_first_and_names_both_places(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "cwd_prior.npy", random_prior())  # in the working directory only: found there
    assert np.allclose(cic.load_prior("cwd_prior.npy"), random_prior())
    assert np.allclose(cic.load_prior(tmp_path / "cwd_prior.npy"), random_prior())
    with pytest.raises(FileNotFoundError) as e:
        cic.load_prior("nowhere_prior.npy")
    assert str(tmp_path / "nowhere_prior.npy") in str(e.value)
    assert str(cic.DATA_DIR / "nowhere_prior.npy") in str(e.value)


def test_save_prior_is_atomic_and_round_trips(tmp_path):
    p = random_prior()
    out = cic.save_prior(p, tmp_path / "sub" / "prior_probs.npy")
    assert np.array_equal(np.load(out), p) and np.load(out).dtype == np.float64
    assert sorted(x.name for x in out.parent.iterdir()) == ["prior_probs.npy"]
    with pytest.raises(ValueError):
        cic.save_prior(p * 2, tmp_path / "bad.npy")
    assert not (tmp_path / "bad.npy").exists()


# ---- tools/compute_prior.py ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compute_prior_tool():
    from colorization import compute_prior

    return compute_prior


def small_images():
    imgs = [real_rgb(n)[::4, ::4].copy() for n in ("astronaut", "coffee", "chelsea")]
    imgs.append(imgs[0][:40, :50].copy())               # another size: a separate batch
    g = (color.rgb2gray(real_rgb("astronaut")[::4, ::4]) * 255).round().astype(np.uint8)
    imgs.append(np.stack([g] * 3, -1))                  # a gray image: skipped
    return imgs


def expected_prior(imgs, sigma=5.0):
    counts = np.zeros(313, np.int64)
    used = 0
    for im in imgs:
        ab = color.rgb2lab(im)[..., 1:].transpose(2, 0, 1)[None]
        if np.abs(ab).max() <= 5:
            continue
        used += 1
        counts += np.bincount(brute_force_nearest(ab, cic.load_bins()).ravel(), minlength=313)
    return scipy_smoothed(counts.astype(np.float64), cic.load_bins(), sigma), used


def test_compute_prior_on_image_folder(tmp_path, compute_prior_tool, capsys):
    imgs = small_images()
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, im in enumerate(imgs):
        cv2.imwrite(str(folder / ("sub" if i % 2 else "") / f"im{i}.png"), im[..., ::-1])
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "prior_probs.npy"
    rc = compute_prior_tool.main(["--images", str(folder), "--out", str(out), "--device", "cpu",
                                  "--batch", "2", "--no-progress"])
    assert rc == 0
    p = np.load(out)
    assert p.dtype == np.float64 and p.shape == (313,) and np.isclose(p.sum(), 1.0, atol=1e-12)
    ref, used = expected_prior(imgs)
    assert used == 4
    assert "4 images counted, 1 gray skipped" in capsys.readouterr().out
    assert np.abs(p - ref).max() < 1e-4  # float32 Lab vs scikit-image's float64: a few pixels may move


def test_compute_prior_on_lmdb_raw_and_encoded(tmp_path, compute_prior_tool):
    lmdb = pytest.importorskip("lmdb")
    caffe_pb2 = pytest.importorskip("torchcaffe.proto.caffe_pb2")
    imgs = small_images()
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, im in enumerate(imgs):
            bgr = im[..., ::-1]
            if i % 2:
                d = caffe_pb2.Datum(channels=3, height=im.shape[0], width=im.shape[1], label=i,
                                    data=np.ascontiguousarray(bgr.transpose(2, 0, 1)).tobytes())
            else:
                d = caffe_pb2.Datum(data=cv2.imencode(".png", bgr)[1].tobytes(), encoded=True, label=i)
            buf = d.SerializeToString()
            assert np.array_equal(compute_prior_tool.datum_to_bgr(buf), bgr.transpose(2, 0, 1))
            txn.put(f"{i:08d}".encode(), buf)
    env.close()
    out = tmp_path / "p.npy"
    assert compute_prior_tool.main(["--lmdb", str(tmp_path / "db"), "--out", str(out), "--device", "cpu",
                                    "--no-progress", "--limit", "4"]) == 0
    ref, _ = expected_prior(imgs[:4])
    assert np.abs(np.load(out) - ref).max() < 1e-4


def test_float_gray_datum_is_read_as_bgr(compute_prior_tool):
    caffe_pb2 = pytest.importorskip("torchcaffe.proto.caffe_pb2")
    d = caffe_pb2.Datum(channels=1, height=2, width=2, float_data=[1.0, 2.5, 3.0, 255.0])
    img = compute_prior_tool.datum_to_bgr(d.SerializeToString())  # one channel -> repeated to BGR
    assert img.shape == (3, 2, 2) and np.array_equal(img[2].ravel(), [1.0, 2.5, 3.0, 255.0])
