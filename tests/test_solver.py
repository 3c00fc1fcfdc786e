"""Solver arithmetic and bookkeeping: every update rule, lr policy, regularization, clipping, iter_size,
average_loss against float64 references; pycaffe's solver API; snapshots (binary and HDF5, atomic) and
restore, Caffe-style and exact (sidecar)."""
import math
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

import torchcaffe as caffe
from conftest import assert_close
from torchcaffe import protoio, solver as S
from torchcaffe.blob import Blob
from torchcaffe.proto import caffe_pb2


# ---------------------------------------------------------------------------------------------------------
# A stub train net: three parameters whose gradients are a fixed pseudo-random sequence
# ---------------------------------------------------------------------------------------------------------

SHAPES = [(3, 4), (4,), (2, 2, 2)]
LR_MULT = [1.0, 2.0, 0.5]
DECAY_MULT = [1.0, 0.0, 2.0]


class StubNet:
    name = "stub"

    def __init__(self):
        rng = np.random.RandomState(0)
        self.learnable_params = [Blob(s) for s in SHAPES]
        for b in self.learnable_params:
            b.data_t = torch.from_numpy(rng.randn(*b.shape).astype(np.float32))
        self.params = {"a": self.learnable_params[:2], "b": self.learnable_params[2:]}
        self.learnable_param_names = ["a:0", "a:1", "b:0"]
        self.params_lr = list(LR_MULT)
        self.params_weight_decay = list(DECAY_MULT)
        self.output_blob_names = ["loss"]
        self.blob_loss_weights = {"loss": 1.0}
        self.blobs = {"loss": Blob(())}
        self.calls = 0

    def grads(self, k):
        rng = np.random.RandomState(100 + k)
        return [(rng.randn(*s) * 0.5).astype(np.float32) for s in SHAPES]

    def forward_loss(self):
        loss = float(1.0 + 0.25 * self.calls)
        self.blobs["loss"].data_t = torch.tensor(loss, dtype=torch.float32)
        return loss

    def forward_backward(self):
        loss = self.forward_loss()
        for b, g in zip(self.learnable_params, self.grads(self.calls)):
            b.diff_t = b.diff_t + torch.from_numpy(g)
        self.calls += 1
        return loss

    def clear_param_diffs(self):
        for b in self.learnable_params:
            b.zero_diff()

    def update(self):
        for b in self.learnable_params:
            b.data_t = b.data_t - b.diff_t

    def state(self):
        return {"calls": self.calls}

    def set_state(self, st):
        self.calls = st["calls"]

    def share_with(self, other):
        pass


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(S.Solver, "_make_net", lambda self, p, st: StubNet())


def _param(**kw):
    p = caffe_pb2.SolverParameter()
    p.net_param.name = "stub"
    p.base_lr = 0.1
    p.lr_policy = "fixed"
    p.display = 0
    for k, v in kw.items():
        if isinstance(v, list):
            getattr(p, k).extend(v)
        else:
            setattr(p, k, v)
    return p


def _reference(solver_type, p, iters, iter_size=1):
    """Float64 re-implementation of Caffe's update for the stub net."""
    net = StubNet()
    w = [b.data.astype(np.float64) for b in net.learnable_params]
    n = len(w)
    hist = [np.zeros_like(x) for x in w] * 2
    hist = [h.copy() for h in hist]
    step = 0
    calls = 0
    for it in range(iters):
        g = [np.zeros_like(x) for x in w]
        for _ in range(iter_size):
            for j, gj in enumerate(net.grads(calls)):
                g[j] += gj
            calls += 1
        rate, step, _ = S.learning_rate(p, it, step)
        if p.clip_gradients >= 0:
            norm = math.sqrt(sum(float((x * x).sum()) for x in g))
            if norm > p.clip_gradients:
                g = [x * (p.clip_gradients / norm) for x in g]
        for j in range(n):
            gj = g[j] / iter_size
            decay = p.weight_decay * DECAY_MULT[j]
            if decay:
                gj = gj + decay * (w[j] if p.regularization_type == "L2" else np.sign(w[j]))
            lr = rate * LR_MULT[j]
            if solver_type == "SGD":
                hist[j] = p.momentum * hist[j] + lr * gj
                upd = hist[j]
            elif solver_type == "Nesterov":
                old = hist[j]
                hist[j] = p.momentum * hist[j] + lr * gj
                upd = (1 + p.momentum) * hist[j] - p.momentum * old
            elif solver_type == "AdaGrad":
                hist[j] = hist[j] + gj * gj
                upd = lr * gj / (np.sqrt(hist[j]) + p.delta)
            elif solver_type == "RMSProp":
                hist[j] = p.rms_decay * hist[j] + (1 - p.rms_decay) * gj * gj
                upd = lr * gj / (np.sqrt(hist[j]) + p.delta)
            elif solver_type == "AdaDelta":
                hist[j] = p.momentum * hist[j] + (1 - p.momentum) * gj * gj
                u = gj * np.sqrt((hist[n + j] + p.delta) / (hist[j] + p.delta))
                hist[n + j] = p.momentum * hist[n + j] + (1 - p.momentum) * u * u
                upd = lr * u
            elif solver_type == "Adam":
                b1, b2, t = p.momentum, p.momentum2, it + 1
                hist[j] = b1 * hist[j] + (1 - b1) * gj
                hist[n + j] = b2 * hist[n + j] + (1 - b2) * gj * gj
                corr = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                upd = lr * corr * hist[j] / (np.sqrt(hist[n + j]) + p.delta)
            w[j] = w[j] - upd
    return w


