"""cic.bins, cic.encode and cic.decode: the released bins, exact soft-encoding against a brute-force numpy
reference, the in-gamut rule, and the decoders (annealed mean, mode, mean)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import cic
from cic_helpers import real_ab

REPO = Path(__file__).resolve().parents[1]
REFERENCE_TXT = REPO.parent / "shared" / "reference" / "pts_in_hull.txt"


def brute_force_encode(ab, centers, k, sigma):
    """All distances in float64, stable sort: returns (dense (N, Q, P) encoding, sorted sq. distances (N, P, Q))."""
    n = ab.shape[0]
    pts = ab.reshape(n, 2, -1).transpose(0, 2, 1).astype(np.float64)          # N x P x 2
    c = centers.astype(np.float64)
    d2 = ((pts[:, :, None, :] - c[None, None]) ** 2).sum(-1)                   # N x P x Q
    order = np.argsort(d2, axis=-1, kind="stable")
    ds = np.take_along_axis(d2, order, -1)
    w = np.exp(-ds[..., :k] / (2 * sigma ** 2))
    w /= w.sum(-1, keepdims=True)
    enc = np.zeros_like(d2)
    np.put_along_axis(enc, order[..., :k], w, -1)
    return enc.transpose(0, 2, 1), ds


def untied(ds, k, rel=1e-4):
    """Pixels whose k-th and (k+1)-th nearest distances differ clearly (the k nearest are unambiguous)."""
    return (ds[..., k] - ds[..., k - 1]) > rel * (1.0 + ds[..., k])


def check_encoding(enc, ab, centers, k, sigma, atol):
    """Compare with the brute-force reference: exactly on unambiguous pixels; on pixels with a tie at the
    k-th neighbour (e.g. gray pixels, ab ~ 0, equidistant from symmetric bins), the weights as a multiset
    and the chosen bins' distances must match. Returns the fraction of unambiguous pixels."""
    n = ab.shape[0]
    ref, ds = brute_force_encode(ab, centers, k, sigma)
    e = np.asarray(enc, np.float64).reshape(n, len(centers), -1)
    ok = untied(ds, k)
    assert np.abs(e - ref).max(axis=1)[ok].max() < atol
    top_e = -np.sort(-e, axis=1)[:, :k]
    top_r = -np.sort(-ref, axis=1)[:, :k]
    assert np.abs(top_e - top_r).max() < atol
    pts = ab.reshape(n, 2, -1).transpose(0, 2, 1).astype(np.float64)
    d2 = ((pts[:, :, None, :] - centers.astype(np.float64)) ** 2).sum(-1).transpose(0, 2, 1)  # N x Q x P
    chosen_far = (e > 0) & (d2 > ds[..., k - 1][:, None, :] * (1 + 1e-4) + 1e-6)
    assert not chosen_far.any()
    return ok.mean()


# ---- bins ---------------------------------------------------------------------------------------------


def test_released_bins_file():
    p = cic.load_bins()
    assert p.dtype == np.int64 and p.shape == (313, 2)
    assert np.all(p % 10 == 0) and len({tuple(r) for r in p}) == 313
    assert cic.grid_spacing(p) == 10
    assert torch.equal(cic.bin_centers(), torch.tensor(p, dtype=torch.float32))
    if REFERENCE_TXT.is_file():  # the released list, in the released order
        assert np.array_equal(p, np.loadtxt(REFERENCE_TXT, dtype=np.int64))


