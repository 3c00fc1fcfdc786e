"""Solvers, learning-rate policies, snapshots and restore, computing what BVLC Caffe 1.0 computes.

pycaffe's API::

    solver = caffe.get_solver("solver.prototxt")      # the class that the prototxt's ``type`` names
    solver = caffe.AdamSolver("solver.prototxt")      # or a given class, whatever ``type`` says
    solver.net, solver.test_nets, solver.iter, solver.param, solver.max_iter
    solver.step(n); solver.solve(resume_file=None); solver.snapshot(); solver.restore("x.solverstate")
    solver.share_weights(net); solver.apply_update(); solver.add_callback(on_start, on_gradients_ready)

The arithmetic follows Caffe's ``Solver::Step`` / ``SGDSolver::ApplyUpdate`` and the six
``ComputeUpdateValue`` rules step by step, in float32 (Caffe's ``Dtype``): clear the parameter diffs,
``iter_size`` forward/backward passes accumulating into the diffs, ``loss /= iter_size``, the smoothed loss
over ``average_loss`` iterations, then the learning rate of the policy, gradient clipping by the global L2
norm, and per learnable parameter: normalisation by ``iter_size``, L2 or L1 weight decay scaled by the
parameter's ``decay_mult``, and the solver's update with ``local_rate = rate * lr_mult``; finally
``data -= diff`` (Net::Update).

Snapshots are ``<prefix>_iter_<N>.caffemodel`` + ``<prefix>_iter_<N>.solverstate`` (``snapshot_format:
BINARYPROTO``) or ``.caffemodel.h5`` + ``.solverstate.h5`` (``HDF5``), in Caffe's layout: ``SolverState``
holds ``iter``, ``learned_net`` (the model file's name as written), ``history`` (for Adam and AdaDelta the
second moment/update history follows all first histories) and ``current_step``.  Each file is written to a
temporary name and renamed, so a crash never leaves a truncated snapshot.

Exact resumption, beyond Caffe: next to every solverstate a sidecar ``<solverstate>.rng`` records the data
layers' positions (``Net.state()``) of the train and test nets and the random generators' states; restoring a
solverstate that has one continues bit-for-bit where the snapshotted run was.  Without a sidecar (a
solverstate written by BVLC Caffe) the restore is exactly Caffe's: weights, history, iter and current_step;
the data layers go on from where they are (at the top of their sources in a fresh solver).

The sidecar is JSON (format ``torchcaffe-resume``, ``version`` 2) whose arrays (random generator states) are
tagged ``{"__array__": dtype, "shape": [...], "b64": ...}``: nothing in it can carry code, and a file that
is not such a JSON document (an old pickled sidecar, a damaged or crafted file) is refused with an error
naming it, never unpickled.  Remove it to resume as from a Caffe solverstate.
"""
from __future__ import annotations

import base64
import json
import math
import os
import random
import time
from typing import Callable, List, Optional, Sequence, Union

import numpy as np
import torch

from . import glog
from . import mode
from .proto import caffe_pb2

__all__ = ["Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
           "AdamSolver", "get_solver", "solver_types", "read_solver", "SolverAction", "SolverError",
           "learning_rate", "SIDECAR_SUFFIX", "DivergenceError", "NONFINITE_ENV"]

#: Suffix of the exact-resumption sidecar written next to each solverstate.
SIDECAR_SUFFIX = ".rng"
_SIDECAR_FORMAT = "torchcaffe-resume"
_SIDECAR_VERSION = 2

_F32 = np.float32
_LEGACY_TYPES = {caffe_pb2.SolverParameter.SGD: "SGD", caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
                 caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad", caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
                 caffe_pb2.SolverParameter.ADADELTA: "AdaDelta", caffe_pb2.SolverParameter.ADAM: "Adam"}


#: ``caffe train -nonfinite_loss continue`` sets this in the environment (so that spawned ranks see it too):
#: train on after a NaN or infinite loss, as Caffe does
NONFINITE_ENV = "TORCHCAFFE_NONFINITE_LOSS"


class SolverError(ValueError):
    """A solver definition or solver state that cannot be used; the message says what and where."""


class DivergenceError(SolverError):
    """Training stopped at a NaN or infinite loss (``Solver.stop_on_nonfinite_loss``); names the iteration."""


class SolverAction:
    """What a signal asks the solver to do (Caffe's SolverAction::Enum)."""
    NONE = 0
    STOP = 1
    SNAPSHOT = 2

    @staticmethod
    def parse(name: str) -> int:
        try:
            return {"none": SolverAction.NONE, "stop": SolverAction.STOP,
                    "snapshot": SolverAction.SNAPSHOT}[str(name)]
        except KeyError:
            raise SolverError(f"Invalid signal effect \"{name}\" was specified (snapshot, stop or none)") from None


# ---------------------------------------------------------------------------------------------------------
# Reading solver definitions
# ---------------------------------------------------------------------------------------------------------

def _upgrade_solver_type(param: "caffe_pb2.SolverParameter", source: str = "") -> None:
    """Caffe's UpgradeSolverType: the legacy ``solver_type`` enum becomes the ``type`` string."""
    if not param.HasField("solver_type"):
        return
    if param.HasField("type"):
        raise SolverError(f"{source or 'solver'}: both the legacy 'solver_type' and 'type' are given; "
                          f"keep only 'type'")
    param.type = _LEGACY_TYPES[param.solver_type]
    param.ClearField("solver_type")


def _upgrade_snapshot_prefix(param: "caffe_pb2.SolverParameter", path: str) -> None:
    """Caffe's UpgradeSnapshotPrefixProperty: default prefix = the solver file without its extension; a
    prefix naming a directory gets the solver file's stem appended."""
    stem = os.path.splitext(path)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
        glog.info("snapshot_prefix was not specified and is set to " + param.snapshot_prefix,
                  src="upgrade_proto.cpp:1081")
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
        glog.info("snapshot_prefix was a directory and is replaced to " + param.snapshot_prefix,
                  src="upgrade_proto.cpp:1085")


