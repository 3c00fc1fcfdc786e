"""The ``caffe`` command: BVLC Caffe's ``tools/caffe.cpp`` (train, test, time, device_query).

Flags are gflags-style and may come before or after the command: ``-solver x``, ``-solver=x``,
``--solver x`` and ``--solver=x`` are the same.  As in Caffe:

* ``caffe train -solver S [-weights W1,W2 | -snapshot X.solverstate] [-gpu 0 | 0,1 | all]
  [-level L] [-stage a,b] [-sigint_effect stop|snapshot|none] [-sighup_effect snapshot|stop|none]``
* ``caffe test -model M -weights W [-iterations 50] [-gpu N] [-level L] [-stage a,b]``
* ``caffe time -model M [-weights W] [-iterations 50] [-gpu N] [-phase TRAIN|TEST] [-level L] [-stage a,b]``
* ``caffe device_query -gpu N | all``

Without ``-gpu`` everything runs on the CPU, whatever the solver's ``solver_mode`` says.  ``-gpu 0,1`` or
``-gpu all`` trains data-parallel with one process per GPU (see :mod:`torchcaffe.parallel`); the effective
batch is ``batch_size x GPUs``.  Extensions: ``-cpu_ranks N`` trains data-parallel on N CPU processes (gloo);
``-backend nccl|gloo`` overrides the backend; under ``torchrun`` each process is one rank.  ``-log_dir D``
also writes a glog-style log file in ``D``; ``-minloglevel N`` drops lines below severity N.

Log lines are in glog's format on stderr, so Caffe's log parsers read them.  The exit status is 0 on
success and 1 on an error (which is logged as an ``F`` line).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, List, Optional, Sequence

from . import glog

USAGE = """caffe: command line brew
usage: caffe <command> <args>

commands:
  train           train or finetune a model
  test            score a model
  device_query    show GPU diagnostic information
  time            benchmark model execution time

  Flags:
    -gpu (Optional; run in GPU mode on given device IDs separated by ','.Use
      '-gpu all' to run on all available GPUs. The effective training batch
      size is multiplied by the number of devices.) type: string default: ""
    -iterations (The number of iterations to run.) type: int32 default: 50
    -level (Optional; network level.) type: int32 default: 0
    -model (The model definition protocol buffer text file.) type: string
      default: ""
    -phase (Optional; network phase (TRAIN or TEST). Only used for 'time'.)
      type: string default: ""
    -sighup_effect (Optional; action to take when a SIGHUP signal is received:
      snapshot, stop or none.) type: string default: "snapshot"
    -sigint_effect (Optional; action to take when a SIGINT signal is received:
      snapshot, stop or none.) type: string default: "stop"
    -snapshot (Optional; the snapshot solver state to resume training.)
      type: string default: ""
    -solver (The solver definition protocol buffer text file.) type: string
      default: ""
    -stage (Optional; network stages (not to be confused with phase),
      separated by ','.) type: string default: ""
    -weights (Optional; the pretrained weights to initialize finetuning,
      separated by ','. Cannot be set simultaneously with snapshot.)
      type: string default: ""
  torchcaffe extensions:
    -cpu_ranks (Optional; train data-parallel on this many CPU processes
      (gloo).) type: int32 default: 0
    -backend (Optional; torch.distributed backend for multi-device training:
      nccl or gloo.) type: string default: ""
    -log_dir (Optional; also write a glog-style log file there.) type: string
    -minloglevel (Messages below this severity are not logged: 0 INFO,
      1 WARNING, 2 ERROR.) type: int32 default: 0
    -nonfinite_loss (train: 'stop' at the first NaN or infinite loss, naming
      the iteration and keeping the last snapshot; 'continue' trains on as
      Caffe does.) type: string default: "stop"
"""

_FLAGS: Dict[str, object] = {
    "gpu": "", "solver": "", "model": "", "phase": "", "level": 0, "stage": "", "snapshot": "",
    "weights": "", "iterations": 50, "sigint_effect": "stop", "sighup_effect": "snapshot",
    "cpu_ranks": 0, "backend": "", "log_dir": "", "minloglevel": None, "nonfinite_loss": "stop",
}
_BOOL_FLAGS = {"logtostderr", "alsologtostderr", "help", "version", "helpshort"}


class CliError(Exception):
    """A command-line error; the message is logged as Caffe's CHECK failures are."""