def test_data_files_resolve_working_directory_first_then_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # not in the working directory: the toolkit's data/ (where the 313 bins ship)
    assert cic.resolve_data_path("pts_in_hull.npy") == cic.DATA_DIR / "pts_in_hull.npy"
    assert cic.load_bins("pts_in_hull.npy").shape == (313, 2)
    # a user's own file in the working directory wins, as Caffe resolves a prototxt's paths
    np.save(tmp_path / "pts_in_hull.npy", np.zeros((3, 2), np.int64))
    assert cic.resolve_data_path("pts_in_hull.npy") == tmp_path / "pts_in_hull.npy"
    assert cic.load_bins("pts_in_hull.npy").shape == (3, 2)
    assert cic.load_bins().shape == (313, 2)            # the default is always the toolkit's own file
    assert cic.resolve_data_path(tmp_path / "x.npy") == tmp_path / "x.npy"
    with pytest.raises(FileNotFoundError) as e:
        cic.load_bins("nope.npy")
    assert str(tmp_path / "nope.npy") in str(e.value) and str(cic.DATA_DIR / "nope.npy") in str(e.value)


def test_gamut_bins_grid10_subset_of_released():
    released = {tuple(r) for r in cic.load_bins()}
    g = cic.gamut_bins(10, levels_step=3)
    assert g.dtype == np.int64 and g.shape[1] == 2
    s = {tuple(r) for r in g}
    assert 250 <= len(s) <= 313 and s <= released
    assert np.array_equal(g, g[np.lexsort((g[:, 1], g[:, 0]))])  # released ordering convention
    wide = {tuple(r) for r in cic.gamut_bins(10, margin=5, levels_step=3)}
    assert s < wide <= released and len(wide) >= 300


def test_make_gamut_bins_tool(tmp_path):
    from colorization import gamut_bins as make_gamut_bins  # tools/make_gamut_bins.py
    out = tmp_path / "bins20.npy"
    assert make_gamut_bins.main(["--grid", "20", "--levels-step", "5", "--out", str(out)]) == 0
    b = np.load(out)
    assert b.dtype == np.int64 and np.all(b % 20 == 0) and 40 <= len(b) <= 120


# ---- soft-encoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,sigma", [(5, 5.0), (10, 5.0), (1, 5.0), (7, 2.5)])
def test_soft_encode_random_matches_brute_force(k, sigma):
    rng = np.random.default_rng(k)
    ab = rng.uniform(-115, 115, size=(3, 2, 9, 11))                             # float64
    c = cic.load_bins()
    enc = cic.soft_encode(ab, k=k, sigma=sigma)
    assert isinstance(enc, np.ndarray) and enc.shape == (3, 313, 9, 11) and enc.dtype == np.float64
    assert check_encoding(enc, ab, c, k, sigma, atol=1e-12) > 0.99


@pytest.mark.parametrize("k", [5, 10])
def test_soft_encode_real_ab_float32(k):
    ab = real_ab(4, 40)
    enc = cic.soft_encode(torch.from_numpy(ab), k=k)
    assert enc.dtype == torch.float32 and enc.shape == (4, 313, 40, 40)
    assert check_encoding(enc.numpy(), ab, cic.load_bins(), k, 5.0, atol=1e-5) > 0.8
    s = enc.sum(1)
    assert torch.allclose(s, torch.ones_like(s), atol=1e-6)
    assert ((enc > 0).sum(1) <= k).all()


@pytest.mark.parametrize("centers", ["released", "grid20", "scattered"])
def test_candidate_table_equals_brute_force(centers):
    rng = np.random.default_rng(11)
    c = {"released": None,
         "grid20": cic.gamut_bins(20, levels_step=5),
         "scattered": rng.uniform(-100, 100, size=(57, 2))}[centers]
    ab = torch.tensor(rng.uniform(-200, 200, size=(2, 2, 30, 30)))        # some far outside the table
    ab[0, :, 0, 0] = torch.tensor([0.0, 0.0])                            # exact ties
    ab[0, :, 0, 1] = torch.tensor([5.0, 5.0])                            # on cell borders
    for dtype in (torch.float64, torch.float32):
        for k in (1, 5, 10, 20):
            d_b, i_b = cic.knn_bins(ab.to(dtype), k, centers=c, method="brute")
            for method in ("table", "kernel"):
                d_t, i_t = cic.knn_bins(ab.to(dtype), k, centers=c, chunk=500, method=method)
                assert torch.equal(d_t, d_b)                             # the same distances, bit for bit
                assert torch.equal(i_t, i_b)                             # and bins: ties go to the lower index


