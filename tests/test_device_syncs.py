"""The training step's hot path reads nothing back from the device and copies nothing to it, counted on the
CPU by patching the functions that would do so on a GPU (so that the fixes stay fixed without one):

* host reads (each a device synchronisation on CUDA): ``Tensor.item``, ``float()`` / ``int()`` / ``bool()``
  of a tensor, ``tolist``, ``numpy``, ``cpu``, ``nonzero``;
* host-to-device copies: ``torch.tensor``, ``torch.as_tensor``, ``torch.from_numpy``.

Also: Caffe-exact float32 on CUDA (TF32 off, deterministic algorithms) and the CUDA random generator in
snapshots (each rank's own device), checked through torch's switches and patched CUDA generator calls."""
import contextlib
import os
from collections import Counter

import numpy as np
import pytest
import torch

import cic
import torchcaffe as caffe
from test_cli import write_tiny

READS = ["item", "__float__", "__int__", "__bool__", "tolist", "numpy", "cpu", "nonzero"]
COPIES = ["tensor", "as_tensor", "from_numpy"]


@contextlib.contextmanager
def count_transfers():
    """Count the calls that would synchronise with / copy to a CUDA device (see the module docstring), made by
    this thread."""
    import threading

    counts = Counter()
    patches = []
    me = threading.get_ident()  # the training thread; the data layers' prefetch threads work on the host

    def wrap(owner, name, label):
        orig = getattr(owner, name)

        def f(*a, **k):
            if threading.get_ident() == me:
                counts[label] += 1
            return orig(*a, **k)

        setattr(owner, name, f)
        patches.append((owner, name, orig))

    for n in READS:
        wrap(torch.Tensor, n, f"read:{n}")
    for n in COPIES:
        wrap(torch, n, f"copy:{n}")
    try:
        yield counts
    finally:
        for owner, name, orig in reversed(patches):
            setattr(owner, name, orig)


def _reads(c):
    return sum(v for k, v in c.items() if k.startswith("read:"))


def _copies(c):
    return sum(v for k, v in c.items() if k.startswith("copy:"))


def test_soft_encode_one_device_look_per_batch_and_no_centre_copies():
    ab = torch.from_numpy(np.random.default_rng(0).uniform(-100, 100, (4, 2, 64, 64)).astype(np.float32))
    # the tensor path (what runs on a GPU), here on CPU tensors whose reads and copies are counted
    cic.soft_encode(ab, 5, 5.0, chunk=1024, method="table")      # warm the caches (centres, candidate table)
    custom = cic.load_bins().astype(np.float64)
    cic.soft_encode(ab, 10, 5.0, centers=custom, chunk=1024, method="table")
    for centers, k in ((None, 5), (custom, 10)):
        with count_transfers() as c:
            enc = cic.soft_encode(ab, k, 5.0, centers=centers, chunk=1024, method="table")   # 16 chunks
        # one look at the device for the whole batch (are any pixels outside the table?), not one per chunk;
        # the bin centres are not copied to the device again
        assert _reads(c) == 1 and c["read:nonzero"] == 1, c
        assert _copies(c) == 0, c
    assert torch.allclose(enc.sum(1), torch.ones(()))


def test_soft_encode_far_points_still_exact_after_the_batched_check():
    ab = torch.from_numpy(np.random.default_rng(1).uniform(-100, 100, (2, 2, 8, 8)).astype(np.float32))
    ab[0, :, 0, 0] = torch.tensor([400.0, -300.0])  # far outside the table
    ab[1, 0, 3, 3] = float("nan")
    ref = cic.knn_bins(ab, 5, method="brute")
    fin = torch.isfinite(ref[0])
    for method in ("table", "kernel"):
        got = cic.knn_bins(ab, 5, chunk=7, method=method)
        assert torch.equal(got[1][fin], ref[1][fin]) and torch.equal(got[0][fin], ref[0][fin])


def test_annealed_mean_and_mode_copy_and_read_nothing():
    z = torch.randn(2, 313, 8, 8)
    cic.annealed_mean(z)
    with count_transfers() as c:
        cic.annealed_mean(z, 0.38)
        cic.decode_mode(z)
        cic.decode_mean(z)
    assert _reads(c) == 0 and _copies(c) == 0, c