def parse_flags(argv: Sequence[str]):
    """gflags-style parsing: returns ``(flags, positional, given)``; ``given`` = the flags set explicitly."""
    flags = dict(_FLAGS)
    given = set()
    positional: List[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if a == "--":
            positional += argv[i + 1:]
            break
        if a.startswith("-") and len(a) > 1 and not _is_number(a):
            body = a.lstrip("-")
            name, eq, value = body.partition("=")
            if name in _BOOL_FLAGS or (name.startswith("no") and name[2:] in _BOOL_FLAGS):
                flags[name] = (value.lower() not in ("false", "0", "no")) if eq else True
                given.add(name)
                i += 1
                continue
            if name not in _FLAGS:
                raise CliError(f"ERROR: unknown command line flag '{name}'")
            if not eq:
                if i + 1 >= len(argv):
                    raise CliError(f"ERROR: flag '{a}' is missing its argument")
                value = argv[i + 1]
                i += 1
            default = _FLAGS[name]
            if isinstance(default, int) or name == "minloglevel":
                try:
                    value = int(value)
                except ValueError:
                    raise CliError(f"ERROR: illegal value '{value}' specified for int32 flag '{name}'") from None
            flags[name] = value
            given.add(name)
        else:
            positional.append(a)
        i += 1
    return flags, positional, given


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _info(msg: str, src: str) -> None:
    glog.info(msg, src=src)


# ---------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------

def get_gpus(flag: str) -> List[int]:
    """Caffe's get_gpus: ``""`` -> none, ``"all"`` -> every visible device, ``"0,2"`` -> those ids."""
    import torch

    if flag == "all":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise CliError("-gpu all: no CUDA device is available to torch on this machine (CPU-only torch "
                           "build or no GPU); run without -gpu to use the CPU")
        return list(range(n))
    if not flag:
        return []
    out = []
    for s in flag.split(","):
        s = s.strip()
        try:
            out.append(int(s))
        except ValueError:
            raise CliError(f"-gpu: '{s}' is not a device id (use ids separated by ',' or 'all')") from None
    return out


def _check_gpus(gpus: List[int]) -> None:
    from . import mode

    try:
        mode.check_gpus(gpus)
    except mode.DeviceError as e:
        raise CliError(str(e)) from None


def _single_device(flags) -> Optional[int]:
    """test/time: one GPU at most (Caffe drops the others with a message)."""
    from . import mode

    gpus = get_gpus(flags["gpu"])
    while len(gpus) > 1:
        _info(f"Not using GPU #{gpus[-1]} for single-GPU function", "caffe.cpp:291")
        gpus.pop()
    _check_gpus(gpus)
    if gpus:
        import torch

        _info(f"Use GPU with device ID {gpus[0]}", "caffe.cpp:297")
        _info(f"GPU device name: {torch.cuda.get_device_name(gpus[0])}", "caffe.cpp:301")
        mode.set_device(gpus[0])
        mode.set_mode_gpu()
        return gpus[0]
    _info("Use CPU.", "caffe.cpp:306")
    mode.set_mode_cpu()
    return None


def _stages(flags) -> List[str]:
    return [s for s in str(flags["stage"]).split(",") if s]


def _phase(flags, default: int) -> int:
    from .proto import caffe_pb2

    ph = flags["phase"]
    if ph == "":
        return default
    if ph == "TRAIN":
        return caffe_pb2.TRAIN
    if ph == "TEST":
        return caffe_pb2.TEST
    raise CliError('phase must be "TRAIN" or "TEST"')


# ---------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------

def device_query(flags, given) -> int:
    import torch

    _info(f"Querying GPUs {flags['gpu']}", "caffe.cpp:112")
    if not flags["gpu"]:
        raise CliError("device_query: give the device(s) to query with -gpu N (or -gpu all)")
    if not torch.cuda.is_available():
        raise CliError("device_query: no CUDA device is available to torch on this machine (CPU-only torch "
                       "build or no GPU); nothing to query")
    gpus = get_gpus(flags["gpu"])
    _check_gpus(gpus)
    for g in gpus:
        p = torch.cuda.get_device_properties(g)
        rows = [("Device id", g), ("Major revision number", p.major), ("Minor revision number", p.minor),
                ("Name", p.name), ("Total global memory", p.total_memory)]
        for label, attr in (("Total shared memory per block", "shared_memory_per_block"),
                            ("Total registers per block", "regs_per_multiprocessor"),
                            ("Warp size", "warp_size"),
                            ("Maximum threads per block", "max_threads_per_block"),
                            ("Maximum threads per multiprocessor", "max_threads_per_multi_processor"),
                            ("L2 cache size", "L2_cache_size"),
                            ("Clock rate", "clock_rate")):
            v = getattr(p, attr, None)
            if v is not None:
                rows.append((label, v))
        rows.append(("Number of multiprocessors", p.multi_processor_count))
        for label, attr in (("Integrated", "is_integrated"), ("Multi-GPU board", "is_multi_gpu_board")):
            v = getattr(p, attr, None)
            if v is not None:
                rows.append((label, "Yes" if v else "No"))
        for label, v in rows:
            _info(f"{(label + ':').ljust(31)}{v}", "common.cpp:170")
    return 0


def train(flags, given) -> int:
    from . import parallel
    from .solver import SolverAction, read_solver

    if not flags["solver"]:
        raise CliError("Need a solver definition to train.")
    if flags["snapshot"] and flags["weights"]:
        raise CliError("Give a snapshot to resume training or weights to finetune but not both.")
    if "iterations" in given:
        _info("-iterations is not used by train (the solver's max_iter applies), as in Caffe", "caffe.cpp:200")
    sigint = SolverAction.parse(flags["sigint_effect"])
    sighup = SolverAction.parse(flags["sighup_effect"])
    if flags["nonfinite_loss"] not in ("stop", "continue"):
        raise CliError(f"-nonfinite_loss must be stop or continue, got '{flags['nonfinite_loss']}'")
    from .solver import NONFINITE_ENV

    os.environ[NONFINITE_ENV] = flags["nonfinite_loss"]
    param = read_solver(flags["solver"])
    if flags["snapshot"] or flags["weights"]:
        del param.weights[:]  # as caffe.cpp: a snapshot or -weights replaces the solver's own weights field
    param.train_state.level = int(flags["level"])
    for s in _stages(flags):
        param.train_state.stage.append(s)

    gpus = get_gpus(flags["gpu"])
    backend = flags["backend"] or None
    if backend not in (None, "nccl", "gloo"):
        raise CliError(f"-backend must be nccl or gloo, got '{backend}'")
    cpu_ranks = int(flags["cpu_ranks"])
    if cpu_ranks and gpus:
        raise CliError("give either -gpu or -cpu_ranks, not both")
    snapshot = flags["snapshot"] or None
    weights = flags["weights"] or None

    if parallel.launched_by_torchrun():
        return _train_torchrun(param, gpus, backend, snapshot, weights, sigint, sighup)

    if len(gpus) > 1 or cpu_ranks > 1:
        if gpus:
            _check_gpus(gpus)
            _info("Using GPUs " + ", ".join(map(str, gpus)), "caffe.cpp:222")
            import torch

            for g in gpus:
                _info(f"GPU {g}: {torch.cuda.get_device_name(g)}", "caffe.cpp:226")
            param.device_id = gpus[0]
            param.solver_mode = param.GPU
            devices = [f"cuda:{g}" for g in gpus]
        else:
            _info(f"Using {cpu_ranks} CPU processes (gloo)", "caffe.cpp:222")
            param.solver_mode = param.CPU
            devices = ["cpu"] * cpu_ranks
        rc = parallel.spawn_train(param, devices, backend=backend, snapshot=snapshot, weights=weights,
                                  sigint_effect=sigint, sighup_effect=sighup)
        if rc == 0:
            _info("Optimization Done.", "caffe.cpp:259")
        return rc

    device = "cpu"
    if gpus:
        _check_gpus(gpus)
        import torch

        _info("Using GPUs " + ", ".join(map(str, gpus)), "caffe.cpp:222")
        _info(f"GPU {gpus[0]}: {torch.cuda.get_device_name(gpus[0])}", "caffe.cpp:226")
        param.device_id = gpus[0]
        device = f"cuda:{gpus[0]}"
    else:
        _info("Use CPU.", "caffe.cpp:218")
    parallel.run_rank(param, device, snapshot, weights, sigint, sighup)
    _info("Optimization Done.", "caffe.cpp:259")
    return 0


def _train_torchrun(param, gpus, backend, snapshot, weights, sigint, sighup) -> int:
    from . import parallel

    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if gpus:
        _check_gpus(gpus)
        device = f"cuda:{gpus[local % len(gpus)]}"
    else:
        device = "cpu"
    import torch

    parallel.init(backend, torch.device(device))
    rank = parallel.solver_rank()
    try:
        if rank == 0:
            _info(f"torchrun: {parallel.solver_count()} ranks, backend "
                  f"{torch.distributed.get_backend()}", "caffe.cpp:222")
        parallel.run_rank(param, device, snapshot, weights, sigint, sighup)
    finally:
        parallel.shutdown()
    if rank == 0:
        _info("Optimization Done.", "caffe.cpp:259")
    return 0


def test(flags, given) -> int:
    import numpy as np

    from .net import Net
    from .proto import caffe_pb2

    if not flags["model"]:
        raise CliError("Need a model definition to score.")
    if not flags["weights"]:
        raise CliError("Need model weights to score.")
    _single_device(flags)
    net = Net(flags["model"], caffe_pb2.TEST, level=int(flags["level"]), stages=tuple(_stages(flags)))
    net.copy_from(flags["weights"])
    n = int(flags["iterations"])
    _info(f"Running for {n} iterations.", "caffe.cpp:318")
    scores: List[float] = []
    ids: List[str] = []
    loss = np.float32(0)
    for i in range(n):
        iter_loss = np.float32(net.forward_loss())
        loss = np.float32(loss + iter_loss)
        idx = 0
        for name in net.output_blob_names:
            vals = net.blobs[name].data.reshape(-1)
            for v in vals:
                v = np.float32(v)
                if i == 0:
                    scores.append(v)
                    ids.append(name)
                else:
                    scores[idx] = np.float32(scores[idx] + v)
                _info(f"Batch {i}, {name} = {glog.fmt(v)}", "caffe.cpp:333")
                idx += 1
    loss = np.float32(loss / np.float32(max(n, 1)))
    _info(f"Loss: {glog.fmt(loss)}", "caffe.cpp:338")
    for s, name in zip(scores, ids):
        w = np.float32(net.blob_loss_weights.get(name, 0.0))
        mean = np.float32(s / np.float32(n))
        extra = f" (* {glog.fmt(w)} = {glog.fmt(np.float32(w * mean))} loss)" if w else ""
        _info(f"{name} = {glog.fmt(mean)}{extra}", "caffe.cpp:350")
    return 0


def time_(flags, given) -> int:
    import torch

    from .net import Net
    from .proto import caffe_pb2

    if not flags["model"]:
        raise CliError("Need a model definition to time.")
    phase = _phase(flags, caffe_pb2.TRAIN)
    dev = _single_device(flags)
    net = Net(flags["model"], phase, level=int(flags["level"]), stages=tuple(_stages(flags)))
    if flags["weights"]:
        for w in str(flags["weights"]).split(","):
            net.copy_from(w)
    n = int(flags["iterations"])
    _info("Performing Forward", "caffe.cpp:382")
    initial = net.forward_loss()
    _info(f"Initial loss: {glog.fmt(initial)}", "caffe.cpp:387")
    _info("Performing Backward", "caffe.cpp:388")
    if hasattr(net, "backward_from_to"):
        net.backward_from_to()
    else:
        net.backward()
    _info("*** Benchmark begins ***", "caffe.cpp:396")
    _info(f"Testing for {n} iterations.", "caffe.cpp:397")
    sync = torch.cuda.synchronize if dev is not None else (lambda: None)
    names: List[str] = []
    fwd: List[float] = []
    bwd: List[float] = []
    total_start = time.perf_counter()
    for j in range(n):
        sync()
        t0 = time.perf_counter()
        rows = net.time_layers(1)
        sync()
        if not names:
            names = [r[0] for r in rows]
            fwd = [0.0] * len(rows)
            bwd = [0.0] * len(rows)
        for k, r in enumerate(rows):
            fwd[k] += r[2]
            bwd[k] += r[3]
        _info(f"Iteration: {j + 1} forward-backward time: {glog.fmt((time.perf_counter() - t0) * 1000)} ms.",
              "caffe.cpp:424")
    total_ms = (time.perf_counter() - total_start) * 1000
    d = max(n, 1)
    _info("Average time per layer: ", "caffe.cpp:427")
    for k, name in enumerate(names):
        _info(f"{name:>10}\tforward: {glog.fmt(fwd[k] / d)} ms.", "caffe.cpp:430")
        _info(f"{name:>10}\tbackward: {glog.fmt(bwd[k] / d)} ms.", "caffe.cpp:433")
    _info(f"Average Forward pass: {glog.fmt(sum(fwd) / d)} ms.", "caffe.cpp:438")
    _info(f"Average Backward pass: {glog.fmt(sum(bwd) / d)} ms.", "caffe.cpp:440")
    _info(f"Average Forward-Backward: {glog.fmt(total_ms / d)} ms.", "caffe.cpp:442")
    _info(f"Total Time: {glog.fmt(total_ms)} ms.", "caffe.cpp:443")
    _info("*** Benchmark ends ***", "caffe.cpp:444")
    return 0


COMMANDS = {"device_query": device_query, "test": test, "time": time_, "train": train}
# where each command lives in Caffe's tools/caffe.cpp (for the file:line of F lines)
_COMMAND_LINES = {"device_query": 112, "train": 178, "test": 276, "time": 360}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        flags, positional, given = parse_flags(argv)
    except CliError as e:
        sys.stderr.write(str(e) + "\n")
        return 1
    if flags.get("version"):
        from . import __version__

        sys.stdout.write(f"caffe version 1.0.0 (torchcaffe {__version__})\n")
        return 0
    if flags.get("help") or flags.get("helpshort") or len(positional) != 1:
        sys.stderr.write(USAGE)
        return 0 if (flags.get("help") or flags.get("helpshort")) else 1
    if flags["minloglevel"] is not None:
        glog.set_level(int(flags["minloglevel"]))
    if flags["log_dir"]:
        try:
            glog.log_to_dir(str(flags["log_dir"]))
        except OSError as e:
            what = "is a file, not a folder" if os.path.isfile(str(flags["log_dir"])) else \
                f"cannot write a log file there: {e.strerror or e}"
            sys.stderr.write(f"-log_dir {flags['log_dir']}: {what}\n")
            return 1
    command = positional[0]
    fn = COMMANDS.get(command)
    if fn is None:
        glog.error("Available caffe actions:", src="caffe.cpp:78")
        for name in sorted(COMMANDS):
            glog.error("\t" + name, src="caffe.cpp:81")
        glog.log(glog.FATAL, f"Unknown action: {command}", src="caffe.cpp:83")
        return 1
    try:
        return int(fn(flags, given) or 0)
    except KeyboardInterrupt:
        glog.log(glog.FATAL, "Interrupted.", src="caffe.cpp:0")
        return 130
    except Exception as e:  # noqa: BLE001 - every failure becomes one F line and status 1
        if os.environ.get("TORCHCAFFE_TRACEBACK"):
            import traceback

            traceback.print_exc()
        glog.log(glog.FATAL, f"{type(e).__name__}: {e}" if not isinstance(e, CliError) else str(e),
                 src=f"caffe.cpp:{_COMMAND_LINES.get(command, 0)}")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
