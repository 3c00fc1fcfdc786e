"""Data-parallel training on ``torch.distributed``, as BVLC Caffe 1.0's multi-GPU training (NCCL).

One process per device (rank).  Every rank builds the same solver, seeded with ``random_seed + rank`` as
Caffe does, then the parameters are broadcast from rank 0 so that all ranks start from identical weights.
Each rank's data layers read their own shard of the data (Caffe 1.0's round-robin: record ``k`` goes to rank
``k % world_size``; the layers ask :func:`solver_rank` / :func:`solver_count`, i.e. ``torch.distributed``).
After the ``iter_size`` forward/backward passes the gradients are summed over ranks and divided by the
number of ranks (Caffe's ``NCCL::on_gradients_ready``), before the update; the effective batch is
``batch_size x ranks``.  Only rank 0 logs, runs the test nets and writes snapshots (snapshots gather every
rank's data position into the exact-resume sidecar).

Three ways in:

* ``caffe train -solver S -gpu 0,1`` (or ``-gpu all``): :func:`spawn_train` starts one process per GPU on
  this machine (NCCL);
* ``caffe train -solver S -cpu_ranks 2``: the same with CPU processes and the gloo backend;
* ``torchrun --nproc_per_node=K [--nnodes ...] -m torchcaffe.cli train -solver S [-gpu all]``: each process
  is one rank (:func:`launched_by_torchrun`); the same code runs across machines.  Without ``-gpu`` the
  ranks are CPU processes on gloo.

``-backend nccl|gloo`` overrides the backend.

BatchNorm statistics, as in Caffe: the running mean / variance / scale factor of a BatchNorm layer are
parameter blobs with ``lr_mult: 0`` that the layer's *forward* pass updates from the batch it sees.  Every rank
sees its own shard, so every rank keeps its own statistics (BVLC Caffe keeps them per GPU too: its NCCL
averages gradients only, and the solver update leaves ``lr_mult: 0`` blobs alone); they start equal (rank 0's
are broadcast with the weights), and the snapshots, tests and ``.caffemodel`` files are rank 0's.  The learned
parameters (``lr_mult != 0``) stay bit-identical on every rank; the end-of-run check
(:func:`params_digest`) covers exactly those.

Failures and signals (``spawn_train``): every rank process is in its own process group, asks the kernel to
kill it when the parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a watchdog thread polls the parent), so
ranks never outlive a killed ``caffe``.  SIGINT / SIGHUP at the parent go to rank 0, which shares the
request with the others at the next iteration: Caffe's ``-sigint_effect`` / ``-sighup_effect``, once, on
every rank.  SIGTERM at the parent terminates every rank (SIGTERM ends Caffe too) and the parent exits with
status 143.  A rank that raises reports its error to the parent, which stops the other ranks at once and
fails with that error.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from datetime import timedelta
from typing import Optional, Sequence

import torch

from . import glog

__all__ = ["solver_rank", "solver_count", "is_root", "is_initialized", "launched_by_torchrun", "init",
           "shutdown", "broadcast_int", "any_rank", "broadcast_params", "gather_objects", "GradientAverager",
           "attach", "run_rank", "spawn_train", "params_digest", "learned_params", "verify_identical",
           "SignalHandler", "RankFailed"]


# ---------------------------------------------------------------------------------------------------------
# Rank queries (Caffe::solver_rank / Caffe::solver_count)
# ---------------------------------------------------------------------------------------------------------

def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def solver_rank() -> int:
    """This process's rank in data-parallel training; 0 when not distributed."""
    return torch.distributed.get_rank() if is_initialized() else 0


def solver_count() -> int:
    """The number of data-parallel ranks; 1 when not distributed."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def is_root() -> bool:
    return solver_rank() == 0


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of a ``torchrun`` (or any env:// launcher) job with several ranks."""
    try:
        return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------------
# Process group
# ---------------------------------------------------------------------------------------------------------