def _adversarial_ab(dtype):
    """ab on the table's cell borders and on bisectors of the bins (multiples of 1.25 ab units: points
    equidistant from 2 or 4 bins, cell corners), one float step either side of them, and random points."""
    g = np.arange(-45, 60.01, 1.25)                                            # around the gray axis
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), 0).reshape(2, -1).astype(dtype)
    up = np.nextafter(grid, np.array(np.inf, dtype))
    down = np.nextafter(grid, np.array(-np.inf, dtype))
    mixed = np.stack([up[0], down[1]])
    rnd = np.random.default_rng(21).uniform(-120, 120, size=(2, 2000)).astype(dtype)
    return np.concatenate([grid, up, down, mixed, rnd], axis=1)[None]       # (1, 2, P)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_candidate_table_exact_on_cell_borders_and_equidistant_points(dtype):
    ab = _adversarial_ab(dtype)
    c = cic.load_bins().astype(np.float64)
    pts = ab[0].T.astype(np.float64)
    d2_all = ((pts[:, None, :] - c[None]) ** 2).sum(-1)                      # float64 reference
    ds = np.sort(d2_all, axis=1)
    for k in (1, 5, 10):
        d_t, i_t = cic.knn_bins(ab, k)                                       # the CPU kernel
        d_b, i_b = cic.knn_bins(ab, k, method="brute")
        d_s, i_s = cic.knn_bins(ab, k, method="table")
        assert np.array_equal(d_t, d_b) and np.array_equal(d_s, d_b)         # bit for bit, ties included
        assert np.array_equal(i_t, i_b) and np.array_equal(i_s, i_b)         # ties to the lower bin index
        untied = ds[:, k] - ds[:, k - 1] > 1e-6 * (1 + ds[:, k])
        assert np.array_equal(np.sort(i_t[0].T, 1)[untied], np.sort(i_b[0].T, 1)[untied])
        # at ties the chosen bins differ at most among equidistant ones: their exact distances agree
        assert np.allclose(np.take_along_axis(d2_all, i_t[0].T, 1), np.take_along_axis(d2_all, i_b[0].T, 1),
                           rtol=1e-6, atol=1e-4)
        assert np.allclose(d_t[0].T, ds[:, :k], rtol=1e-6, atol=1e-4)        # and they are the k nearest
        enc = cic.soft_encode(ab, k=k)
        w = np.exp(-ds[:, :k] / 50.0)
        assert np.allclose(-np.sort(-enc[0].T, 1)[:, :k], w / w.sum(1, keepdims=True), atol=1e-5)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_kernel_soft_encoding_equals_the_tensor_paths(k):
    """The CPU kernel writes the same encoding as the tensor paths (same bins, weights to rounding), for
    real and random ab with far and non-finite pixels, whatever the thread split, into any ``out``."""
    ab = torch.from_numpy(np.concatenate([real_ab(2, 48), np.random.default_rng(k).uniform(
        -130, 130, (2, 2, 48, 48)).astype(np.float32)]))
    ab[0, :, 0, 0] = torch.tensor([300.0, -250.0])                    # outside the table: brute force
    ab[1, 1, 5, 7] = float("inf")
    ref = cic.soft_encode(ab, k=k, method="brute")
    table = cic.soft_encode(ab, k=k, method="table")
    fin = torch.isfinite(ab).all(1)
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)                               # 1 to 3 ranges of pixels
            got = cic.soft_encode(ab, k=k, method="kernel")
            assert torch.equal(got > 0, table > 0)                       # the same k bins per pixel
            # weights within a float32 step (the same arithmetic as the softmax; exp's implementations differ)
            assert torch.allclose(got, ref, rtol=3e-7, atol=1e-7, equal_nan=True)
            assert torch.allclose(got, table, rtol=3e-7, atol=1e-7, equal_nan=True)
            assert torch.equal(got.permute(0, 2, 3, 1)[fin].sum(-1) > 0, torch.ones_like(fin[fin]))
    finally:
        torch.set_num_threads(saved)
    got = cic.soft_encode(ab, k=k)                                       # "auto" on the CPU is the kernel
    wide = torch.full((4, 313, 48, 48), 9.0, dtype=torch.float64)        # another dtype: written via a copy
    assert cic.soft_encode(ab, k=k, out=wide) is wide                  # NaN at the inf pixel: compared as -1
    assert torch.equal(wide.nan_to_num(-1), got.double().nan_to_num(-1))
    strided = torch.full((4, 48, 48, 313), 9.0).permute(0, 3, 1, 2)     # not contiguous
    assert cic.soft_encode(ab, k=k, out=strided) is strided and torch.equal(strided.nan_to_num(-1), got.nan_to_num(-1))
    g = ab.clone().requires_grad_(True)
    assert torch.equal(cic.soft_encode(g, k=k).nan_to_num(-1), got.nan_to_num(-1))
    assert cic.soft_encode(torch.zeros(0, 2, 5, 5), k=k).shape == (0, 313, 5, 5)
    assert cic.knn_bins(torch.zeros(2, 2, 0), k)[0].shape == (2, k, 0)
    assert cic.soft_encode(torch.zeros(0, 2, 5, 5), k=k, method="table").shape == (0, 313, 5, 5)


