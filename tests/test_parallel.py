"""Data-parallel training on CPU with the gloo backend: two processes, each reading its own shard of the
HDF5 data (rows alternate between ranks, as Caffe 1.0's data layers skip), gradients averaged every
iteration.  Both ranks end with bit-identical weights, equal to one process trained on the doubled batch."""
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import torchcaffe as caffe
from conftest import REPO, assert_close
from test_cli import write_tiny
from torchcaffe import cli, glog, protoio
from torchcaffe import solver as S

ITERS = 6
SOLVER = dict(max_iter=ITERS, snapshot=0, display=2, test_interval=3, test_iter=2, iter_size=2,
              lr_policy='"fixed"', stepsize=None, gamma=None)


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank, world, port, d, out, arrays):
    """One rank: join a gloo group, train with ``d/solver.prototxt``, save ``arrays(solver, rank)`` (a dict of
    arrays) as ``out/rank<r>.npz``."""
    from torchcaffe import parallel

    torch.set_num_threads(1)
    os.chdir(d)
    glog.set_level(glog.WARNING)
    parallel.init("gloo", torch.device("cpu"), rank=rank, world_size=world,
                  init_method=f"tcp://127.0.0.1:{port}")
    try:
        solver = parallel.run_rank(S.read_solver("solver.prototxt"), "cpu", install_signals=False)
        assert solver.world_size == world and solver.rank == rank
        np.savez(Path(out) / f"rank{rank}.npz", **arrays(solver, rank))
    finally:
        parallel.shutdown()


def _all_params(solver, rank):
    return {f"{l}__{i}": b.data for l, bl in solver.net.params.items() for i, b in enumerate(bl)}


def _worker(rank, world, port, d, out):
    """One rank: train with the solver, save this rank's parameters."""
    _gloo_rank(rank, world, port, d, out, _all_params)


def _single_process_reference(d):
    """One process, batch 8 (= 2 ranks x 4), same solver."""
    cwd = os.getcwd()
    os.chdir(d)
    try:
        s = caffe.get_solver("solver.prototxt")
        s.step(ITERS)
        return {f"{l}__{i}": b.data.copy() for l, bl in s.net.params.items() for i, b in enumerate(bl)}
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = write_tiny(tmp_path_factory.mktemp("single"), batch=8, shuffle=False, dropout=False, **SOLVER)
    level = glog.get_level()
    glog.set_level(glog.WARNING)
    try:
        return _single_process_reference(d)
    finally:
        glog.set_level(level)


def test_two_gloo_ranks_hold_identical_weights_equal_to_doubled_batch(tmp_path, reference):
    import torch.multiprocessing as mp

    d = write_tiny(tmp_path / "ranks", batch=4, shuffle=False, dropout=False, **SOLVER)
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_worker, args=(2, _port(), str(d), str(out)), nprocs=2, join=True)
    r0, r1 = np.load(out / "rank0.npz"), np.load(out / "rank1.npz")
    learnable = [k for k in reference if k.split("__")[0] in ("ip1", "ip2")]
    assert len(learnable) == 4
    for k in learnable:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=f"ranks differ in {k}")
        assert_close(r0[k], reference[k], rtol=1e-5, name=f"2 ranks x batch 4 vs batch 8: {k}")
    # and the weights did move away from the (shared) initial values
    init_solver_dir = write_tiny(tmp_path / "init", batch=8, shuffle=False, dropout=False,
                                 **dict(SOLVER, max_iter=0))
    assert not np.allclose(_single_init(init_solver_dir)["ip1__0"], r0["ip1__0"])


def _single_init(d):
    cwd = os.getcwd()
    os.chdir(d)
    try:
        s = caffe.get_solver("solver.prototxt")
        return {f"{l}__{i}": b.data.copy() for l, bl in s.net.params.items() for i, b in enumerate(bl)}
    finally:
        os.chdir(cwd)