def _default_backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init(backend: Optional[str] = None, device: Optional[torch.device] = None, rank: Optional[int] = None,
         world_size: Optional[int] = None, init_method: Optional[str] = None,
         timeout_s: float = 7200.0) -> None:
    """Join the process group (env:// from torchrun's RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT unless
    ``init_method``, ``rank`` and ``world_size`` are given) and select this rank's device."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    backend = backend or _default_backend(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs = dict(backend=backend, timeout=timedelta(seconds=timeout_s))
    if init_method is not None:
        kwargs.update(init_method=init_method, rank=int(rank), world_size=int(world_size))
    joined = False
    if backend == "nccl" and device.type == "cuda":
        try:
            torch.distributed.init_process_group(device_id=device, **kwargs)
            joined = True
        except TypeError:  # older torch without device_id
            pass
    if not joined:
        torch.distributed.init_process_group(**kwargs)
    _CONTROL["group"] = None
    if torch.distributed.get_backend() != "gloo":
        # flags and digests travel on a CPU (gloo) group: reading them never waits for the GPU's queue
        _CONTROL["group"] = torch.distributed.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))


#: the process group for host-side control messages (None: the default group, already gloo)
_CONTROL: dict = {"group": None}


def shutdown(ok: bool = True) -> None:
    """Leave the process group.  ``ok``: every rank finished, so wait for the others at a barrier first; after
    a failure there is no barrier (the other ranks may be stuck in a collective that will never complete)."""
    if is_initialized():
        try:
            if ok:
                torch.distributed.barrier(group=_CONTROL["group"])
        finally:
            _CONTROL["group"] = None
            torch.distributed.destroy_process_group()


def _comm_device() -> torch.device:
    if is_initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------
# Collectives used by the solver
# ---------------------------------------------------------------------------------------------------------

def broadcast_int(value: int, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank (signal requests, flags)."""
    if not is_initialized():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)           # CPU, on the gloo control group
    torch.distributed.broadcast(t, src=src, group=_CONTROL["group"])
    return int(t.item())


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the answer)."""
    if not is_initialized():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)     # CPU, on the gloo control group
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=_CONTROL["group"])
    return bool(t.item())


def gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    if not is_initialized():
        return [obj]
    out = [None] * solver_count()
    torch.distributed.all_gather_object(out, obj, group=_CONTROL["group"])
    return out


def _unique_param_blobs(net) -> list:
    seen, out = set(), []
    for blobs in net.params.values():
        for b in blobs:
            if id(b) not in seen:
                seen.add(id(b))
                out.append(b)
    return out


def broadcast_params(net, src: int = 0) -> None:
    """Copy rank ``src``'s parameters (every layer blob, learnable or not) to all ranks."""
    if not is_initialized():
        return
    dev = _comm_device()
    for b in _unique_param_blobs(net):
        t = b.data_t.detach().to(dev, torch.float32).contiguous().clone()
        torch.distributed.broadcast(t, src=src)
        b.data_t = t.to(b.data_t.device)


def learned_params(net) -> list:
    """The learnable parameter blobs that the solver updates (``lr_mult != 0``): what data-parallel training
    keeps identical on every rank.  Blobs with ``lr_mult: 0`` are left out: BatchNorm's statistics (which
    Caffe forces to ``lr_mult: 0``) change in the forward pass from each rank's own batches."""
    return [b for b, lr in zip(net.learnable_params, net.params_lr) if lr != 0]


