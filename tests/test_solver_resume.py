"""Exact resumption: a ``caffe train`` run killed with SIGKILL and resumed from its last snapshot ends with
the same weights, bit for bit, as an uninterrupted run (fixed ``random_seed``, CPU).  The net shuffles its
HDF5 data and uses Dropout, and a test net runs every 10 iterations, so the data positions and the random
generators must all be restored -- which the ``.solverstate.rng`` sidecar does."""
import os
import signal
import subprocess
import time

import numpy as np

from test_cli import caffe_cmd, subprocess_env, write_tiny
from torchcaffe import protoio
from torchcaffe.proto import caffe_pb2

MAX_ITER = 160


def _final_weights(d):
    net = protoio.read_net_weights(str(d / f"snap/tiny_iter_{MAX_ITER}.caffemodel"))
    return {(l.name, i): protoio.proto_to_array(b) for l in net.layer for i, b in enumerate(l.blobs)}


def test_sigkill_and_resume_gives_the_uninterrupted_weights(tmp_path):
    kw = dict(max_iter=MAX_ITER, snapshot=10, display=20)
    full = write_tiny(tmp_path / "full", **kw)
    killed = write_tiny(tmp_path / "killed", **kw)
    env = subprocess_env()
    p_full = subprocess.Popen(caffe_cmd("train", "-solver", "solver.prototxt"), cwd=full, env=env,
                              stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    p = subprocess.Popen(caffe_cmd("train", "-solver", "solver.prototxt"), cwd=killed, env=env,
                         stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not (killed / "snap/tiny_iter_20.solverstate").exists():
            assert p.poll() is None, "training ended before it could be killed"
            assert time.time() - t0 < 120, "no snapshot appeared"
            time.sleep(0.002)
        time.sleep(0.03)  # somewhere in the middle of the following iterations
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        assert p.returncode == -signal.SIGKILL
        assert p_full.wait(240) == 0
    finally:
        for q in (p, p_full):
            if q.poll() is None:
                q.kill()

    # no truncated snapshot: every snapshot file present reads completely
    states = sorted((killed / "snap").glob("tiny_iter_*.solverstate"),
                    key=lambda s: int(s.name.split("_")[-1].split(".")[0]))
    assert states and not (killed / f"snap/tiny_iter_{MAX_ITER}.caffemodel").exists()
    for s in states:
        st = protoio.read_binaryproto(str(s), caffe_pb2.SolverState)
        assert os.path.exists(killed / st.learned_net)
        protoio.read_net_weights(str(killed / st.learned_net))
        assert os.path.exists(str(s) + ".rng")
    last = states[-1]
    resumed_from = protoio.read_binaryproto(str(last), caffe_pb2.SolverState).iter
    assert 20 <= resumed_from < MAX_ITER

    r = subprocess.run(caffe_cmd("train", "-solver", "solver.prototxt", "-snapshot",
                                 str(last.relative_to(killed))),
                       cwd=killed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Resuming from snap/tiny_iter_{resumed_from}.solverstate" in r.stderr
    assert "Restored data positions and random generator states" in r.stderr
    a, b = _final_weights(full), _final_weights(killed)
    assert a.keys() == b.keys() and len(a) >= 4
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} differs after resuming from {resumed_from}")