def test_cli_cpu_ranks_trains_data_parallel(tmp_path, reference, monkeypatch, capfd):
    d = write_tiny(tmp_path / "cli", batch=4, shuffle=False, dropout=False, **SOLVER)
    monkeypatch.chdir(d)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli.main(["train", "-solver", "solver.prototxt", "-cpu_ranks", "2"]) == 0
    err = capfd.readouterr().err
    assert "All 2 ranks hold identical learned weights" in err
    assert "Iteration 3, Testing net (#0)" in err and "Optimization Done." in err
    # only rank 0 logs the iterations
    assert err.count("Iteration 2 (") == 1
    model = protoio.read_net_weights(f"snap/tiny_iter_{ITERS}.caffemodel")
    for layer in model.layer:
        for i, bp in enumerate(layer.blobs):
            assert_close(protoio.proto_to_array(bp), reference[f"{layer.name}__{i}"], rtol=1e-5,
                         name=f"{layer.name}[{i}]")


def test_torchrun_launch(tmp_path, reference):
    """The same command under torchrun: every process is one rank (env://), CPU ranks on gloo."""
    import subprocess
    import sys

    from test_cli import subprocess_env

    d = write_tiny(tmp_path / "torchrun", batch=4, shuffle=False, dropout=False, **SOLVER)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(_port()),
                        "-m", "torchcaffe.cli", "train", "-solver", "solver.prototxt"],
                       cwd=d, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "torchrun: 2 ranks, backend gloo" in r.stdout and "All 2 ranks hold identical learned weights" in r.stdout
    model = protoio.read_net_weights(str(d / f"snap/tiny_iter_{ITERS}.caffemodel"))
    for layer in model.layer:
        for i, bp in enumerate(layer.blobs):
            assert_close(protoio.proto_to_array(bp), reference[f"{layer.name}__{i}"], rtol=1e-5,
                         name=f"{layer.name}[{i}]")


def test_rank_helpers_without_distributed():
    from torchcaffe import parallel

    assert parallel.solver_rank() == 0 and parallel.solver_count() == 1 and parallel.is_root()
    assert parallel.broadcast_int(5) == 5 and parallel.gather_objects("x") == ["x"]
    assert not parallel.launched_by_torchrun() or "RANK" in os.environ


# ---------------------------------------------------------------------------------------------------------
# The colorization train nets (BatchNorm everywhere), two CPU ranks: the same code path as -gpu 0,1
# ---------------------------------------------------------------------------------------------------------

def colorization_run_dir(d: Path, which: str, batch: int = 2, crop: int = 32, max_iter: int = 2,
                         snapshot: bool = True, solver_type: str = "Adam") -> Path:
    """A run folder for the demo or Table 1 (``"table1"``) train net: tiny LMDBs of colour images, a flat
    prior, the net with a small batch and crop, and its solver (few iterations, one test pass)."""
    from data_helpers import colour_image, write_lmdb

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for split, n in (("train", 8), ("val", 2)):
        write_lmdb(d / split, [colour_image(rng, crop + 8, crop + 8).transpose(2, 0, 1) for _ in range(n)])
    np.save(d / "prior.npy", np.full(313, 1.0 / 313))
    src = REPO / "prototxt" / ("demo/colorization_train_val.prototxt" if which == "demo"
                               else "colorization_train_val.prototxt")
    text = src.read_text()
    for old in ("data/lmdb/demo/train", "data/lmdb/train"):
        text = text.replace(f'"{old}"', f'"{d / "train"}"')
    for old in ("data/lmdb/demo/val", "data/lmdb/val"):
        text = text.replace(f'"{old}"', f'"{d / "val"}"')
    for old in ("data/prior_probs_demo.npy", "data/prior_probs.npy", "prior_probs_demo.npy", "prior_probs.npy"):
        text = text.replace(old, str(d / "prior.npy"))
    import re

    text = re.sub(r"crop_size: \d+", f"crop_size: {crop}", text)
    text = re.sub(r"batch_size: \d+", f"batch_size: {batch}", text)
    (d / "net.prototxt").write_text(text)
    (d / "snap").mkdir(exist_ok=True)
    (d / "solver.prototxt").write_text(
        f'net: "net.prototxt"\ntest_iter: 1\ntest_interval: {max_iter}\ntest_initialization: false\n'
        f'base_lr: 0.001\nlr_policy: "fixed"\nmomentum: 0.9\nmomentum2: 0.99\ntype: "{solver_type}"\n'
        f'weight_decay: 0.001\ndisplay: 1\nmax_iter: {max_iter}\nsnapshot: {max_iter if snapshot else 0}\n'
        f'snapshot_after_train: {str(snapshot).lower()}\nsnapshot_prefix: "snap/c"\nrandom_seed: 3\n')
    return d


