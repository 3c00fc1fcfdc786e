"""Data-parallel runs live and die together (``caffe train -cpu_ranks 2``, the same code path as ``-gpu 0,1``):
a rank that raises stops every rank within seconds with its error; the ranks die with a killed parent;
SIGTERM at the parent ends every rank; SIGHUP / SIGINT at the parent's process group (as a terminal sends
them) act once, on every rank, with Caffe's -sighup_effect / -sigint_effect."""
import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from test_cli import _wait_for, caffe_cmd, subprocess_env, write_tiny

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

PROBE = '''
import json, os, time
import torchcaffe as caffe
from torchcaffe import parallel


class Probe(caffe.Layer):
    """In place, changes nothing; records this rank's pid, sleeps a little, and raises when told."""

    def setup(self, bottom, top):
        self.p = json.loads(self.param_str)
        self.n = 0
        rank = parallel.solver_rank()
        with open(os.path.join(self.p["dir"], "pid%d" % rank), "w") as f:
            f.write(str(os.getpid()))

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        self.n += 1
        time.sleep(self.p.get("sleep", 0))
        if parallel.solver_rank() == self.p.get("fail_rank") and self.n == self.p.get("fail_at"):
            raise ValueError("probe failure on rank %d at forward %d" % (parallel.solver_rank(), self.n))

    def backward(self, top, propagate_down, bottom):
        pass
'''


def _setup(tmp_path, **probe):
    d = write_tiny(tmp_path / "run", batch=4, shuffle=False, dropout=False, max_iter=10 ** 7, snapshot=0,
                   display=10, test_interval=None, test_iter=None)
    (d / "rank_probe.py").write_text(PROBE)
    probe = dict({"dir": str(d)}, **probe)
    net = (d / "net.prototxt").read_text()
    layer = ('layer { name: "probe" type: "Python" bottom: "data" top: "data" include { phase: TRAIN } '
             'python_param { module: "rank_probe" layer: "Probe" param_str: %s } }\n' % json.dumps(json.dumps(probe)))
    k = net.index('layer { name: "ip1"')
    (d / "net.prototxt").write_text(net[:k] + layer + net[k:])
    return d


def _start(d):
    env = subprocess_env()
    env["PYTHONPATH"] = str(d) + os.pathsep + env["PYTHONPATH"]
    log = open(d / "log.txt", "w")
    p = subprocess.Popen(caffe_cmd("train", "-solver", "solver.prototxt", "-cpu_ranks", "2"), cwd=d,
                         env=env, stderr=log, stdout=subprocess.DEVNULL, start_new_session=True)
    return p, log


def _rank_pids(d, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        files = [d / "pid0", d / "pid1"]
        if all(f.exists() and f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.05)
    raise AssertionError("the ranks did not start: " + (d / "log.txt").read_text()[-2000:])


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _gone_within(pids, seconds):
    t0 = time.time()
    while time.time() - t0 < seconds:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _cleanup(p, pids, log):
    for pid in [p.pid] + list(pids or []):
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    p.wait(10)
    log.close()


@contextlib.contextmanager
def _running(tmp_path, **probe):
    """The probe's 2-rank training, started: yields (its folder, the parent process, the ranks' pids); whatever
    still runs at the end is killed."""
    d = _setup(tmp_path, **probe)
    p, log = _start(d)
    pids = []
    try:
        pids = _rank_pids(d)
        yield d, p, pids
    finally:
        _cleanup(p, pids, log)


def test_a_rank_that_raises_stops_every_rank_with_its_error(tmp_path):
    with _running(tmp_path, fail_rank=1, fail_at=5) as (d, p, pids):
        t0 = time.time()
        rc = p.wait(60)
        assert rc == 1
        assert time.time() - t0 < 30
        assert _gone_within(pids, 5), "a rank is still running after the failure"
    text = (d / "log.txt").read_text()
    # the parent fails with the failing rank's own error, as one F line
    f_lines = [l for l in text.splitlines() if l.startswith("F")]
    assert len(f_lines) == 1, text[-3000:]
    assert "rank 1 failed: " in f_lines[0] and "ValueError: probe failure on rank 1 at forward 5" in f_lines[0], f_lines


def test_parent_killed_ranks_die_within_seconds(tmp_path):
    with _running(tmp_path, sleep=0.01) as (d, p, pids):
        _wait_for(d / "log.txt", "Iteration 10 (", p)
        p.kill()  # SIGKILL: no handler runs in the parent
        p.wait(10)
        assert _gone_within(pids, 5), "ranks outlived their killed parent"
        assert not list((d / "snap").glob("*.solverstate"))


def test_sigterm_at_the_parent_stops_every_rank(tmp_path):
    with _running(tmp_path, sleep=0.01) as (d, p, pids):
        _wait_for(d / "log.txt", "Iteration 10 (", p)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 143
        assert _gone_within(pids, 5)
        assert not list((d / "snap").glob("*.solverstate"))  # SIGTERM ends Caffe without a snapshot
    assert "SIGTERM received: stopping every rank" in (d / "log.txt").read_text()


def test_sighup_and_sigint_from_the_terminal_act_once_on_every_rank(tmp_path):
    """A terminal sends SIGHUP / SIGINT to the whole foreground process group (parent and ranks): one snapshot
    per SIGHUP (-sighup_effect snapshot), and SIGINT stops every rank at the same iteration (-sigint_effect
    stop, then the snapshot after training); the ranks still agree at the end."""
    from torchcaffe import protoio
    from torchcaffe.proto import caffe_pb2

    with _running(tmp_path, sleep=0.01) as (d, p, pids):
        _wait_for(d / "log.txt", "Iteration 10 (", p)
        os.killpg(p.pid, signal.SIGHUP)
        at = _wait_for(d / "log.txt", "Snapshotting solver state to binary proto file", p)
        _wait_for(d / "log.txt", " iter/s, ", p, after=at)  # training went on
        assert p.poll() is None and all(_alive(x) for x in pids), "SIGHUP must not stop training"
        os.killpg(p.pid, signal.SIGINT)
        assert p.wait(60) == 0
        assert _gone_within(pids, 5)
    text = (d / "log.txt").read_text()
    assert "Optimization stopped early." in text and "All 2 ranks hold identical learned weights" in text, text[-3000:]
    states = sorted((d / "snap").glob("tiny_iter_*.solverstate"))
    assert len(states) == 2, states  # once for SIGHUP (not once per process), once after stopping
    its = sorted(protoio.read_binaryproto(str(s), caffe_pb2.SolverState).iter for s in states)
    assert its[0] < its[1]