def test_softmax_with_loss_makes_no_host_scalars():
    from layer_helpers import blob, make_layer, run

    rng = np.random.RandomState(0)
    for norm in ("FULL", "VALID", "BATCH_SIZE", "NONE"):
        layer = make_layer(f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: 1 normalization: {norm} }}')
        bl = [blob(rng.randn(3, 4, 5)), blob(rng.randint(0, 4, size=(3, 5)))]
        with count_transfers() as c:
            tops = run(layer, bl)
        tops[0].diff_t = torch.ones(())     # the net's loss weight (outside the count: a test-side setter)
        with count_transfers() as c2:
            layer.backward(tops, [True, False], bl)
        c.update(c2)
        assert _copies(c) == 0, (norm, c)
        # the only read is the label range check, done on the CPU only (on a device: an async assert)
        assert _reads(c) == 1 and c["read:__bool__"] == 1, (norm, c)


@pytest.mark.parametrize("nonfinite", ["continue", "stop"])
def test_solver_reads_the_loss_only_when_it_displays(tmp_path, monkeypatch, nonfinite):
    """The host reads during training do not grow with the number of iterations (display off): the losses
    stay on the device and are read back together when displayed or when step() ends.  With the check for a
    non-finite loss (``-nonfinite_loss stop``, the default) exactly one read per iteration: that check's."""
    from torchcaffe import solver as S

    d = write_tiny(tmp_path, batch=4, shuffle=False, dropout=False, display=0, test_interval=None,
                   test_iter=None, snapshot=0, average_loss=3)
    monkeypatch.chdir(d)
    monkeypatch.setenv(S.NONFINITE_ENV, nonfinite)
    from torchcaffe.builtin import loss as loss_mod

    # SoftmaxWithLoss's label range check reads on the CPU only (a device gets torch._assert_async): not counted
    checks = Counter()
    orig = loss_mod._labels_in_range

    def counted(layer, lbl, valid, n):
        checks["n"] += int(lbl.device.type == "cpu")
        return orig(layer, lbl, valid, n)

    monkeypatch.setattr(loss_mod, "_labels_in_range", counted)
    per_run = []
    for iters in (3, 9):
        s = caffe.get_solver("solver.prototxt")
        s.step(1)
        checks.clear()
        with count_transfers() as c:
            s.step(iters)
        assert checks["n"] == iters
        per_run.append(_reads(c) - checks["n"])
    per_iter = 1 if nonfinite == "stop" else 0
    assert per_run[1] - per_run[0] == per_iter * (9 - 3), f"host reads per run (3 and 9 iterations): {per_run}"
    # and the smoothed loss is still Caffe's (mean of the last average_loss losses)
    s2 = caffe.get_solver("solver.prototxt")
    losses = []
    for _ in range(5):
        s2.step(1)
        losses.append(np.float32(s2.loss))
    s3 = caffe.get_solver("solver.prototxt")
    s3.step(5)
    assert np.float32(s3.loss) == losses[-1]
    assert s3.smoothed_loss == pytest.approx(float(np.mean(losses[-3:])), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Caffe-exact float32 on CUDA; the CUDA random generator in snapshots
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def restore_math():
    from torchcaffe import mode

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"), dict(mode._state))
    yield mode
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
     torch.backends.cudnn.benchmark) = saved[:4]
    torch.use_deterministic_algorithms(saved[4], warn_only=saved[5])
    if saved[6] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    mode._state.clear()
    mode._state.update(saved[7])


def test_exact_math_is_the_default_and_fast_path_opts_in(restore_math):
    mode = restore_math
    assert mode.exact_math()
    torch.backends.cudnn.allow_tf32 = True           # PyTorch's default for cuDNN convolutions
    mode._state["applied"] = None
    mode.apply_cuda_math()                           # what Net(device="cuda") and set_mode_gpu() do
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    mode.set_exact_math(False)
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


def test_net_on_cuda_applies_exact_math(restore_math, monkeypatch):
    """Net(device="cuda") switches TF32 off before anything runs (stopped right after, on this CPU machine)."""
    from torchcaffe import net as net_mod

    calls = []
    monkeypatch.setattr(restore_math, "apply_cuda_math", lambda: calls.append(1))
    with pytest.raises(Exception):  # noqa: B017 - the net cannot be built here; the switch came first
        net_mod.Net("nonexistent.prototxt", caffe.TEST, device="cuda")
    assert calls == [1]