def _bn_and_learned(solver, rank):
    from torchcaffe import parallel

    bn = {f"{name}__{i}": b.data for name, layer in zip(solver.net.layer_names, solver.net.layers)
          if layer.type == "BatchNorm" for i, b in enumerate(layer.blobs)}
    learned = {f"learned__{i}": b.data for i, b in enumerate(parallel.learned_params(solver.net))}
    assert len(solver.test_nets) == (1 if rank == 0 else 0)  # only rank 0 tests, as Caffe 1.0
    return {**bn, **learned}


def _colorization_worker(rank, world, port, d, out):
    """One rank of the colorization net: train, then save its BatchNorm blobs and learned parameters."""
    _gloo_rank(rank, world, port, d, out, _bn_and_learned)


def test_demo_net_with_batchnorm_two_ranks_identical_learned_params_own_statistics(tmp_path):
    """The demo train net on two gloo ranks: the learned parameters end bit-identical on both ranks, the
    BatchNorm statistics are each rank's own (from its shard), as in BVLC Caffe's multi-GPU training."""
    import torch.multiprocessing as mp

    d = colorization_run_dir(tmp_path / "demo", "demo")
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_colorization_worker, args=(2, _port(), str(d), str(out)), nprocs=2, join=True)
    r0, r1 = np.load(out / "rank0.npz"), np.load(out / "rank1.npz")
    learned = [k for k in r0.files if k.startswith("learned__")]
    stats = [k for k in r0.files if not k.startswith("learned__")]
    assert len(learned) > 10 and len(stats) == 3 * 7  # 7 BatchNorm layers x (mean, variance, factor)
    for k in learned:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=f"learned parameter {k} differs between ranks")
    means = [k for k in stats if k.endswith("__0")]
    assert all(np.abs(r0[k]).sum() > 0 for k in means), "BatchNorm statistics were not accumulated"
    assert any(not np.array_equal(r0[k], r1[k]) for k in means), \
        "each rank's BatchNorm statistics come from its own shard; they should differ"


@pytest.mark.parametrize("which", ["demo", "table1"])
def test_cli_cpu_ranks_trains_colorization_net_and_exits_cleanly(tmp_path, which, monkeypatch, capfd):
    """``caffe train -cpu_ranks 2`` on the colorization train nets (Table 1 and demo): trains, tests on
    rank 0, snapshots rank 0's weights (its BatchNorm statistics), agrees on the learned parameters, exit 0."""
    # the Table 1 net has 32M parameters: one image of 16 x 16 per rank, no snapshot (of 380 MB)
    d = colorization_run_dir(tmp_path / which, which, batch=1 if which == "table1" else 2,
                             crop=16 if which == "table1" else 32, snapshot=which == "demo")
    monkeypatch.chdir(d)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cli.main(["train", "-solver", "solver.prototxt", "-cpu_ranks", "2"]) == 0
    err = capfd.readouterr().err
    assert "All 2 ranks hold identical learned weights" in err, err[-3000:]
    assert "Iteration 2, Testing net (#0)" in err and "Optimization Done." in err
    if which == "demo":
        assert (d / "snap" / "c_iter_2.caffemodel").exists() and (d / "snap" / "c_iter_2.solverstate").exists()