def read_solver(solver: Union[str, os.PathLike, "caffe_pb2.SolverParameter"]) -> "caffe_pb2.SolverParameter":
    """A SolverParameter from a prototxt path (read and upgraded as Caffe's ReadSolverParamsFromTextFileOrDie)
    or a copy of a given SolverParameter (with the legacy ``solver_type`` upgraded)."""
    if isinstance(solver, caffe_pb2.SolverParameter):
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(solver)
        _upgrade_solver_type(param)
        return param
    from .protoio import read_solver_param

    path = os.fspath(solver)
    param = read_solver_param(path)
    _upgrade_solver_type(param, path)
    _upgrade_snapshot_prefix(param, path)
    return param


# ---------------------------------------------------------------------------------------------------------
# Learning-rate policies
# ---------------------------------------------------------------------------------------------------------

def learning_rate(param: "caffe_pb2.SolverParameter", it: int, current_step: int):
    """Caffe's SGDSolver::GetLearningRate at iteration ``it``: returns ``(rate, current_step, stepped)``.

    ``current_step`` is the solver's (step: ``floor(it / stepsize)``; multistep: advanced by at most one
    per call when ``it`` reaches the next ``stepvalue``); ``stepped`` tells that multistep advanced.  The
    rate is rounded to float32 as Caffe's ``Dtype rate``.
    """
    policy = param.lr_policy
    base_lr = float(param.base_lr)
    stepped = False
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        if param.stepsize <= 0:
            raise SolverError("lr_policy 'step' needs stepsize > 0")
        if param.gamma < 0:
            raise SolverError("lr_policy 'step' needs gamma >= 0")
        current_step = it // param.stepsize
        rate = base_lr * math.pow(param.gamma, current_step)
    elif policy == "exp":
        if param.gamma < 0:
            raise SolverError("lr_policy 'exp' needs gamma >= 0")
        rate = base_lr * math.pow(param.gamma, it)
    elif policy == "inv":
        if param.gamma < 0:
            raise SolverError("lr_policy 'inv' needs gamma >= 0")
        base = float(_F32(1) + _F32(param.gamma) * _F32(it))
        rate = base_lr * math.pow(base, -float(param.power))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
            stepped = True
        if param.gamma < 0:
            raise SolverError("lr_policy 'multistep' needs gamma >= 0")
        rate = base_lr * math.pow(param.gamma, current_step)
    elif policy == "poly":
        frac = float(_F32(1) - _F32(it) / _F32(param.max_iter)) if param.max_iter else float("-inf")
        try:
            rate = base_lr * math.pow(frac, float(param.power))
        except (ValueError, OverflowError):
            rate = float("nan")
    elif policy == "sigmoid":
        if param.gamma < 0:
            raise SolverError("lr_policy 'sigmoid' needs gamma >= 0")
        if param.stepsize <= 0:
            raise SolverError("lr_policy 'sigmoid' needs stepsize > 0")
        z = -float(param.gamma) * float(_F32(it) - _F32(param.stepsize))
        rate = base_lr * (1.0 / (1.0 + math.exp(z))) if z < 700 else 0.0
    else:
        raise SolverError(f"Unknown learning rate policy: {policy}")
    return float(_F32(rate)), current_step, stepped


# ---------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------

def _f(x) -> str:
    return glog.fmt(x)


