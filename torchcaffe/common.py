"""Process-wide training facts that layers read, as Caffe keeps them in ``Caffe`` (common.hpp):
this process's rank among the data-parallel solvers and their number.

It knows nothing of solvers or nets, so that a data layer can learn its shard without importing them.
A value set here (pycaffe's ``set_solver_count`` / ``set_solver_rank``) wins; otherwise an initialised
``torch.distributed`` group gives them; otherwise one solver of rank 0.
"""
from __future__ import annotations

import torch

__all__ = ["solver_rank", "solver_count", "set_solver_rank", "set_solver_count", "set_multiprocess",
           "multiprocess", "has_nccl", "NCCL"]

_state = {"rank": None, "count": None, "multiprocess": False}


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def solver_rank() -> int:
    """This process's rank in data-parallel training; 0 when not distributed."""
    if _state["rank"] is not None:
        return _state["rank"]
    return torch.distributed.get_rank() if _distributed() else 0


def solver_count() -> int:
    """The number of data-parallel ranks; 1 when not distributed."""
    if _state["count"] is not None:
        return _state["count"]
    return torch.distributed.get_world_size() if _distributed() else 1


def set_solver_rank(rank: int) -> None:
    rank = int(rank)
    if rank < 0:
        raise ValueError(f"set_solver_rank: the rank must be non-negative, got {rank}")
    _state["rank"] = rank


def set_solver_count(count: int) -> None:
    count = int(count)
    if count < 1:
        raise ValueError(f"set_solver_count: the count must be at least 1, got {count}")
    _state["count"] = count


def set_multiprocess(value: bool) -> None:
    """pycaffe's set_multiprocess: whether ranks run as separate processes (recorded; torchcaffe's ranks
    always are)."""
    _state["multiprocess"] = bool(value)


def multiprocess() -> bool:
    return _state["multiprocess"]


def has_nccl() -> bool:
    """pycaffe's has_nccl: torchcaffe has no NCCL solver object (data-parallel training uses
    torch.distributed, see torchcaffe.parallel), so False."""
    return False


class NCCL:
    """pycaffe's ``caffe.NCCL`` as BVLC builds it without NCCL (``has_nccl()`` is False): it can be made
    and passed to ``solver.add_callback`` or ``net.after_backward``, where it does nothing.  torchcaffe
    trains data-parallel through torch.distributed instead (``caffe train -gpu 0,1``, torchcaffe.parallel)."""

    def __init__(self, solver=None, uid: str = ""):
        self.solver, self.uid = solver, uid

    def on_start(self) -> None:
        pass

    def on_gradients_ready(self) -> None:
        pass

    def __call__(self, layer_index: int) -> None:
        pass
