"""The ``caffe`` command: flags, train (logs that a Caffe-style parser reads), test, time, device_query,
and SIGHUP / SIGINT as Caffe's ``-sighup_effect`` / ``-sigint_effect``."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from torchcaffe import cli, protoio
from torchcaffe.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]
from colorization import training_log as parse_log  # noqa: E402

TINY_NET = """name: "tiny"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "list.txt" batch_size: {batch} shuffle: {shuffle} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param {{ num_output: 16 weight_filler {{ type: "gaussian" std: 0.3 }}
                         bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }}
{dropout}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""
DROPOUT = 'layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.3 } }'


def write_tiny(d: Path, batch=8, shuffle=True, dropout=True, rows=50, **solver):
    """A small classification problem in ``d``: train.h5, list.txt, net.prototxt, solver.prototxt."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    x = rng.randn(rows, 10).astype(np.float32)
    y = x[:, :3].argmax(1).astype(np.float32)
    with h5py.File(d / "train.h5", "w") as f:
        f["data"] = x
        f["label"] = y
    (d / "list.txt").write_text("train.h5\n")
    (d / "net.prototxt").write_text(TINY_NET.format(batch=batch, shuffle="true" if shuffle else "false",
                                                   dropout=DROPOUT if dropout else ""))
    params = dict(net='"net.prototxt"', test_iter=3, test_interval=10, base_lr=0.05, momentum=0.9,
                  weight_decay=0.001, lr_policy='"step"', gamma=0.5, stepsize=15, display=5, max_iter=30,
                  snapshot=10, snapshot_prefix='"snap/tiny"', random_seed=7)
    params.update(solver)
    (d / "solver.prototxt").write_text("".join(f"{k}: {v}\n" for k, v in params.items() if v is not None))
    (d / "snap").mkdir(exist_ok=True)
    return d


def subprocess_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("GLOG_minloglevel", None)
    return env


def caffe_cmd(*args):
    return [sys.executable, "-m", "torchcaffe.cli", *args]


pytestmark = pytest.mark.usefixtures("glog_info")


def test_flags_in_gflags_styles():
    flags, pos, given = cli.parse_flags(["train", "-solver", "a.prototxt", "--gpu=0,1", "-iterations=7",
                                         "--weights", "w.caffemodel", "-level", "2"])
    assert pos == ["train"]
    assert flags["solver"] == "a.prototxt" and flags["gpu"] == "0,1" and flags["iterations"] == 7
    assert flags["weights"] == "w.caffemodel" and flags["level"] == 2
    assert given == {"solver", "gpu", "iterations", "weights", "level"}
    assert cli.parse_flags(["-solver=x", "train"])[1] == ["train"]
    with pytest.raises(cli.CliError, match="unknown command line flag 'nope'"):
        cli.parse_flags(["train", "-nope", "1"])
    with pytest.raises(cli.CliError, match="int32 flag 'iterations'"):
        cli.parse_flags(["test", "-iterations", "many"])
    assert cli.get_gpus("") == [] and cli.get_gpus("0,2") == [0, 2]


def test_usage_unknown_action_and_checks(capfd):
    assert cli.main([]) == 1
    assert "usage: caffe <command> <args>" in capfd.readouterr().err
    assert cli.main(["brew"]) == 1
    err = capfd.readouterr().err
    assert "Unknown action: brew" in err and "\ttrain" in err and err.lstrip().startswith("E")
    assert cli.main(["train"]) == 1
    assert "Need a solver definition to train." in capfd.readouterr().err
    assert cli.main(["train", "-solver", "s", "-snapshot", "a", "-weights", "b"]) == 1
    assert "but not both" in capfd.readouterr().err
    assert cli.main(["test", "-model", "m"]) == 1
    assert "Need model weights to score." in capfd.readouterr().err


def test_device_query_on_cpu_only_machine(capfd):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert cli.main(["device_query", "-gpu", "0"]) == 1
    assert "no CUDA device is available" in capfd.readouterr().err
    assert cli.main(["train", "-solver", "x.prototxt", "-gpu", "0"]) == 1


def test_train_logs_parse_and_cpu_despite_solver_mode_gpu(tmp_path, monkeypatch, capfd):
    d = write_tiny(tmp_path / "t", solver_mode="GPU")
    monkeypatch.chdir(d)
    assert cli.main(["train", "-solver", "solver.prototxt"]) == 0
    log = capfd.readouterr().err
    (d / "train.log").write_text(log)
    assert "Use CPU." in log
    lines = [l for l in log.splitlines() if l[:1] in "IWEF" and l[1:5].isdigit()]
    # every line that starts like a glog line is one: Lmmdd hh:mm:ss.uuuuuu tid file:line] msg
    import re

    pat = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")
    assert all(pat.match(l) for l in lines), [l for l in lines if not pat.match(l)][:3]
    assert re.search(r"solver\.cpp:\d+\] Iteration 5 \([\d.e+-]+ iter/s, [\d.e+-]+s/5 iters\), loss = [\d.]+", log)
    for it in (10, 20, 30):
        assert f"Snapshotting to binary proto file snap/tiny_iter_{it}.caffemodel" in log
        assert (d / f"snap/tiny_iter_{it}.solverstate").exists()

    train, test = parse_log.parse_log(str(d / "train.log"))
    assert [r["NumIters"] for r in train] == [0, 5, 10, 15, 20, 25]
    assert list(train[0].keys()) == ["NumIters", "Seconds", "LearningRate", "loss"]
    assert all(r["Seconds"] >= 0 for r in train)
    assert train[0]["LearningRate"] == pytest.approx(0.05) and train[-1]["LearningRate"] == pytest.approx(0.025)
    assert [r["NumIters"] for r in test] == [0, 10, 20, 30]
    assert list(test[0].keys()) == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert all(0 <= r["accuracy"] <= 1 for r in test)
    tr, te = parse_log.save_csv_files(str(d / "train.log"), str(d), train, test)
    assert open(tr).readline().strip() == "NumIters,Seconds,LearningRate,loss"
    assert open(te).readline().strip() == "NumIters,Seconds,LearningRate,accuracy,loss"
    assert parse_log.parse_main([str(d / "train.log"), str(d)]) == 0

    # test and time on the trained model
    assert cli.main(["test", "-model", "net.prototxt", "-weights", "snap/tiny_iter_30.caffemodel",
                     "-iterations", "3"]) == 0
    log = capfd.readouterr().err
    assert "Batch 2, accuracy = " in log and "Batch 0, loss = " in log
    assert re.search(r"\] Loss: [\d.]+", log) and re.search(r"\] loss = [\d.]+ \(\* 1 = [\d.]+ loss\)", log)
    assert cli.main(["time", "-model", "net.prototxt", "-iterations", "2", "-phase", "TRAIN"]) == 0
    log = capfd.readouterr().err
    assert "*** Benchmark begins ***" in log and "*** Benchmark ends ***" in log
    assert re.search(r"\]        ip1\tforward: [\d.e+-]+ ms\.", log)
    assert re.search(r"\]        ip1\tbackward: [\d.e+-]+ ms\.", log)
    assert "Iteration: 2 forward-backward time: " in log and "Average Forward-Backward: " in log

    # finetune from weights: the copied weights are used
    assert cli.main(["train", "-solver", "solver.prototxt", "-weights", "snap/tiny_iter_30.caffemodel",
                     "-level", "0"]) == 0
    assert "Finetuning from snap/tiny_iter_30.caffemodel" in capfd.readouterr().err


def test_sighup_snapshots_and_sigint_stops(tmp_path):
    d = write_tiny(tmp_path / "sig", max_iter=10 ** 7, snapshot=0, display=200, test_interval=None,
                   test_iter=None)
    log = open(d / "log.txt", "w")
    p = subprocess.Popen(caffe_cmd("train", "-solver", "solver.prototxt"), cwd=d, env=subprocess_env(),
                         stderr=log, stdout=subprocess.DEVNULL)
    try:
        _wait_for(d / "log.txt", "Iteration 200 (", p)
        p.send_signal(signal.SIGHUP)  # default -sighup_effect snapshot: snapshot and go on
        at = _wait_for(d / "log.txt", "Snapshotting solver state to binary proto file", p)
        _wait_for(d / "log.txt", " iter/s, ", p, after=at)  # training went on
        assert p.poll() is None, "SIGHUP must not stop training"
        p.send_signal(signal.SIGINT)  # default -sigint_effect stop: stop (and snapshot_after_train)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
        log.close()
    text = (d / "log.txt").read_text()
    assert "Optimization stopped early." in text
    states = sorted((d / "snap").glob("tiny_iter_*.solverstate"))
    assert len(states) == 2, states  # the SIGHUP snapshot and the one after stopping
    its = sorted(protoio.read_binaryproto(str(s), caffe_pb2.SolverState).iter for s in states)
    assert its[0] < its[1]


def _wait_for(path, text, proc, timeout=60, after=0):
    """Wait until ``text`` appears in the file at ``path`` after offset ``after``; returns the offset after it."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        content = path.read_text()
        k = content.find(text, after)
        if k >= 0:
            return k + len(text)
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before '{text}':\n{content[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for '{text}'")


def test_signal_handler_polls_and_clears():
    from torchcaffe.parallel import SignalHandler
    from torchcaffe.solver import SolverAction

    # whatever was installed before (default_int_handler, or SIG_IGN in a process started in the background)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP)}
    h = SignalHandler(SolverAction.STOP, SolverAction.SNAPSHOT).install()
    try:
        assert h() == SolverAction.NONE
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert h() == SolverAction.SNAPSHOT  # SIGHUP is checked first, as in Caffe
        assert h() == SolverAction.STOP
        assert h() == SolverAction.NONE
    finally:
        h.uninstall()
    assert {s: signal.getsignal(s) for s in before} == before, "uninstall must restore the previous handlers"
    with pytest.raises(ValueError, match="Invalid signal effect"):
        SolverAction.parse("explode")