def _encode_in_child(ab, ref_support, queue):
    # numpy for everything but the encoding: torch's own parallel ops hang in a child forked after the parent
    # used its OpenMP threads (why DataLoader workers run single-threaded), which is not what is tested here
    queue.put(bool(np.array_equal(cic.soft_encode(ab, k=10).numpy() > 0, ref_support)))


def test_kernel_from_many_threads_and_in_a_forked_child():
    """Parallel kernel launches from several Python threads at once do not crash (one launches, the others
    run serially), and a child forked after the parent launched runs serially instead of hanging (GNU
    OpenMP is not fork-safe)."""
    import multiprocessing
    import threading

    ab = torch.from_numpy(real_ab(4, 64))                                # 16K pixels: two ranges of work
    ref = cic.soft_encode(ab, k=10, method="table")
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cic.soft_encode(ab, k=10)                                        # a parallel launch in this process
        got = []
        workers = [threading.Thread(target=lambda: got.append(cic.soft_encode(ab, k=10))) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(got) == 4 and all(torch.equal(g > 0, ref > 0) for g in got)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_encode_in_child, args=(ab, (ref > 0).numpy(), queue))
        child.start()
        child.join(30)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hung in the soft-encoding kernel")
        assert child.exitcode == 0 and queue.get(timeout=10) is True
    finally:
        torch.set_num_threads(saved)