def _resolve_beside(path: str, anchor_file: str) -> str:
    """``path`` as Caffe opens it (relative to the working directory); when absent there, the same name
    beside ``anchor_file`` (so that a snapshot folder can be moved)."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    for cand in (os.path.join(os.path.dirname(anchor_file), path),
                 os.path.join(os.path.dirname(anchor_file), os.path.basename(path))):
        if os.path.exists(cand):
            return cand
    return path


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    if "torch" in st:
        torch.set_rng_state(st["torch"])
    if "numpy" in st:
        np.random.set_state(st["numpy"])
    if "python" in st:
        random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        states = st["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


class _Unencodable(TypeError):
    pass


def _to_json(obj):
    """``obj`` (nested dicts with str keys, lists, tuples, numbers, strings, None, numpy arrays, torch
    tensors, bytes) as plain JSON values; arrays become tagged base64 dicts.  Tuples come back as lists."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, (bytes, bytearray)):
        obj = np.frombuffer(bytes(obj), dtype=np.uint8)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise _Unencodable(f"an array of dtype {obj.dtype}")
        a = np.ascontiguousarray(obj)
        return {"__array__": a.dtype.str, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise _Unencodable("a dict with keys that are not strings")
        if "__array__" in obj:
            raise _Unencodable("a dict with the reserved key '__array__'")
        return {k: _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    raise _Unencodable(f"a {type(obj).__name__}")


def _from_json(obj):
    """The inverse of :func:`_to_json` (arrays come back as numpy arrays; only numeric dtypes)."""
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    if isinstance(obj, dict):
        if "__array__" in obj:
            dt = np.dtype(str(obj["__array__"]))
            if dt.kind not in "biuf":
                raise ValueError(f"array of dtype {dt}")
            raw = base64.b64decode(str(obj["b64"]).encode(), validate=True)
            return np.frombuffer(raw, dtype=dt).reshape([int(s) for s in obj["shape"]]).copy()
        return {k: _from_json(v) for k, v in obj.items()}
    return obj


def _encode_net_state(st: dict, which: str) -> dict:
    out = {}
    for name, s in st.items():
        try:
            out[name] = _to_json(s)
        except _Unencodable as e:
            glog.warning(f"layer '{name}' of the {which} net: its state() holds {e}, which the resume sidecar "
                         f"(JSON) cannot store; its data position is not saved")
    return out


def _encode_rng(st: dict) -> dict:
    np_name, np_keys, np_pos, np_gauss, np_cached = st["numpy"]
    py_version, py_internal, py_gauss = st["python"]
    out = {"torch": _to_json(st["torch"]),
           "numpy": [str(np_name), _to_json(np.asarray(np_keys, dtype=np.uint32)), int(np_pos), int(np_gauss),
                     float(np_cached)],
           "python": [int(py_version), _to_json(np.asarray(py_internal, dtype=np.int64)), py_gauss]}
    if "cuda" in st:
        out["cuda"] = [_to_json(s) for s in st["cuda"]]
    return out


def _decode_rng(st: dict) -> dict:
    out = {}
    if "torch" in st:
        out["torch"] = torch.from_numpy(np.asarray(st["torch"], dtype=np.uint8))
    if "numpy" in st:
        name, keys, pos, gauss, cached = st["numpy"]
        out["numpy"] = (str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(gauss), float(cached))
    if "python" in st:
        version, internal, gauss = st["python"]
        out["python"] = (int(version), tuple(int(v) for v in np.asarray(internal).reshape(-1)),
                         None if gauss is None else float(gauss))
    if "cuda" in st:
        out["cuda"] = [torch.from_numpy(np.asarray(s, dtype=np.uint8)) for s in st["cuda"]]
    return out


def write_sidecar(side: dict, path: str) -> None:
    """Write the resume sidecar ``side`` (iter, type, world_size, ranks) atomically as JSON."""
    from .protoio import atomic_write

    text = json.dumps(dict(side, format=_SIDECAR_FORMAT, version=_SIDECAR_VERSION), sort_keys=True)
    with atomic_write(path, "wb") as f:
        f.write(text.encode("utf-8"))


def read_sidecar(path: str) -> dict:
    """The resume sidecar at ``path`` (rng states decoded); :class:`SolverError` naming the file for anything
    but a JSON sidecar of this format.  Nothing in the file is executed."""
    hint = ("remove it to resume without the exact data positions and random generator states, as from a "
            "Caffe solverstate")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SolverError(f"cannot read the resume sidecar {path}: {e.strerror or e}") from None
    if raw[:1] == b"\x80":
        raise SolverError(f"{path}: a pickled resume sidecar (from an older torchcaffe, or crafted); it is "
                          f"never unpickled, since a pickle can run code; {hint}")
    try:
        side = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SolverError(f"{path}: not a torchcaffe resume sidecar (not JSON: {e}); {hint}") from None
    if not isinstance(side, dict) or side.get("format") != _SIDECAR_FORMAT:
        raise SolverError(f"{path}: not a torchcaffe resume sidecar (no 'format: {_SIDECAR_FORMAT}'); {hint}")
    if side.get("version") != _SIDECAR_VERSION:
        raise SolverError(f"{path}: resume sidecar version {side.get('version')!r}, this torchcaffe reads "
                          f"version {_SIDECAR_VERSION}; {hint}")
    try:
        ranks = []
        for r in side["ranks"]:
            ranks.append({"train": _from_json(r.get("train", {})), "test": _from_json(r.get("test", [])),
                          "rng": _decode_rng(_from_json(r.get("rng", {})))})
        side["ranks"] = ranks
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SolverError(f"{path}: damaged resume sidecar ({type(e).__name__}: {e}); {hint}") from None
    return side


class _CallbackPair:
    def __init__(self, on_start, on_gradients_ready):
        self._a, self._b = on_start, on_gradients_ready

    def on_start(self):
        if self._a is not None:
            self._a()

    def on_gradients_ready(self):
        if self._b is not None:
            self._b()


# ---------------------------------------------------------------------------------------------------------
# The solver
# ---------------------------------------------------------------------------------------------------------

class Solver:
    """Caffe's ``Solver`` + ``SGDSolver`` machinery; subclasses give ``compute_update_value``.

    ``Solver(param)`` where ``param`` is a solver prototxt path or a ``SolverParameter``.  In data-parallel
    training (see :mod:`torchcaffe.parallel`) the solver learns its rank from ``torch.distributed``: it seeds
    with ``random_seed + rank`` as Caffe does, and only rank 0 logs, tests and writes snapshots.
    """

    #: Caffe's registered type name
    type = "SGD"
    #: how many history blobs per learnable parameter (Adam and AdaDelta keep two)
    history_sets = 1

    def __init__(self, param, action_function: Optional[Callable[[], int]] = None):
        from . import parallel

        self.param = read_solver(param)
        self.rank = parallel.solver_rank()
        self.world_size = parallel.solver_count()
        self.root = self.rank == 0
        self.callbacks: list = []
        self.action_function = action_function
        self.requested_early_exit = False
        self._pending_snapshot = False
        self._init()

    # -- set-up (Solver::Init) --------------------------------------------------------------------------
    def _log(self, msg: str, src: str) -> None:
        if self.root:
            glog.info(msg, src=src)

    def _init(self) -> None:
        from google.protobuf import text_format

        p = self.param
        self._log("Initializing solver from parameters: \n" + text_format.MessageToString(p), "solver.cpp:48")
        if p.average_loss < 1:
            raise SolverError("average_loss should be non-negative (>= 1).")
        self._check_solver_specific()
        self._check_snapshot_write_permissions()
        if p.random_seed >= 0:
            mode.set_random_seed(int(p.random_seed) + self.rank)
        self._init_train_net()
        self._init_test_nets()
        self._log("Solver scaffolding done.", "solver.cpp:58")
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = 0.0
        self.loss = float("nan")
        self._losses: List[float] = []
        self._iterations_last = 0
        #: stop at the first NaN/inf loss (raise DivergenceError before the update); False: Caffe's behaviour
        self.stop_on_nonfinite_loss = os.environ.get(NONFINITE_ENV, "stop") != "continue"
        self.last_snapshot: Optional[str] = None
        self.mean_scores: List[List[float]] = [[] for _ in self.test_nets]
        self._pre_solve()

    def _check_solver_specific(self) -> None:
        """Constructor checks of the specific solver (Caffe's constructor_sanity_check)."""

    def _check_snapshot_write_permissions(self) -> None:
        p = self.param
        if not (self.root and p.snapshot):
            return
        if not p.HasField("snapshot_prefix"):
            raise SolverError("In solver params, snapshot is specified but snapshot_prefix is not")
        probe = self._snapshot_filename(".tempfile", it=0)
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError:
            raise SolverError(f"Cannot write to snapshot prefix '{p.snapshot_prefix}'.  Make sure that the "
                              f"directory exists and is writeable.") from None

    def _make_net(self, net_param: "caffe_pb2.NetParameter", state: "caffe_pb2.NetState"):
        from .net import Net

        net_param.state.CopyFrom(state)
        return Net(net_param, state.phase, level=state.level, stages=tuple(state.stage))

    def _read_net(self, path: str) -> "caffe_pb2.NetParameter":
        from .protoio import read_net_param

        return read_net_param(path)

    def _init_train_net(self) -> None:
        p = self.param
        n = sum(int(p.HasField(f)) for f in ("net", "net_param", "train_net", "train_net_param"))
        fields = "net, net_param, train_net, train_net_param"
        if n < 1:
            raise SolverError(f"SolverParameter must specify a train net using one of these fields: {fields}")
        if n > 1:
            raise SolverError(f"SolverParameter must not contain more than one of these fields specifying a "
                              f"train_net: {fields}")
        net_param = caffe_pb2.NetParameter()
        if p.HasField("train_net_param"):
            self._log("Creating training net specified in train_net_param.", "solver.cpp:77")
            net_param.CopyFrom(p.train_net_param)
        elif p.HasField("train_net"):
            self._log("Creating training net from train_net file: " + p.train_net, "solver.cpp:81")
            net_param = self._read_net(p.train_net)
        if p.HasField("net_param"):
            self._log("Creating training net specified in net_param.", "solver.cpp:86")
            net_param.CopyFrom(p.net_param)
        if p.HasField("net"):
            self._log("Creating training net from net file: " + p.net, "solver.cpp:90")
            net_param = self._read_net(p.net)
        state = caffe_pb2.NetState()
        state.phase = caffe_pb2.TRAIN
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        self.net = self._make_net(net_param, state)
        self._load_param_weights(self.net)

    def _load_param_weights(self, net) -> None:
        """Caffe's LoadNetWeights: copy each caffemodel that the solver's ``weights`` fields name (each field a
        comma-separated list) into ``net``, in order, as ``-weights`` does."""
        for model_list in self.param.weights:
            for name in model_list.split(","):
                name = name.strip()
                self._log("Finetuning from " + name, "solver.cpp:72")
                net.copy_from(name)

    def _init_test_nets(self) -> None:
        p = self.param
        has_net_param, has_net_file = p.HasField("net_param"), p.HasField("net")
        if has_net_param and has_net_file:
            raise SolverError("Both net_param and net_file may not be specified.")
        n_tests = len(p.test_net_param) + len(p.test_net)
        if has_net_param or has_net_file:
            if len(p.test_iter) < n_tests:
                raise SolverError("test_iter must be specified for each test network.")
        elif len(p.test_iter) != n_tests:
            raise SolverError("test_iter must be specified for each test network.")
        n_instances = len(p.test_iter)
        if len(p.test_state) and len(p.test_state) != n_instances:
            raise SolverError("test_state must be unspecified or specified once per test net.")
        if n_instances and p.test_interval <= 0:
            raise SolverError("test_interval must be > 0 when test nets are given (test_iter).")
        sources, params = [], []
        for tp in p.test_net_param:
            sources.append("test_net_param")
            q = caffe_pb2.NetParameter()
            q.CopyFrom(tp)
            params.append(q)
        for tf in p.test_net:
            sources.append("test_net file: " + tf)
            params.append(self._read_net(tf))
        remaining = len(p.test_iter) - len(params)
        for _ in range(remaining):
            if has_net_param:
                sources.append("net_param")
                q = caffe_pb2.NetParameter()
                q.CopyFrom(p.net_param)
                params.append(q)
            elif has_net_file:
                sources.append("net file: " + p.net)
                params.append(self._read_net(p.net))
        self.test_nets = []
        for i, q in enumerate(params):
            state = caffe_pb2.NetState()
            state.phase = caffe_pb2.TEST
            state.MergeFrom(q.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            self._log(f"Creating test net (#{i}) specified by {sources[i]}", "solver.cpp:172")
            self.test_nets.append(self._make_net(q, state))
            self._load_param_weights(self.test_nets[-1])

    def _pre_solve(self) -> None:
        """SGDSolver::PreSolve (+ the extra history of Adam / AdaDelta): zero history per learnable param."""
        params = self.net.learnable_params
        self.history: List[torch.Tensor] = []
        for _ in range(self.history_sets):
            for b in params:
                t = b.data_t
                self.history.append(torch.zeros(t.shape, dtype=torch.float32, device=t.device))

    # -- pycaffe properties ---------------------------------------------------------------------------------
    @property
    def max_iter(self) -> int:
        return self.param.max_iter

    def add_callback(self, *args) -> None:
        """pycaffe's ``add_callback(on_start, on_gradients_ready)``; also accepts one object with those
        two methods."""
        if len(args) == 1 and hasattr(args[0], "on_gradients_ready"):
            self.callbacks.append(args[0])
        elif len(args) == 2:
            self.callbacks.append(_CallbackPair(*args))
        else:
            raise TypeError("add_callback(on_start, on_gradients_ready) or add_callback(obj)")

    def share_weights(self, net) -> None:
        """pycaffe's ``solver.share_weights(net)``: ``net`` uses the train net's trained layers."""
        net.share_with(self.net)

    def set_action_function(self, fn: Optional[Callable[[], int]]) -> None:
        """Caffe's SetActionFunction: ``fn()`` -> SolverAction, polled once per iteration (and test batch)."""
        self.action_function = fn

    def get_requested_action(self) -> int:
        return int(self.action_function()) if self.action_function is not None else SolverAction.NONE

    # -- training loop (Solver::Step / Solve) -------------------------------------------------------------
    def _requested_action_all_ranks(self) -> int:
        if self.world_size <= 1:
            return self.get_requested_action()
        from . import parallel

        return parallel.broadcast_int(self.get_requested_action() if self.root else 0)

    def step(self, iters: int) -> None:
        """Caffe's Solver::Step: run ``iters`` iterations (tests, display, updates, snapshots)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        average_loss = p.average_loss
        self._losses = []
        self.smoothed_loss = 0.0
        self._iterations_last = self.iter
        timer = time.perf_counter()
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                if self.root:
                    self.test_all()
                if self.world_size > 1:
                    self._sync_flags_after_test()
                elif self._pending_snapshot:
                    self._pending_snapshot = False
                    self.snapshot()
                if self.requested_early_exit:
                    break
            for cb in self.callbacks:
                cb.on_start()
            display = bool(p.display) and self.iter % p.display == 0
            loss = _F32(0)
            for _ in range(p.iter_size):
                loss = _F32(loss + _F32(self.net.forward_backward()))
            loss = _F32(loss / _F32(p.iter_size))
            self.loss = float(loss)
            if self.stop_on_nonfinite_loss:
                self._check_finite_loss(loss)
            self._update_smoothed_loss(loss, start_iter, average_loss)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - self._iterations_last) / (lapse if lapse else 1.0)
                self._log(f"Iteration {self.iter} ({_f(_F32(per_s))} iter/s, {_f(_F32(lapse))}s/{p.display} "
                          f"iters), loss = {_f(self.smoothed_loss)}", "solver.cpp:218")
                timer = time.perf_counter()
                self._iterations_last = self.iter
                if self.root:
                    self._log_outputs(self.net, "Train", "solver.cpp:237")
            for cb in self.callbacks:
                cb.on_gradients_ready()
            self.apply_update()
            # iter always counts the weight updates done
            self.iter += 1
            request = self._requested_action_all_ranks()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SolverAction.SNAPSHOT:
                self.snapshot()
            if request == SolverAction.STOP:
                self.requested_early_exit = True
                break

    def _check_finite_loss(self, loss) -> None:
        """Raise :class:`DivergenceError` when this rank's (or, data-parallel, any rank's) loss is not
        finite; the weights are not updated and no snapshot is written, so the last one stays the good one."""
        mine = bad = not math.isfinite(float(loss))
        if self.world_size > 1:
            from . import parallel

            flag = torch.tensor([1.0 if bad else 0.0], device=parallel._comm_device())
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            bad = bool(flag.item())
        if not bad:
            return
        kept = f"the last snapshot, {self.last_snapshot}, is kept" if self.last_snapshot else \
            "no snapshot was written in this run"
        where = f"Iteration {self.iter}, loss = {_f(_F32(loss))}" if mine else \
            f"Iteration {self.iter}, loss = {_f(_F32(loss))} here, not finite on another rank"
        raise DivergenceError(
            f"{where}: the loss is not finite (training diverged or the "
            f"data hold NaN/inf); stopped before updating the weights, {kept}.  Lower base_lr or clip_gradients, "
            f"or check the data; caffe train -nonfinite_loss continue trains on as Caffe does")

    def _sync_flags_after_test(self) -> None:
        from . import parallel

        flags = parallel.broadcast_int(int(self.requested_early_exit) | (int(self._pending_snapshot) << 1)
                                       if self.root else 0)
        self.requested_early_exit = bool(flags & 1)
        self._pending_snapshot = False
        if flags & 2:
            self.snapshot()

    def _log_outputs(self, net, kind: str, src: str, values=None) -> None:
        """``    Train net output #k: name = v (* w = w*v loss)`` for every output value."""
        idx = 0
        for name in net.output_blob_names:
            w = _F32(net.blob_loss_weights.get(name, 0.0))
            vals = values[name] if values is not None else \
                net.blobs[name].data_t.detach().reshape(-1).to("cpu", torch.float32).numpy()
            for v in np.asarray(vals, dtype=np.float32).reshape(-1):
                extra = f" (* {_f(w)} = {_f(_F32(w * v))} loss)" if w else ""
                glog.info(f"    {kind} net output #{idx}: {name} = {_f(v)}{extra}", src=src)
                idx += 1

    def _update_smoothed_loss(self, loss, start_iter: int, average_loss: int) -> None:
        loss = _F32(loss)
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = float(_F32((_F32(self.smoothed_loss) * _F32(size - 1) + loss) / _F32(size)))
        else:
            idx = (self.iter - start_iter) % average_loss
            self.smoothed_loss = float(_F32(_F32(self.smoothed_loss)
                                            + (loss - self._losses[idx]) / _F32(average_loss)))
            self._losses[idx] = loss

    def solve(self, resume_file: Optional[str] = None) -> None:
        """Caffe's Solver::Solve: optionally restore, train to ``max_iter``, snapshot after training, and a
        last display/test pass."""
        p = self.param
        self._log("Solving " + self.net.name, "solver.cpp:279")
        self._log("Learning Rate Policy: " + p.lr_policy, "solver.cpp:280")
        self.requested_early_exit = False
        if resume_file:
            self._log("Restoring previous solver status from " + str(resume_file), "solver.cpp:290")
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            self._log("Optimization stopped early.", "solver.cpp:301")
            return
        if not self.root:
            return
        if p.display and self.iter % p.display == 0:
            loss = self.net.forward_loss()
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            self._log(f"Iteration {self.iter}, loss = {_f(self.smoothed_loss)}", "solver.cpp:317")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self._log("Optimization Done.", "solver.cpp:322")

    # -- testing --------------------------------------------------------------------------------------------
    def test_all(self) -> None:
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, test_net_id: int = 0) -> List[float]:
        """Caffe's Solver::Test: ``test_iter`` forward passes of test net ``test_net_id`` sharing the train
        net's weights; logs and returns the mean of every output value."""
        p = self.param
        glog.info(f"Iteration {self.iter}, Testing net (#{test_net_id})", src="solver.cpp:337")
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        scores: Optional[np.ndarray] = None
        ids: List[tuple] = []
        loss = _F32(0)
        n = p.test_iter[test_net_id]
        for i in range(n):
            request = self.get_requested_action()
            while request != SolverAction.NONE:
                if request == SolverAction.SNAPSHOT:
                    if self.world_size > 1:
                        self._pending_snapshot = True
                    else:
                        self.snapshot()
                elif request == SolverAction.STOP:
                    self.requested_early_exit = True
                request = self.get_requested_action()
            if self.requested_early_exit:
                break
            iter_loss = net.forward_loss()
            if p.test_compute_loss:
                loss = _F32(loss + _F32(iter_loss))
            vals, ids_i = [], []
            for name in net.output_blob_names:
                v = net.blobs[name].data_t.detach().reshape(-1).to("cpu", torch.float32).numpy()
                vals.append(v)
                ids_i += [name] * v.size
            flat = np.concatenate(vals).astype(np.float32) if vals else np.zeros(0, np.float32)
            if scores is None:
                scores, ids = flat.copy(), ids_i
            else:
                scores = (scores + flat).astype(np.float32)
        if self.requested_early_exit:
            glog.info("Test interrupted.", src="solver.cpp:373")
            return []
        if p.test_compute_loss:
            loss = _F32(loss / _F32(n))
            glog.info(f"Test loss: {_f(loss)}", src="solver.cpp:377")
        means = []
        if scores is not None:
            for i, (s, name) in enumerate(zip(scores, ids)):
                w = _F32(net.blob_loss_weights.get(name, 0.0))
                mean = _F32(s / _F32(n))
                means.append(float(mean))
                extra = f" (* {_f(w)} = {_f(_F32(w * mean))} loss)" if w else ""
                glog.info(f"    Test net output #{i}: {name} = {_f(mean)}{extra}", src="solver.cpp:404")
        self.mean_scores[test_net_id] = means
        return means

    # -- the update (SGDSolver::ApplyUpdate) --------------------------------------------------------------
    def get_learning_rate(self) -> float:
        rate, self.current_step, stepped = learning_rate(self.param, self.iter, self.current_step)
        if stepped:
            self._log(f"MultiStep Status: Iteration {self.iter}, step = {self.current_step}", "sgd_solver.cpp:46")
        return rate

    def apply_update(self) -> None:
        p = self.param
        rate = self.get_learning_rate()
        if p.display and self.iter % p.display == 0:
            self._log(f"Iteration {self.iter}, lr = {_f(rate)}", "sgd_solver.cpp:106")
        self.clip_gradients()
        for i in range(len(self.net.learnable_params)):
            self.normalize(i)
            self.regularize(i)
            self.compute_update_value(i, rate)
        self.net.update()

    def clip_gradients(self) -> None:
        clip = _F32(self.param.clip_gradients)
        if clip < 0:
            return
        params = self.net.learnable_params
        if not params:
            return
        # float32 sum of each blob's sum of squares (Blob::sumsq_diff), one device sync in all
        dots = [torch.dot(b.diff_t.reshape(-1), b.diff_t.reshape(-1)).reshape(1) for b in params]
        sumsq = np.cumsum(torch.cat([d.to(dots[0].device) for d in dots]).cpu().numpy(), dtype=np.float32)[-1]
        l2norm = _F32(np.sqrt(_F32(sumsq)))
        if l2norm > clip:
            scale = _F32(clip / l2norm)
            self._log(f"Gradient clipping: scaling down gradients (L2 norm {_f(l2norm)} > {_f(clip)}) by scale "
                      f"factor {_f(scale)}", "sgd_solver.cpp:95")
            for b in params:
                b.diff_t = b.diff_t * float(scale)

    def normalize(self, i: int) -> None:
        if self.param.iter_size == 1:
            return
        b = self.net.learnable_params[i]
        b.diff_t = b.diff_t * float(_F32(1.0) / _F32(self.param.iter_size))

    def regularize(self, i: int) -> None:
        p = self.param
        local_decay = _F32(_F32(p.weight_decay) * _F32(self.net.params_weight_decay[i]))
        if not local_decay:
            return
        b = self.net.learnable_params[i]
        if p.regularization_type == "L2":
            b.diff_t = b.diff_t + float(local_decay) * b.data_t
        elif p.regularization_type == "L1":
            b.diff_t = b.diff_t + float(local_decay) * torch.sign(b.data_t)
        else:
            raise SolverError(f"Unknown regularization type: {p.regularization_type}")

    def _local_rate(self, i: int, rate: float) -> float:
        return float(_F32(_F32(rate) * _F32(self.net.params_lr[i])))

    def compute_update_value(self, i: int, rate: float) -> None:
        raise NotImplementedError

    # -- snapshots ----------------------------------------------------------------------------------------
    def _snapshot_filename(self, extension: str, it: Optional[int] = None) -> str:
        return f"{self.param.snapshot_prefix}_iter_{self.iter if it is None else it}{extension}"

    def snapshot(self) -> Optional[str]:
        """Caffe's Solver::Snapshot: write the model and the solver state (and the exact-resume sidecar).

        Returns the solverstate's file name (on rank 0; None on other ranks).  In data-parallel training
        every rank must call it (the ranks' data positions are gathered to rank 0).
        """
        ranks_state = self._resume_state()
        if self.world_size > 1:
            from . import parallel

            ranks_state = parallel.gather_objects(ranks_state)
        else:
            ranks_state = [ranks_state]
        if not self.root:
            return None
        fmt = self.param.snapshot_format
        if fmt == caffe_pb2.SolverParameter.BINARYPROTO:
            model_filename = self._snapshot_to_binaryproto()
        elif fmt == caffe_pb2.SolverParameter.HDF5:
            model_filename = self._snapshot_to_hdf5()
        else:
            raise SolverError("Unsupported snapshot format.")
        self.last_snapshot = self._snapshot_solver_state(model_filename, ranks_state)
        return self.last_snapshot

    def _snapshot_to_binaryproto(self) -> str:
        from .protoio import write_binaryproto

        model_filename = self._snapshot_filename(".caffemodel")
        glog.info("Snapshotting to binary proto file " + model_filename, src="solver.cpp:454")
        write_binaryproto(self.net.to_proto(write_diff=self.param.snapshot_diff), model_filename)
        return model_filename

    def _snapshot_to_hdf5(self) -> str:
        model_filename = self._snapshot_filename(".caffemodel.h5")
        glog.info("Snapshotting to HDF5 file " + model_filename, src="solver.cpp:462")
        self.net.save_hdf5(model_filename, write_diff=self.param.snapshot_diff)
        return model_filename

    def _resume_state(self) -> dict:
        return {"train": _encode_net_state(self.net.state(), "train"),
                "test": [_encode_net_state(n.state(), "test") for n in self.test_nets],
                "rng": _encode_rng(_rng_state())}

    def _history_arrays(self) -> List[np.ndarray]:
        return [h.detach().to("cpu", torch.float32).numpy() for h in self.history]

    def _snapshot_solver_state(self, model_filename: str, ranks_state: list) -> str:
        fmt = self.param.snapshot_format
        if fmt == caffe_pb2.SolverParameter.HDF5:
            filename = self._snapshot_filename(".solverstate.h5")
        else:
            filename = self._snapshot_filename(".solverstate")
        # The sidecar first: the solverstate, written last, is what a resume looks for.
        write_sidecar({"iter": self.iter, "type": self.type, "world_size": self.world_size,
                       "ranks": ranks_state}, filename + SIDECAR_SUFFIX)
        if fmt == caffe_pb2.SolverParameter.HDF5:
            glog.info("Snapshotting solver state to HDF5 file " + filename, src="sgd_solver.cpp:283")
            self._write_state_hdf5(filename, model_filename)
        else:
            from .protoio import array_to_proto, write_binaryproto

            glog.info("Snapshotting solver state to binary proto file " + filename, src="sgd_solver.cpp:273")
            state = caffe_pb2.SolverState()
            state.iter = self.iter
            state.learned_net = model_filename
            state.current_step = self.current_step
            for h in self._history_arrays():
                state.history.add().CopyFrom(array_to_proto(h))
            write_binaryproto(state, filename)
        return filename

    def _write_state_hdf5(self, filename: str, model_filename: str) -> None:
        import h5py
        from .protoio import atomic_write

        with atomic_write(filename, "w+b") as fobj:
            with h5py.File(fobj, "w") as f:
                f.create_dataset("iter", data=np.int32(self.iter))
                # H5LTmake_dataset_string: a scalar, fixed-length, NUL-terminated C string
                raw = model_filename.encode("utf-8") + b"\0"
                tid = h5py.h5t.C_S1.copy()
                tid.set_size(len(raw))
                tid.set_strpad(h5py.h5t.STR_NULLTERM)
                sid = h5py.h5s.create(h5py.h5s.SCALAR)
                dset = h5py.h5d.create(f.id, b"learned_net", tid, sid)
                dset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"), mtype=tid)
                f.create_dataset("current_step", data=np.int32(self.current_step))
                g = f.create_group("history")
                for i, h in enumerate(self._history_arrays()):
                    g.create_dataset(str(i), data=h)

    # -- restore --------------------------------------------------------------------------------------------
    def restore(self, state_file: str) -> None:
        """Caffe's Solver::Restore from a ``.solverstate`` (binary) or ``.solverstate.h5``: the learned net's
        weights, the history, ``iter`` and ``current_step``; plus, when the sidecar is there, the data
        positions and random generator states of the snapshotted run."""
        state_file = os.fspath(state_file)
        if not os.path.exists(state_file):
            raise SolverError(f"cannot restore: solver state file {state_file} does not exist")
        if state_file.endswith(".h5"):
            self._restore_hdf5(state_file)
        else:
            self._restore_binaryproto(state_file)
        self._iterations_last = self.iter
        self._restore_sidecar(state_file + SIDECAR_SUFFIX)

    def _set_history(self, arrays: Sequence[np.ndarray], source: str) -> None:
        if len(arrays) != len(self.history):
            raise SolverError(f"{source}: Incorrect length of history blobs: the state has {len(arrays)}, "
                              f"the {self.type} solver of this net needs {len(self.history)}")
        new = []
        for i, (a, h) in enumerate(zip(arrays, self.history)):
            a = np.asarray(a, dtype=np.float32)
            if a.size != h.numel():
                raise SolverError(f"{source}: history blob {i} has {a.size} values, the parameter "
                                  f"{self._history_param_name(i)} has {h.numel()}")
            new.append(torch.from_numpy(np.ascontiguousarray(a).reshape(tuple(h.shape))).to(h.device))
        self.history = new

    def _history_param_name(self, i: int) -> str:
        names = getattr(self.net, "learnable_param_names", None)
        n = len(self.net.learnable_params)
        return names[i % n] if names else f"#{i % n}"

    def _restore_binaryproto(self, state_file: str) -> None:
        from .protoio import proto_to_array, read_binaryproto

        state = read_binaryproto(state_file, caffe_pb2.SolverState)
        self.iter = state.iter
        if state.HasField("learned_net") and state.learned_net:
            self.net.copy_from(_resolve_beside(state.learned_net, state_file))
        self.current_step = state.current_step
        self._log("SGDSolver: restoring history", "sgd_solver.cpp:318")
        self._set_history([proto_to_array(bp) for bp in state.history], state_file)

    def _restore_hdf5(self, state_file: str) -> None:
        import h5py

        try:
            f = h5py.File(state_file, "r")
        except OSError as e:
            raise SolverError(f"{state_file}: not a readable HDF5 solver state (truncated or damaged: "
                              f"{str(e).splitlines()[0]})") from None
        try:
            with f:
                self._read_state_hdf5(f, state_file)
        except (KeyError, OSError, ValueError, IndexError, TypeError) as e:
            if type(e).__module__.startswith("torchcaffe"):  # already names the file and what is wrong
                raise
            raise SolverError(f"{state_file}: damaged HDF5 solver state ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None

    def _read_state_hdf5(self, f, state_file: str) -> None:
        for need in ("iter", "history"):
            if need not in f:
                raise SolverError(f"{state_file}: the HDF5 solver state lacks '{need}' (Caffe writes iter, "
                                  f"learned_net, current_step and the group history)")
        self.iter = int(np.asarray(f["iter"][()]).reshape(-1)[0])
        if "learned_net" in f:
            raw = f["learned_net"][()]
            if isinstance(raw, np.ndarray):
                raw = raw.reshape(-1)[0]
            name = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            name = name.rstrip("\0")
            if name:
                self.net.copy_from(_resolve_beside(name, state_file))
        self.current_step = int(np.asarray(f["current_step"][()]).reshape(-1)[0]) if "current_step" in f else 0
        g = f["history"]
        n = len(g.keys())
        missing = [str(i) for i in range(n) if str(i) not in g]
        if missing:
            raise SolverError(f"{state_file}: history group lacks datasets {', '.join(missing)}")
        arrays = [np.asarray(g[str(i)][()], dtype=np.float32) for i in range(n)]
        self._set_history(arrays, state_file)

    def _restore_sidecar(self, path: str) -> None:
        if not os.path.exists(path):
            return
        side = read_sidecar(path)
        ranks = side.get("ranks", [])
        if side.get("iter") != self.iter:
            glog.warning(f"ignoring the resume sidecar {path}: it is for iteration {side.get('iter')}, the "
                         f"solverstate for {self.iter}")
            return
        if len(ranks) == self.world_size:
            mine = ranks[self.rank]
        elif self.world_size == 1 and ranks:
            mine = ranks[0]
        else:
            glog.warning(f"the resume sidecar {path} was written by {len(ranks)} rank(s), this run has "
                         f"{self.world_size}: data positions and random generators are not restored")
            return
        self.net.set_state(mine.get("train", {}))
        for net, st in zip(self.test_nets, mine.get("test", [])):
            net.set_state(st)
        _set_rng_state(mine.get("rng", {}))
        self._log(f"Restored data positions and random generator states from {path}", "solver.py:0")


# ---------------------------------------------------------------------------------------------------------
# The six solvers
# ---------------------------------------------------------------------------------------------------------

class SGDSolver(Solver):
    """Stochastic gradient descent with momentum: ``h = local_rate * g + momentum * h; diff = h``."""
    type = "SGD"

    def compute_update_value(self, i: int, rate: float) -> None:
        b = self.net.learnable_params[i]
        lr = self._local_rate(i, rate)
        h = self.history[i] * float(_F32(self.param.momentum)) + lr * b.diff_t
        self.history[i] = h
        b.diff_t = h.clone()


class NesterovSolver(Solver):
    """Nesterov's accelerated gradient, Caffe's form: ``diff = (1 + m) * h_new - m * h_old``."""
    type = "Nesterov"

    def compute_update_value(self, i: int, rate: float) -> None:
        b = self.net.learnable_params[i]
        lr = self._local_rate(i, rate)
        m = float(_F32(self.param.momentum))
        h_old = self.history[i]
        h = h_old * m + lr * b.diff_t
        self.history[i] = h
        b.diff_t = h * float(_F32(1) + _F32(m)) + h_old * (-m)


class AdaGradSolver(Solver):
    """AdaGrad: ``h += g^2; diff = local_rate * g / (sqrt(h) + delta)``."""
    type = "AdaGrad"

    def _check_solver_specific(self) -> None:
        if self.param.momentum != 0:
            raise SolverError("Momentum cannot be used with AdaGrad.")

    def compute_update_value(self, i: int, rate: float) -> None:
        b = self.net.learnable_params[i]
        lr = self._local_rate(i, rate)
        g = b.diff_t
        h = self.history[i] + g * g
        self.history[i] = h
        upd = g / (torch.sqrt(h) + float(_F32(self.param.delta)))
        b.diff_t = upd * lr


class RMSPropSolver(Solver):
    """RMSProp: ``h = rms_decay * h + (1 - rms_decay) * g^2; diff = local_rate * g / (sqrt(h) + delta)``."""
    type = "RMSProp"

    def _check_solver_specific(self) -> None:
        p = self.param
        if p.momentum != 0:
            raise SolverError("Momentum cannot be used with RMSProp.")
        if not (0 <= p.rms_decay < 1):
            raise SolverError(f"rms_decay should lie in [0, 1), got {p.rms_decay}")

    def compute_update_value(self, i: int, rate: float) -> None:
        b = self.net.learnable_params[i]
        lr = self._local_rate(i, rate)
        d = float(_F32(self.param.rms_decay))
        g = b.diff_t
        h = self.history[i] * d + float(_F32(1) - _F32(d)) * (g * g)
        self.history[i] = h
        upd = g / (torch.sqrt(h) + float(_F32(self.param.delta)))
        b.diff_t = upd * lr


class AdaDeltaSolver(Solver):
    """AdaDelta (Zeiler), Caffe's form with ``momentum`` as the decay and ``delta`` as epsilon; history holds
    the squared-gradient averages, then the squared-update averages."""
    type = "AdaDelta"
    history_sets = 2

    def compute_update_value(self, i: int, rate: float) -> None:
        b = self.net.learnable_params[i]
        n = len(self.net.learnable_params)
        lr = self._local_rate(i, rate)
        m = float(_F32(self.param.momentum))
        one_m = float(_F32(1) - _F32(m))
        delta = float(_F32(self.param.delta))
        g = b.diff_t
        h = self.history[i] * m + one_m * (g * g)
        self.history[i] = h
        upd = torch.sqrt((self.history[n + i] + delta) / (h + delta))
        g = g * upd
        self.history[n + i] = self.history[n + i] * m + one_m * (g * g)
        b.diff_t = g * lr


class AdamSolver(Solver):
    """Adam with Caffe's bias correction folded into the rate: with ``t = iter + 1``,
    ``diff = local_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + delta)``; ``beta1`` is
    ``momentum``, ``beta2`` is ``momentum2``.  History holds every m, then every v."""
    type = "Adam"
    history_sets = 2

    def compute_update_value(self, i: int, rate: float) -> None:
        b = self.net.learnable_params[i]
        n = len(self.net.learnable_params)
        lr = _F32(self._local_rate(i, rate))
        beta1 = float(_F32(self.param.momentum))
        beta2 = float(_F32(self.param.momentum2))
        t = self.iter + 1
        correction = _F32(math.sqrt(1.0 - math.pow(beta2, t)) / (1.0 - math.pow(beta1, t)))
        eps = float(_F32(self.param.delta))
        g = b.diff_t
        m = self.history[i] * beta1 + float(_F32(1) - _F32(beta1)) * g
        v = self.history[n + i] * beta2 + float(_F32(1) - _F32(beta2)) * (g * g)
        self.history[i] = m
        self.history[n + i] = v
        b.diff_t = (m / (torch.sqrt(v) + eps)) * float(_F32(lr * correction))


_SOLVERS = {c.type: c for c in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver,
                                AdamSolver)}


def solver_types() -> List[str]:
    """The registered solver type names (Caffe's SolverRegistry::SolverTypeList)."""
    return sorted(_SOLVERS)


def get_solver(solver, action_function: Optional[Callable[[], int]] = None) -> Solver:
    """pycaffe's ``caffe.get_solver(path)``: the solver class named by ``type`` (or legacy ``solver_type``).

    ``solver`` is a solver prototxt path or a SolverParameter."""
    param = read_solver(solver)
    cls = _SOLVERS.get(param.type)
    if cls is None:
        raise SolverError(f"Unknown solver type: {param.type} (known types: {', '.join(solver_types())})")
    return cls(param, action_function=action_function)