def params_digest(net) -> str:
    """SHA-256 of the learned parameters' (:func:`learned_params`) float32 bytes: equal digests mean
    bit-identical learned weights."""
    import hashlib

    h = hashlib.sha256()
    for b in learned_params(net):
        h.update(b.data_t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def verify_identical(net) -> str:
    """Every rank: compare the learned parameters' digests of all ranks; the same verdict on every rank
    (so that all ranks raise together, none waits for the others in a barrier).  Returns the digest."""
    digests = gather_objects(params_digest(net))
    ref = digests[0]
    bad = [r for r, d in enumerate(digests) if d != ref]
    if bad:
        if is_root():
            glog.error(f"rank(s) {bad} hold different learned weights from rank 0 after training",
                       src="parallel.py:0")
        raise RuntimeError(f"data-parallel ranks diverged: rank {bad[0]} != rank 0 (learned parameters)")
    if is_root():
        glog.info(f"All {len(digests)} ranks hold identical learned weights (sha256 {ref[:16]}...); "
                  f"BatchNorm statistics, if any, are per rank and rank 0's are saved.", src="parallel.cpp:0")
    return ref


class GradientAverager:
    """Solver callback: after the forward/backward passes, replace every learnable parameter's diff with
    the mean over ranks (all-reduce SUM, then scale by ``1 / world_size`` as Caffe's NCCL does)."""

    def __init__(self, net, bucket_bytes: int = 64 << 20):
        self.net = net
        self.bucket_elems = max(1, bucket_bytes // 4)

    def on_start(self) -> None:
        pass

    def on_gradients_ready(self) -> None:
        world = solver_count()
        if world <= 1:
            return
        params = self.net.learnable_params
        dev = _comm_device()
        scale = float(torch.tensor(1.0 / world, dtype=torch.float32))
        i = 0
        while i < len(params):
            # bucket consecutive parameters into one flat buffer per collective
            group, n = [], 0
            while i < len(params) and (not group or n + params[i].count <= self.bucket_elems):
                group.append(params[i])
                n += params[i].count
                i += 1
            flat = torch.cat([b.diff_t.detach().reshape(-1).to(dev, torch.float32) for b in group])
            torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
            flat.mul_(scale)
            o = 0
            for b in group:
                c = b.count
                b.diff_t = flat[o:o + c].reshape(b.shape).to(b.data_t.device).clone()
                o += c


def attach(solver) -> None:
    """Make ``solver`` data-parallel: broadcast rank 0's weights and average gradients every iteration."""
    if solver_count() <= 1:
        return
    broadcast_params(solver.net)
    solver.add_callback(GradientAverager(solver.net))


# ---------------------------------------------------------------------------------------------------------
# Running one rank, and spawning ranks on this machine
# ---------------------------------------------------------------------------------------------------------

class RankFailed(RuntimeError):
    """A data-parallel rank failed (or was killed); the message names the rank and its error."""


class SignalHandler:
    """Caffe's SignalHandler: SIGINT / SIGHUP set a flag; the solver polls and clears it.

    ``signals``: the (sigint-like, sighup-like) pair to catch; a spawned rank 0 catches SIGUSR1 / SIGUSR2,
    which its parent sends in place of the SIGINT / SIGHUP it received (see :func:`spawn_train`)."""

    def __init__(self, sigint_effect: int, sighup_effect: int, signals: Optional[Sequence[int]] = None):
        if signals is None:
            signals = (signal.SIGINT, getattr(signal, "SIGHUP", None))
        self.int_sig, self.hup_sig = signals
        self.effects = {self.int_sig: sigint_effect}
        if self.hup_sig is not None:
            self.effects[self.hup_sig] = sighup_effect
        self.got = {s: False for s in self.effects}
        self.old = {}

    def install(self) -> "SignalHandler":
        for s in self.effects:
            self.old[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)
        self.old = {}

    def _handle(self, signum, frame):  # noqa: ARG002
        self.got[signum] = True

    def __call__(self) -> int:
        from .solver import SolverAction

        # SIGHUP first, as Caffe's SignalHandler::CheckForSignals
        for s in ([self.hup_sig] if self.hup_sig is not None else []) + [self.int_sig]:
            if self.got.get(s):
                self.got[s] = False
                return self.effects[s]
        return SolverAction.NONE


def run_rank(solver_param, device: str = "cpu", snapshot: Optional[str] = None,
             weights: Optional[str] = None, sigint_effect: int = 1, sighup_effect: int = 2,
             install_signals: bool = True, check_identical: bool = True,
             handler: Optional[SignalHandler] = None):
    """Train one rank in an initialised process group (all ranks run this); returns the solver.

    ``solver_param`` is a SolverParameter (already given its device and train state by the caller).
    ``handler``: an already installed :class:`SignalHandler` to poll (else one is installed here when
    ``install_signals``)."""
    from . import mode
    from .solver import get_solver

    dev = torch.device(device)
    if dev.type == "cuda":
        mode.set_mode_gpu()
        mode.set_device(dev.index or 0)
    else:
        mode.set_mode_cpu()
    rank = solver_rank()
    if rank != 0:
        glog.set_level(max(glog.get_level(), glog.WARNING))
    own = handler is None and install_signals
    flags = handler if handler is not None else SignalHandler(sigint_effect, sighup_effect)
    if own:
        flags.install()
    try:
        solver = get_solver(solver_param, action_function=flags)
        if snapshot:
            if rank == 0:
                glog.info("Resuming from " + snapshot, src="caffe.cpp:237")
            solver.restore(snapshot)
        elif weights:
            for w in weights.split(","):
                if rank == 0:
                    glog.info("Finetuning from " + w, src="caffe.cpp:157")
                solver.net.copy_from(w)
                for tn in solver.test_nets:
                    tn.copy_from(w)
        attach(solver)
        if rank == 0:
            glog.info("Starting Optimization", src="caffe.cpp:248")
        solver.solve()
        if check_identical and solver_count() > 1:
            verify_identical(solver.net)
        return solver
    finally:
        if own:
            flags.uninstall()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: what a spawned rank 0 receives in place of the parent's SIGINT / SIGHUP
_FORWARD = {signal.SIGINT: getattr(signal, "SIGUSR1", None)}
if hasattr(signal, "SIGHUP"):
    _FORWARD[signal.SIGHUP] = getattr(signal, "SIGUSR2", None)


def _die_with_parent(parent_pid: int) -> None:
    """Make this process end when its parent ``caffe`` process dies, however it dies (SIGKILL included)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG (Linux)
    except Exception:  # noqa: BLE001 - not Linux: the watchdog below does it
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watchdog():
        while True:
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.5)

    import threading

    threading.Thread(target=watchdog, name="parent-watchdog", daemon=True).start()


def _spawned_rank(rank: int, world: int, port: int, devices: Sequence[str], backend: str, param_bytes: bytes,
                  snapshot, weights, sigint_effect, sighup_effect, log_level: int, threads: int,
                  parent_pid: int, errors, ready) -> None:
    # Signals: the terminal's SIGINT / SIGHUP reach every process of the foreground group; the ranks ignore
    # them and the parent passes each one on to rank 0 once (as SIGUSR1 / SIGUSR2), which shares the request
    # with the other ranks at the next iteration.  SIGTERM keeps its default: it ends the rank.
    for s in _FORWARD:
        signal.signal(s, signal.SIG_IGN)
    handler = None
    if rank == 0 and all(v is not None for v in _FORWARD.values()):
        handler = SignalHandler(sigint_effect, sighup_effect,
                                signals=(_FORWARD[signal.SIGINT], _FORWARD.get(getattr(signal, "SIGHUP", -1))))
        handler.install()
    if ready is not None:
        ready.set()
    _die_with_parent(parent_pid)
    from .proto import caffe_pb2

    if threads:
        torch.set_num_threads(threads)
    glog.set_level(log_level)
    code = 0
    try:
        param = caffe_pb2.SolverParameter()
        param.ParseFromString(param_bytes)
        device = torch.device(devices[rank])
        init(backend, device, rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
        run_rank(param, str(device), snapshot, weights, sigint_effect, sighup_effect,
                 install_signals=False, handler=handler)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which stops the other ranks
        msg = f"rank {rank} failed: {type(e).__name__}: {e}"
        glog.log(glog.ERROR, msg, src="parallel.py:0")
        try:
            errors.put((rank, msg))
        except Exception:  # noqa: BLE001
            pass
        code = 1
    try:
        # after a failure: no barrier, the others may never arrive (the parent stops them)
        shutdown(ok=(code == 0))
    except Exception:  # noqa: BLE001
        code = code or 1
    sys.stderr.flush()
    os._exit(code)


def _stop(procs, grace_s: float = 3.0) -> None:
    """SIGTERM every rank still running, then SIGKILL what is left after ``grace_s``."""
    for p in procs:
        if p.exitcode is None:
            p.terminate()
    t0 = time.time()
    for p in procs:
        p.join(max(0.0, grace_s - (time.time() - t0)))
    for p in procs:
        if p.exitcode is None:
            p.kill()
            p.join(5)


def spawn_train(solver_param, devices: Sequence[str], backend: Optional[str] = None,
                snapshot: Optional[str] = None, weights: Optional[str] = None, sigint_effect: int = 1,
                sighup_effect: int = 2) -> int:
    """Start one training process per entry of ``devices`` (``"cuda:0"``, ``"cpu"``...) on this machine and
    wait for them; returns 0 when every rank finished, 143 when this process was sent SIGTERM (every rank
    is stopped first).  A rank that fails stops the others at once; :class:`RankFailed` then carries its
    error.  SIGINT / SIGHUP sent to this process are passed on to rank 0 (once each), which shares the
    request with the other ranks; the ranks die with this process, whatever kills it."""
    import multiprocessing as mp

    devices = [str(torch.device(d)) for d in devices]
    world = len(devices)
    backend = backend or _default_backend(torch.device(devices[0]))
    port = _free_port()
    ctx = mp.get_context("spawn")
    threads = torch.get_num_threads() if all(d.startswith("cpu") for d in devices) else 0
    if threads:
        threads = max(1, threads // world)
    errors = ctx.SimpleQueue()
    ready = ctx.Event()
    state = {"pending": [], "term": False}

    def on_signal(signum, frame):  # noqa: ARG001
        if signum == signal.SIGTERM:
            state["term"] = True
        else:
            state["pending"].append(signum)

    old = {}
    for s in list(_FORWARD) + [signal.SIGTERM]:
        old[s] = signal.signal(s, on_signal)
    procs = []
    try:
        for r in range(world):
            p = ctx.Process(target=_spawned_rank, daemon=False,
                            args=(r, world, port, devices, backend, solver_param.SerializeToString(), snapshot,
                                  weights, sigint_effect, sighup_effect, glog.get_level(), threads, os.getpid(),
                                  errors, ready if r == 0 else None))
            p.start()
            procs.append(p)
        while True:
            if state["term"]:
                glog.error("SIGTERM received: stopping every rank", src="parallel.py:0")
                _stop(procs, grace_s=0.0)
                return 143
            while state["pending"] and ready.is_set():
                s = state["pending"].pop(0)
                target = _FORWARD.get(s)
                if target is not None and procs[0].exitcode is None and procs[0].pid:
                    os.kill(procs[0].pid, target)
            codes = [p.exitcode for p in procs]
            if all(c is not None for c in codes):
                break
            if not errors.empty() or any(c not in (None, 0) for c in codes):
                _stop(procs)
                break
            time.sleep(0.02)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if any(p.exitcode is None for p in procs):
            _stop(procs, grace_s=0.0)
    messages = []
    while not errors.empty():
        messages.append(errors.get()[1])
    bad = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode != 0]
    if messages or bad:
        for r, c in bad:
            glog.error(f"rank {r} exited with status {c}", src="parallel.py:0")
        failure = messages[0] if messages else \
            f"rank {bad[0][0]} ended with status {bad[0][1]}" + \
            (f" (signal {-bad[0][1]})" if bad[0][1] is not None and bad[0][1] < 0 else "")
        raise RankFailed(failure)
    return 0