CASES = [
    ("SGD", dict(momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(momentum=0.9, weight_decay=0.01, regularization_type="L1", iter_size=3)),
    ("Nesterov", dict(momentum=0.95, weight_decay=0.004, clip_gradients=1.0)),
    ("AdaGrad", dict(weight_decay=0.002, delta=1e-6)),
    ("RMSProp", dict(rms_decay=0.9, delta=1e-6, weight_decay=0.001, regularization_type="L1")),
    ("AdaDelta", dict(base_lr=1.0, momentum=0.95, delta=1e-6, weight_decay=0.001, iter_size=2)),
    ("Adam", dict(base_lr=0.01, momentum=0.9, momentum2=0.999, delta=1e-8, weight_decay=0.01,
                  lr_policy="step", stepsize=2, gamma=0.5)),
    ("Adam", dict(base_lr=0.01, momentum=0.8, momentum2=0.99, regularization_type="L1", weight_decay=0.05,
                  clip_gradients=0.7, iter_size=2)),
]


@pytest.mark.parametrize("solver_type,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_update_rules_match_reference(stub, solver_type, kw):
    p = _param(type=solver_type, **kw)
    s = caffe.get_solver(p)
    assert type(s).__name__ == f"{solver_type}Solver" and s.type == solver_type
    s.step(5)
    want = _reference(solver_type, s.param, 5, iter_size=s.param.iter_size)
    for b, w in zip(s.net.learnable_params, want):
        assert_close(b.data, w, rtol=2e-5, name=solver_type)
    assert len(s.history) == len(SHAPES) * (2 if solver_type in ("Adam", "AdaDelta") else 1)


def test_pycaffe_classes_ignore_type_and_legacy_solver_type_upgrades(stub):
    p = _param(type="Adam")
    assert type(caffe.SGDSolver(p)) is caffe.SGDSolver  # as pycaffe: the class decides
    legacy = _param()
    legacy.ClearField("type")
    legacy.solver_type = caffe_pb2.SolverParameter.NESTEROV
    s = caffe.get_solver(legacy)
    assert isinstance(s, caffe.NesterovSolver) and s.param.type == "Nesterov"
    assert not s.param.HasField("solver_type")
    with pytest.raises(S.SolverError, match="Unknown solver type"):
        caffe.get_solver(_param(type="Nope"))
    with pytest.raises(S.SolverError, match="Momentum cannot be used with AdaGrad"):
        caffe.get_solver(_param(type="AdaGrad", momentum=0.9))
    with pytest.raises(S.SolverError, match="Unknown learning rate policy"):
        caffe.get_solver(_param(lr_policy="cosine")).step(1)
    with pytest.raises(S.SolverError, match="Unknown regularization type"):
        caffe.get_solver(_param(weight_decay=0.1, regularization_type="L3")).step(1)


def test_lr_policies():
    def lr(it, step=0, **kw):
        return S.learning_rate(_param(**kw), it, step)

    f32 = lambda x: float(np.float32(x))  # noqa: E731
    assert lr(7, lr_policy="fixed")[0] == f32(0.1)
    assert lr(7, lr_policy="step", stepsize=3, gamma=0.5) == (f32(0.1 * 0.25), 2, False)
    assert lr(5, lr_policy="exp", gamma=0.9)[0] == pytest.approx(0.1 * 0.9 ** 5, rel=1e-6)
    assert lr(10, lr_policy="inv", gamma=0.1, power=0.75)[0] == pytest.approx(0.1 * 2 ** -0.75, rel=1e-6)
    assert lr(25, lr_policy="poly", power=2, max_iter=100)[0] == pytest.approx(0.1 * 0.75 ** 2, rel=1e-6)
    assert lr(30, lr_policy="sigmoid", gamma=0.1, stepsize=20)[0] == \
        pytest.approx(0.1 / (1 + math.exp(-1.0)), rel=1e-6)
    # multistep: current_step advances by one when iter reaches the next stepvalue
    kw = dict(lr_policy="multistep", gamma=0.1, stepvalue=[2, 4])
    assert lr(1, 0, **kw) == (f32(0.1), 0, False)
    r2, r3 = lr(2, 0, **kw), lr(3, 1, **kw)
    assert r2[1:] == (1, True) and r3[1:] == (1, False)
    assert r2[0] == r3[0] == pytest.approx(0.01, rel=1e-6)
    assert lr(9, 1, **kw)[1:] == (2, True)
    assert lr(9, 2, **kw)[1:] == (2, False)


def test_average_loss_and_display_lines(stub, capfd):
    s = caffe.get_solver(_param(average_loss=3, display=2))
    s.step(5)
    losses = [1.0 + 0.25 * k for k in range(5)]
    assert s.smoothed_loss == pytest.approx(np.mean(losses[-3:]), rel=1e-6)
    err = capfd.readouterr().err
    assert "Iteration 4 (" in err and "iter/s, " in err and "s/2 iters), loss = " in err
    assert "Iteration 2, lr = 0.1" in err and "Iteration 3, lr" not in err
    assert "    Train net output #0: loss = 2 (* 1 = 2 loss)" in err


def test_callbacks_and_early_stop(stub):
    order = []
    s = caffe.get_solver(_param())
    s.add_callback(lambda: order.append(("start", s.iter)), lambda: order.append(("ready", s.iter)))
    requests = iter([S.SolverAction.NONE, S.SolverAction.STOP])
    s.set_action_function(lambda: next(requests))
    s.param.max_iter = 10
    s.param.snapshot_after_train = False
    s.solve()
    assert s.iter == 2 and s.requested_early_exit
    assert order == [("start", 0), ("ready", 0), ("start", 1), ("ready", 1)]


# ---------------------------------------------------------------------------------------------------------
# Real nets: snapshots and restore on the golden solver net
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def gdir(golden, tmp_path, monkeypatch):
    d = tmp_path / "g"
    shutil.copytree(golden / "solver", d)
    monkeypatch.chdir(d)
    return d


def _golden_solver(name="sgd_multistep", **kw):
    p = S.read_solver(f"solver_{name}.prototxt")
    for k, v in kw.items():
        setattr(p, k, v)
    s = caffe.get_solver(p)
    s.net.copy_from("solver_init.caffemodel")
    return s


def _weights(s):
    return [b.data.copy() for b in s.net.learnable_params]


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_exact_resume_with_sidecar_and_caffe_resume_without(gdir, golden, fmt):
    z = np.load(golden / "solver" / "solver_golden.npz")
    f = getattr(caffe_pb2.SolverParameter, fmt)
    s = _golden_solver(snapshot_format=f)
    s.step(3)
    state = s.snapshot()
    ext = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    assert state == f"sgd_multistep_iter_3{ext}" and os.path.exists(state + S.SIDECAR_SUFFIX)
    model = "sgd_multistep_iter_3" + (".caffemodel.h5" if fmt == "HDF5" else ".caffemodel")
    assert os.path.exists(model)
    s.step(3)
    straight = _weights(s)

    r = _golden_solver(snapshot_format=f)
    r.restore(state)
    assert (r.iter, r.current_step) == (3, 1)
    r.step(3)
    for a, b in zip(_weights(r), straight):
        np.testing.assert_array_equal(a, b)  # bit for bit: data position and RNG were restored

    # without the sidecar (as a solverstate written by Caffe) the data restart: Caffe's resumed trajectory
    os.remove(state + S.SIDECAR_SUFFIX)
    c = _golden_solver(snapshot_format=f)
    c.restore(state)
    c.step(3)
    for (l, i), got in {(l, i): b.data for l, bl in c.net.params.items() for i, b in enumerate(bl)}.items():
        assert_close(got, z[f"sgd_multistep__resumed_from3__iter6__{l}__{i}"], rtol=1e-5, name=f"{l}[{i}]")


def test_hdf5_solverstate_layout_is_caffes(gdir):
    s = _golden_solver(snapshot_format=caffe_pb2.SolverParameter.HDF5)
    s.step(2)
    s.snapshot()
    with h5py.File("sgd_multistep_iter_2.solverstate.h5", "r") as f:
        assert int(f["iter"][()]) == 2 and f["iter"].shape == ()
        assert int(f["current_step"][()]) == s.current_step == 0
        ln = f["learned_net"]
        assert ln.shape == () and ln.id.get_type().get_strpad() == h5py.h5t.STR_NULLTERM
        assert ln[()] == b"sgd_multistep_iter_2.caffemodel.h5"
        assert sorted(f["history"].keys(), key=int) == [str(i) for i in range(len(s.history))]
        for i, h in enumerate(s.history):
            np.testing.assert_array_equal(f["history"][str(i)][()], h.numpy())
    with h5py.File("sgd_multistep_iter_2.caffemodel.h5", "r") as f:
        assert "conv1" in f["data"] and f["data"]["conv1"]["0"].shape == (6, 2, 3, 3)


def test_snapshots_are_atomic(gdir, monkeypatch):
    """A failure while writing leaves no snapshot file and no temporary file behind."""
    s = _golden_solver()
    s.step(1)
    real_replace = os.replace

    def boom(src, dst):
        if dst.endswith(".solverstate"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        s.snapshot()
    monkeypatch.setattr(os, "replace", real_replace)
    assert not os.path.exists("sgd_multistep_iter_1.solverstate")
    assert not [p for p in os.listdir(".") if ".tmp" in p]
    s.snapshot()
    state = protoio.read_binaryproto("sgd_multistep_iter_1.solverstate", caffe_pb2.SolverState)
    assert state.iter == 1 and state.learned_net == "sgd_multistep_iter_1.caffemodel"


def test_solve_test_nets_and_snapshot_after_train(gdir, capfd):
    p = S.read_solver("solver_sgd_multistep.prototxt")
    p.test_iter.append(2)
    p.test_interval = 2
    p.snapshot = 4
    p.max_iter = 6
    p.display = 2
    s = caffe.get_solver(p)
    s.net.copy_from("solver_init.caffemodel")
    assert len(s.test_nets) == 1 and s.test_nets[0].phase == caffe.TEST
    s.solve()
    assert s.iter == 6
    assert os.path.exists("sgd_multistep_iter_4.caffemodel") and os.path.exists("sgd_multistep_iter_6.solverstate")
    err = capfd.readouterr().err
    for it in (0, 2, 4, 6):
        assert f"Iteration {it}, Testing net (#0)" in err
    assert "    Test net output #0: loss = " in err and " loss)" in err
    assert "Iteration 6, loss = " in err and "Optimization Done." in err
    assert "Snapshotting to binary proto file sgd_multistep_iter_4.caffemodel" in err
    assert "Snapshotting solver state to binary proto file sgd_multistep_iter_4.solverstate" in err
    # the test net shares the train net's weights
    tn = s.test_nets[0]
    assert tn.params["conv1"][0] is s.net.params["conv1"][0]
    assert len(s.mean_scores[0]) == 1


def test_snapshot_prefix_defaults_and_errors(gdir):
    text = open("solver_sgd_multistep.prototxt").read().replace('snapshot_prefix: "sgd_multistep"', "")
    open("noprefix.prototxt", "w").write(text)
    assert S.read_solver("noprefix.prototxt").snapshot_prefix == "noprefix"
    os.mkdir("snaps")
    open("dirprefix.prototxt", "w").write(text + '\nsnapshot_prefix: "snaps"\n')
    assert S.read_solver("dirprefix.prototxt").snapshot_prefix == os.path.join("snaps", "dirprefix")
    with pytest.raises(S.SolverError, match="Cannot write to snapshot prefix"):
        _golden_solver(snapshot=1, snapshot_prefix="no/such/dir/x")
    s = _golden_solver()
    with pytest.raises(S.SolverError, match="does not exist"):
        s.restore("missing.solverstate")
    bad = caffe_pb2.SolverState()
    bad.iter = 1
    bad.history.add().CopyFrom(protoio.array_to_proto(np.zeros(3, np.float32)))
    protoio.write_binaryproto(bad, "bad.solverstate")
    with pytest.raises(S.SolverError, match="Incorrect length of history"):
        s.restore("bad.solverstate")
