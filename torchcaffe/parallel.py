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
from .common import solver_count, solver_rank

__all__ = ["solver_rank", "solver_count", "is_root", "is_initialized", "launched_by_torchrun", "init",
           "shutdown", "broadcast_int", "broadcast_params", "gather_objects", "GradientAverager", "attach",
           "run_rank", "spawn_train", "params_digest", "SignalHandler"]


# ---------------------------------------------------------------------------------------------------------
# Rank queries (Caffe::solver_rank / Caffe::solver_count)
# ---------------------------------------------------------------------------------------------------------

def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


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
    if backend == "nccl" and device.type == "cuda":
        try:
            torch.distributed.init_process_group(device_id=device, **kwargs)
            return
        except TypeError:  # older torch without device_id
            pass
    torch.distributed.init_process_group(**kwargs)


def shutdown() -> None:
    if is_initialized():
        try:
            torch.distributed.barrier()
        finally:
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
    t = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device())
    torch.distributed.broadcast(t, src=src)
    return int(t.item())


def gather_objects(obj) -> list:
    """Every rank's picklable ``obj``, in rank order, on every rank."""
    if not is_initialized():
        return [obj]
    out = [None] * solver_count()
    torch.distributed.all_gather_object(out, obj)
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


def params_digest(net) -> str:
    """SHA-256 of the learnable parameters' float32 bytes: equal digests mean bit-identical weights."""
    import hashlib

    h = hashlib.sha256()
    for b in net.learnable_params:
        h.update(b.data_t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


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

class SignalHandler:
    """Caffe's SignalHandler: SIGINT / SIGHUP set a flag; the solver polls and clears it."""

    def __init__(self, sigint_effect: int, sighup_effect: int):
        self.effects = {signal.SIGINT: sigint_effect}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = sighup_effect
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
        for s in ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []) + [signal.SIGINT]:
            if self.got.get(s):
                self.got[s] = False
                return self.effects[s]
        return SolverAction.NONE


def run_rank(solver_param, device: str = "cpu", snapshot: Optional[str] = None,
             weights: Optional[str] = None, sigint_effect: int = 1, sighup_effect: int = 2,
             install_signals: bool = True, check_identical: bool = True):
    """Train one rank in an initialised process group (all ranks run this); returns the solver.

    ``solver_param`` is a SolverParameter (already given its device and train state by the caller)."""
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
        glog.set_level(glog.WARNING)
    flags = SignalHandler(sigint_effect, sighup_effect)
    if install_signals:
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
            digests = gather_objects(params_digest(solver.net))
            if rank == 0:
                ref = digests[0]
                for r, d in enumerate(digests[1:], start=1):
                    if d != ref:
                        glog.error(f"rank {r} holds different weights from rank 0 after training",
                                   src="parallel.py:0")
                        raise RuntimeError(f"data-parallel ranks diverged: rank {r} != rank 0")
                glog.info(f"All {len(digests)} ranks hold identical weights (sha256 {ref[:16]}...).",
                          src="parallel.cpp:0")
        return solver
    finally:
        if install_signals:
            flags.uninstall()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned_rank(rank: int, world: int, port: int, devices: Sequence[str], backend: str, param_bytes: bytes,
                  snapshot, weights, sigint_effect, sighup_effect, log_level: int, threads: int) -> None:
    from .proto import caffe_pb2

    if threads:
        torch.set_num_threads(threads)
    glog.set_level(log_level)
    param = caffe_pb2.SolverParameter()
    param.ParseFromString(param_bytes)
    device = torch.device(devices[rank])
    init(backend, device, rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    code = 0
    try:
        # only rank 0 reacts to signals; its request is broadcast to the others every iteration
        if rank != 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if hasattr(signal, "SIGHUP"):
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
        run_rank(param, str(device), snapshot, weights, sigint_effect, sighup_effect,
                 install_signals=(rank == 0))
    except BaseException as e:  # noqa: BLE001
        glog.log(glog.ERROR, f"rank {rank} failed: {type(e).__name__}: {e}", src="parallel.py:0")
        code = 1
    finally:
        try:
            if code == 0:
                shutdown()
        except Exception:  # noqa: BLE001
            code = code or 1
    sys.stderr.flush()
    os._exit(code)


def spawn_train(solver_param, devices: Sequence[str], backend: Optional[str] = None,
                snapshot: Optional[str] = None, weights: Optional[str] = None, sigint_effect: int = 1,
                sighup_effect: int = 2) -> int:
    """Start one training process per entry of ``devices`` (``"cuda:0"``, ``"cpu"``...) on this machine and
    wait for them; returns 0 when every rank finished.  SIGINT / SIGHUP sent to this process are passed on
    to rank 0, which shares the request with the other ranks."""
    import multiprocessing as mp

    devices = [str(torch.device(d)) for d in devices]
    world = len(devices)
    backend = backend or _default_backend(torch.device(devices[0]))
    port = _free_port()
    ctx = mp.get_context("spawn")
    threads = torch.get_num_threads() if all(d.startswith("cpu") for d in devices) else 0
    if threads:
        threads = max(1, threads // world)
    procs = []
    for r in range(world):
        p = ctx.Process(target=_spawned_rank, daemon=False,
                        args=(r, world, port, devices, backend, solver_param.SerializeToString(), snapshot,
                              weights, sigint_effect, sighup_effect, glog.get_level(), threads))
        p.start()
        procs.append(p)

    def forward(signum, frame):  # noqa: ARG001
        if procs[0].is_alive() and procs[0].pid:
            os.kill(procs[0].pid, signum)

    old = {}
    for s in [signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []):
        old[s] = signal.signal(s, forward)
    try:
        while True:
            codes = [p.exitcode for p in procs]
            if all(c is not None for c in codes):
                break
            if any(c not in (None, 0) for c in codes):
                # one rank failed: the others would wait forever in a collective
                time.sleep(2.0)
                for p in procs:
                    if p.exitcode is None:
                        p.terminate()
                for p in procs:
                    p.join(10)
                break
            time.sleep(0.05)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    bad = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode != 0]
    for r, c in bad:
        glog.error(f"rank {r} exited with status {c}", src="parallel.py:0")
    return 0 if not bad else 1