def test_kernel_under_numbas_workqueue_layer_from_many_threads():
    """numba's fallback threading layer ("workqueue", where neither OpenMP nor TBB loads) terminates the
    process if two threads launch at once: the kernel's launches take turns (the others run serially)."""
    code = textwrap.dedent("""
        import threading, numpy as np, torch, numba, cic
        torch.set_num_threads(2)
        ab = torch.rand(4, 2, 64, 64) * 200 - 100
        ref = cic.soft_encode(ab, k=10, method="table") > 0
        got = []
        def work():
            for _ in range(5):
                got.append(bool(torch.equal(cic.soft_encode(ab, k=10) > 0, ref)))
        ts = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        print(numba.threading_layer(), len(got), all(got))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_THREADING_LAYER="workqueue")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["workqueue", "20", "True"], out.stdout


def test_kernel_is_refused_where_it_cannot_run():
    with pytest.raises(ValueError, match="float32 or float64 tensor on the CPU"):
        cic.knn_bins(torch.zeros(1, 2, 3, dtype=torch.float16), 5, method="kernel")
    with pytest.raises(ValueError, match="method must be one of"):
        cic.soft_encode(torch.zeros(1, 2, 3), method="fast")
    assert cic.soft_encode(torch.zeros(1, 2, 3, dtype=torch.float16)).dtype == torch.float16   # "auto": table


def test_many_fine_bins_use_brute_force_in_bounded_pieces():
    g = np.arange(-60, 61)
    fine = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # 14641 bins: no table
    ab = np.random.default_rng(12).uniform(-70, 70, size=(1, 2, 600)) + 0.25  # off the grid lines
    d, i = cic.knn_bins(ab, 3, centers=fine)
    d2 = ((ab[0].T[:, None, :] - fine[None]) ** 2).sum(-1)
    ref = np.sort(d2, axis=1)[:, :3]
    assert np.allclose(d[0].T, ref, rtol=1e-12)
    assert np.allclose(np.take_along_axis(d2, i[0].T, 1), ref, rtol=1e-12)


def test_chunking_and_shapes_do_not_change_the_result():
    ab = torch.from_numpy(real_ab(3, 24))
    full = cic.soft_encode(ab, k=10)
    assert torch.equal(cic.soft_encode(ab, k=10, chunk=7), full)
    flat = cic.soft_encode(ab.reshape(3, 2, -1), k=10)                         # (N, 2, P) -> (N, Q, P)
    assert torch.equal(flat, full.reshape(3, 313, -1))
    buf = torch.full_like(full, 7.0)                                           # written in place
    assert cic.soft_encode(ab, k=10, out=buf) is buf and torch.equal(buf, full)
    nbuf = np.full(tuple(full.shape), 3.0, np.float32)                         # numpy out: same memory
    cic.soft_encode(ab.numpy(), k=10, out=nbuf)
    assert np.array_equal(nbuf, full.numpy())
    with pytest.raises(ValueError, match="out must be"):
        cic.soft_encode(ab, k=10, out=torch.zeros(3, 313, 24, 23))


def test_nearest_bin_and_knn_against_brute_force():
    ab = real_ab(2, 32, seed=3)
    c = cic.load_bins()
    _, ds = brute_force_encode(ab, c, 1, 5.0)
    d2 = ((ab.reshape(2, 2, -1).transpose(0, 2, 1)[:, :, None, :].astype(np.float64) - c) ** 2).sum(-1)
    ref_idx = d2.argmin(-1)
    idx = cic.nearest_bin(ab)
    assert idx.shape == (2, 32, 32) and idx.dtype == np.int64
    ok = untied(ds, 1)
    assert np.array_equal(idx.reshape(2, -1)[ok], ref_idx[ok])
    dist, kidx = cic.knn_bins(ab, 4)
    assert dist.shape == kidx.shape == (2, 4, 32, 32)
    assert np.all(np.diff(dist, axis=1) >= 0)
    assert np.array_equal(kidx[:, 0], idx)
    assert np.allclose(dist.reshape(2, 4, -1).transpose(0, 2, 1), ds[..., :4], rtol=1e-5, atol=1e-3)
    # argmax of the soft-encoding is the nearest bin
    enc = cic.soft_encode(ab)
    assert np.array_equal(enc.argmax(1).reshape(2, -1)[ok], ref_idx[ok])


def test_custom_centers():
    c = np.array([[0, 0], [10, 0], [0, 10], [-10, 0]], np.int64)
    ab = np.array([[[[1.0]], [[2.0]]]], np.float32)                            # a=1, b=2
    enc = cic.soft_encode(ab, k=2, sigma=5, centers=c)
    d = np.array([1 + 4, 81 + 4, 1 + 64, 121 + 4], np.float64)                 # sq. distances
    w = np.exp(-d[[0, 2]] / 50)                                                 # nearest two: bins 0 and 2
    w /= w.sum()
    assert np.allclose(enc[0, :, 0, 0], [w[0], 0, w[1], 0], atol=1e-7)


def test_bad_arguments():
    ab = torch.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError):
        cic.soft_encode(ab, k=0)
    with pytest.raises(ValueError):
        cic.soft_encode(ab, k=314)
    with pytest.raises(ValueError):
        cic.soft_encode(ab, sigma=0)
    with pytest.raises(ValueError):
        cic.soft_encode(torch.zeros(1, 3, 2, 2))


def test_memory_of_a_training_batch_stays_small():
    """40 x 2 x 56 x 56 with k = 10: peak RSS growth well under 500 MB (the output alone is 157 MB)."""
    code = textwrap.dedent("""
        import resource, torch, cic
        torch.set_num_threads(2)
        ab = torch.rand(40, 2, 56, 56) * 220 - 110
        cic.soft_encode(ab[:1], k=10)                  # warm up allocator and imports
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        enc = cic.soft_encode(ab, k=10)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024.0)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    grown_mb = float(out.stdout.strip().splitlines()[-1])
    assert grown_mb < 500, grown_mb