def _fake_cuda(monkeypatch, n_devices=1):
    store = {}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda idx=0: torch.tensor([idx, 7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda st, idx=0: store.__setitem__(idx, st.clone()))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n_devices)
    return store


def test_cuda_rng_state_saved_per_rank_device_and_restored_whatever_the_device_count(monkeypatch, capfd):
    from torchcaffe import glog
    from torchcaffe import solver as S

    _fake_cuda(monkeypatch, n_devices=2)
    st = S._rng_state(torch.device("cuda", 1))          # rank 1 of a -gpu 0,1 run
    assert st["cuda"]["device"] == 1 and st["cuda"]["state"].tolist() == [1, 7]
    store = _fake_cuda(monkeypatch, n_devices=1)         # resumed on a machine with one GPU
    S._set_rng_state(st, torch.device("cuda", 0))
    assert store[0].tolist() == [1, 7]
    # older sidecars kept every device's state: this rank's device is picked
    store = _fake_cuda(monkeypatch, n_devices=1)
    S._set_rng_state({"cuda": [torch.tensor([9, 9], dtype=torch.uint8)]}, torch.device("cuda", 0))
    assert store[0].tolist() == [9, 9]
    # a CPU snapshot resumed on a GPU, and the other way round: restored what can be, and said so
    level = glog.get_level()
    glog.set_level(glog.INFO)
    try:
        store = _fake_cuda(monkeypatch)
        S._set_rng_state({"torch": torch.get_rng_state()}, torch.device("cuda", 0), "x.solverstate.rng")
        assert not store
        S._set_rng_state(st, torch.device("cpu"), "y.solverstate.rng")
    finally:
        glog.set_level(level)
    err = capfd.readouterr().err
    assert "x.solverstate.rng was written by a CPU run" in err and "restart from random_seed" in err
    assert "y.solverstate.rng was written by a GPU run" in err


def test_net_forward_takes_a_tensor_input_without_numpy():
    """A tensor given as a net input goes straight into the blob (np.asarray would fail on a CUDA tensor)."""
    from torchcaffe.proto import caffe_pb2

    p = caffe_pb2.NetParameter()
    from google.protobuf import text_format

    text_format.Merge('input: "x" input_shape { dim: 2 dim: 3 } '
                      'layer { name: "p" type: "Power" bottom: "x" top: "y" power_param { scale: 2 } }', p)
    net = caffe.Net(p, caffe.TEST)
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    orig = torch.Tensor.__array__
    torch.Tensor.__array__ = lambda *a, **k: (_ for _ in ()).throw(AssertionError("went through numpy"))
    try:
        out = net.forward(x=x)
    finally:
        torch.Tensor.__array__ = orig
    np.testing.assert_array_equal(out["y"], 2 * np.arange(6).reshape(2, 3))
    x[0, 0] = 100  # the blob does not alias the caller's tensor
    assert net.blobs["x"].data[0, 0] == 0


def test_demo_train_net_step_reads_back_only_the_soft_encoding_look(tmp_path, monkeypatch):
    """The whole training step of the demo net (Lab conversion, soft-encoding at two scales, BatchNorm, the
    four class-rebalanced losses, Adam): per iteration, the only host reads are soft-encoding's one look per
    batch (are any pixels outside the candidate table?) at each of its two scales."""
    from test_parallel import colorization_run_dir
    from torchcaffe import solver as S

    d = colorization_run_dir(tmp_path / "demo", "demo", batch=2, crop=32, max_iter=100, snapshot=False)
    monkeypatch.chdir(d)
    monkeypatch.setenv(S.NONFINITE_ENV, "continue")  # the non-finite check reads once more (tested above)
    # soft-encoding's tensor path, the one a GPU runs (on CPU tensors the compiled CPU kernel would run)
    monkeypatch.setattr(cic.encode, "_kernel_fits", lambda ab: False)
    p = S.read_solver("solver.prototxt")
    p.display = 0
    p.test_interval = 1000
    s = caffe.get_solver(p)
    s.step(1)
    runs = []
    for iters in (1, 3):
        with count_transfers() as c:
            s.step(iters)
        runs.append(c)
    extra = runs[1] - runs[0]
    assert {k: v for k, v in extra.items() if k.startswith("read:")} == {"read:nonzero": 4}, extra
