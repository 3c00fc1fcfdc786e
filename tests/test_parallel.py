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
from conftest import assert_close
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


def _worker(rank, world, port, d, out):
    """One rank: join the group, train with the solver, save this rank's parameters."""
    from torchcaffe import parallel

    torch.set_num_threads(1)
    os.chdir(d)
    glog.set_level(glog.WARNING)
    parallel.init("gloo", torch.device("cpu"), rank=rank, world_size=world,
                  init_method=f"tcp://127.0.0.1:{port}")
    try:
        solver = parallel.run_rank(S.read_solver("solver.prototxt"), "cpu", install_signals=False)
        assert solver.world_size == world and solver.rank == rank
        np.savez(Path(out) / f"rank{rank}.npz",
                 **{f"{l}__{i}": b.data for l, bl in solver.net.params.items() for i, b in enumerate(bl)})
    finally:
        parallel.shutdown()


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