# ---- decoding -----------------------------------------------------------------------------------------


def _np_softmax(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_annealed_mean_against_numpy_reference():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 313, 3, 4)) * 3
    c = cic.load_bins().astype(np.float64)
    for T in (1.0, 0.38, 0.1):
        ref = np.einsum("nqhw,qc->nchw", _np_softmax(z / T), c)
        out = cic.annealed_mean(z, T=T)
        assert out.shape == (2, 2, 3, 4) and np.allclose(out, ref, atol=1e-10)
    # the paper's definition on probabilities: exp(log(p) / T), renormalized
    p = _np_softmax(z)
    f = np.exp(np.log(p) / 0.38)
    ref = np.einsum("nqhw,qc->nchw", f / f.sum(1, keepdims=True), c)
    assert np.allclose(cic.annealed_mean(p, T=0.38, logits=False), ref, atol=1e-8)


def test_mean_mode_and_limits():
    rng = np.random.default_rng(2)
    z = torch.tensor(rng.normal(size=(2, 313, 5, 5)) * 2)
    z.scatter_add_(1, z.argmax(1, keepdim=True), torch.ones(2, 1, 5, 5, dtype=z.dtype))  # a clear mode
    c = torch.tensor(cic.load_bins(), dtype=torch.float64)
    mean = torch.einsum("nqhw,qc->nchw", torch.softmax(z, 1), c)
    assert torch.allclose(cic.decode_mean(z), mean)
    assert torch.allclose(cic.annealed_mean(z, T=1.0), mean)
    mode = c[z.argmax(1)].permute(0, 3, 1, 2)
    assert torch.equal(cic.decode_mode(z), mode)
    assert torch.equal(cic.annealed_mean(z, T=0), mode)
    assert torch.allclose(cic.annealed_mean(z, T=0.01), mode, atol=1e-6)
    assert cic.annealed_mean(z.float()).dtype == torch.float32


def test_encode_then_decode_recovers_ab():
    ab = torch.from_numpy(real_ab(2, 16))
    enc = cic.soft_encode(ab, k=5)
    # the mean of a Gaussian-weighted neighbourhood stays within a few ab units of the true value
    back = cic.decode_mean(enc, logits=False)
    assert (back - ab).norm(dim=1).max() < 6.0
    assert torch.equal(cic.decode_mode(enc, logits=False), cic.bin_centers()[cic.nearest_bin(ab)].permute(0, 3, 1, 2))


def test_upsample_bilinear_hand_case_half_pixel_centres():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    f = torch.tensor([0.0, 0.25, 0.75, 1.0])  # sample points -0.25, 0.25, 0.75, 1.25 clamped to [0, 1]
    expect = 2 * f[:, None] + f[None, :]
    assert torch.allclose(cic.upsample_bilinear(x, (4, 4))[0, 0], expect)
