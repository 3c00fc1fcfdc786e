"""The ``Data`` layer: batches of Caffe Datum records from an LMDB, as BVLC Caffe 1.0's DataLayer.

Parameters (``data_param`` and ``transform_param``):

* ``source`` -- the LMDB directory (or single-file LMDB), relative to the working directory as in Caffe;
  opened read-only without a lock file (``lmdb.open(path, readonly=True, lock=False)``), so that databases
  on read-only media work.  Only the LMDB backend exists here; a prototxt that names LEVELDB (the proto
  default) is accepted when the source is in fact an LMDB, with a warning.
* ``batch_size``; ``prefetch`` (default 4): how many batches the background thread keeps ready.
* ``rand_skip`` is ignored, as Caffe 1.0's DataLayer ignores it.
* ``transform_param``: ``crop_size`` (random offsets in TRAIN, the centre in TEST), ``mirror`` (a coin
  flip per image -- in both phases, as Caffe's DataTransformer does), ``mean_file`` / ``mean_value``,
  ``scale``, ``force_color`` / ``force_gray`` for encoded Datums (see :mod:`torchcaffe.data_transformer`).
  The legacy copies of ``scale``, ``mean_file``, ``crop_size``, ``mirror`` in ``data_param`` (and
  ``force_encoded_color``) are used when ``transform_param`` does not set them (``Net`` upgrades them anyway).

Tops: ``data`` ``(batch_size, C, crop, crop)`` (or ``(batch_size, C, H, W)`` without a crop) in float32 on the
layer's device, and optionally ``label`` ``(batch_size,)`` holding ``Datum.label``.  Records are read in key
order and the database wraps around at its end.  As in Caffe, each batch is shaped by its first record, so
databases of varying image sizes work with a crop.

Multi-GPU: with ``W`` solvers (:mod:`torchcaffe.common`: ``set_solver_count`` / ``set_solver_rank``, else an
initialised ``torch.distributed``) and in phase TRAIN, rank ``r`` of ``W`` keeps the
records whose running index (counting every record read, across wrap-arounds) is ``r`` modulo ``W`` --
Caffe 1.0's ``DataLayer::Skip``; in phase TEST every rank reads every record, as in Caffe.

Randomness and resumption: the crops and mirrors of batch ``b`` come from a generator seeded with
``(seed, rank, b)``; ``seed`` is ``torch.initial_seed()`` when the layer is set up, i.e. the value given to
``caffe.set_random_seed`` (the solver's ``random_seed + rank``; random when never set, as in Caffe).  It is
read, not drawn, so creating a Data layer does not move the global generators.  The background thread
(daemonic; pinned host memory when the layer is on a GPU; stopped by :meth:`DataLayer.close`, garbage
collection or interpreter exit) therefore cannot change the sequence, and :meth:`DataLayer.state` -- the
position after the last batch the *net* consumed, not the prefetcher's -- restores it exactly::

    {"version": 1, "offset": 1234, "key": "3030303031323334...", "batch": 31, "seed": 1701}

``offset`` counts records read (Caffe's ``offset_``), ``key`` is the hex of the next record's key,
``batch`` the number of batches delivered, ``seed`` the generator seed.  All values are JSON-serialisable.
"""
from __future__ import annotations

import atexit
import os
import queue
import threading
import weakref
from typing import Optional, Sequence

import numpy as np
import torch

from .. import glog
from ..blob import Blob
from ..common import solver_count, solver_rank
from ..data_transformer import DataTransformer, TransformError
from ..layer import Layer, register
from ..proto import caffe_pb2

__all__ = ["DataLayer", "open_lmdb", "release_lmdb", "batch_generator"]

STATE_VERSION = 1
_LIVE = weakref.WeakSet()


_ENVS: dict = {}
_ENVS_LOCK = threading.Lock()


def open_lmdb(path: str):
    """Open an LMDB read-only, without a lock file (works on read-only media); directory or single file.

    py-lmdb allows one Environment per database and process, so layers reading the same source (a TRAIN and
    a TEST net, say) share it; :func:`release_lmdb` closes it after its last user.
    """
    import lmdb

    key = os.path.realpath(path)
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            env = lmdb.open(path, readonly=True, lock=False, subdir=os.path.isdir(path), readahead=True,
                            max_readers=512, meminit=False)
            entry = _ENVS[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def release_lmdb(env) -> None:
    with _ENVS_LOCK:
        for key, entry in list(_ENVS.items()):
            if entry[0] is env:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _ENVS[key]
                    try:
                        env.close()
                    except Exception:
                        pass
                return


def batch_generator(seed: int, rank: int, batch_index: int) -> np.random.Generator:
    """The generator of one batch's random crops and mirrors."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & (2 ** 64 - 1), int(rank),
                                                                     int(batch_index)])))


def _shard() -> tuple:
    """(rank, world size) of this process in data-parallel training (Caffe's solver_rank / solver_count)."""
    return solver_rank(), solver_count()


def _transform_param(lp: "caffe_pb2.LayerParameter") -> "caffe_pb2.TransformationParameter":
    """transform_param, completed with the legacy DataParameter fields it does not set."""
    tp = caffe_pb2.TransformationParameter()
    tp.CopyFrom(lp.transform_param)
    dp = lp.data_param
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        if dp.HasField(f) and not tp.HasField(f):
            setattr(tp, f, getattr(dp, f))
    if dp.force_encoded_color and not tp.HasField("force_color"):
        tp.force_color = True
    return tp


class _Batch:
    __slots__ = ("data", "label", "state", "error")

    def __init__(self, data=None, label=None, state=None, error=None):
        self.data, self.label, self.state, self.error = data, label, state, error


class _Prefetcher:
    """The background thread: reads records, decodes and transforms them into batches (Caffe's
    BasePrefetchingDataLayer::InternalThreadEntry with a queue of ``prefetch`` batches)."""

    def __init__(self, env, entries: int, transformer: DataTransformer, batch_size: int, state: dict,
                 rank: int, world: int, shard: bool, depth: int, pin: bool, name: str, want_label: bool,
                 source: str = ""):
        self.env = env
        self.source = source
        self.entries = entries
        self.transformer = transformer
        self.batch_size = batch_size
        self.start = dict(state)
        self.rank, self.world, self.shard = rank, world, shard
        self.pin = pin
        self.name = name
        self.want_label = want_label
        self.queue: "queue.Queue[_Batch]" = queue.Queue(maxsize=max(1, depth))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"Data layer '{name}' prefetch", daemon=True)
        _LIVE.add(self)
        self.thread.start()

    # -- thread body ----------------------------------------------------------------------------------------
    def _put(self, item: _Batch) -> bool:
        while not self.stop_event.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            with self.env.begin(buffers=False) as txn:
                cur = txn.cursor()
                self._seek(cur)
                self._loop(cur)
        except BaseException as e:  # delivered to the net's thread by get()
            self._put(_Batch(error=e))

    def _seek(self, cur) -> None:
        key_hex = self.start.get("key")
        if key_hex is not None and cur.set_key(bytes.fromhex(key_hex)):
            return
        if not cur.first():
            raise RuntimeError("the database is empty")
        for _ in range(int(self.start.get("offset", 0)) % self.entries):
            if not cur.next():
                cur.first()

    def _loop(self, cur) -> None:
        offset = int(self.start.get("offset", 0))
        b = int(self.start.get("batch", 0))
        seed = int(self.start["seed"])
        tr = self.transformer
        bs = self.batch_size
        while not self.stop_event.is_set():
            images, labels = [], np.empty(bs, dtype=np.float32)
            for i in range(bs):
                if self.shard:
                    while offset % self.world != self.rank:  # DataLayer::Skip
                        if not cur.next():
                            cur.first()
                            if self.rank == 0:
                                glog.info("Restarting data prefetching from start.", src="data_layer.cpp:87")
                        offset += 1
                key, value = cur.item()
                d = caffe_pb2.Datum()
                try:
                    d.ParseFromString(value)
                    images.append(tr.decode(d))
                except Exception as e:
                    raise TransformError(f"record {key!r} of '{self.source}': {e}") from None
                labels[i] = d.label
                if not cur.next():  # DataLayer::Next: wrap around
                    cur.first()
                    if self.rank == 0:
                        glog.info("Restarting data prefetching from start.", src="data_layer.cpp:87")
                offset += 1
                if self.stop_event.is_set():
                    return
            rng = batch_generator(seed, self.rank, b) if tr.needs_rand else None
            oshape = (bs,) + tr.output_shape(images[0].shape)
            if self.pin:
                data_t = torch.empty(oshape, dtype=torch.float32, pin_memory=True)
            else:
                data_t = torch.empty(oshape, dtype=torch.float32)
            tr.transform(images, rng, out=data_t.numpy())
            label_t = torch.from_numpy(labels)
            if self.pin and self.want_label:
                label_t = label_t.pin_memory()
            b += 1
            state = {"version": STATE_VERSION, "offset": offset, "key": cur.key().hex(), "batch": b, "seed": seed}
            if not self._put(_Batch(data_t, label_t, state)):
                return

    # -- consumer side --------------------------------------------------------------------------------------
    def get(self) -> _Batch:
        while True:
            try:
                item = self.queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self.thread.is_alive():
                    raise RuntimeError(f"Data layer '{self.name}': the prefetch thread has stopped")
        if item.error is not None:
            raise item.error
        return item

    def close(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)
        _LIVE.discard(self)


def _stop_all() -> None:
    for p in list(_LIVE):
        p.close(timeout=2.0)


atexit.register(_stop_all)


def _close_layer(prefetcher_box: list, env_box: list) -> None:
    if prefetcher_box and prefetcher_box[0] is not None:
        prefetcher_box[0].close()
        prefetcher_box[0] = None
    if env_box and env_box[0] is not None:
        release_lmdb(env_box[0])
        env_box[0] = None


@register("Data")
class DataLayer(Layer):
    """Caffe's DataLayer over an LMDB of (raw or encoded) Datum records, with background prefetching."""

    exact_bottoms = 0
    min_tops = 1
    max_tops = 2

    def __init__(self, param, phase, device):
        super().__init__(param, phase, device)
        self._pbox: list = [None]
        self._ebox: list = [None]
        self._finalizer = weakref.finalize(self, _close_layer, self._pbox, self._ebox)
        self._consumed: Optional[dict] = None

    # -- setup ----------------------------------------------------------------------------------------------
    def layer_setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        dp = self.layer_param.data_param
        self.batch_size = int(dp.batch_size)
        if self.batch_size <= 0:
            raise self.error("data_param.batch_size must be positive")
        source = dp.source
        if not source:
            raise self.error("data_param.source is not set")
        if not os.path.exists(source):
            raise self.error(f"data_param.source '{source}' does not exist (resolved to "
                             f"{os.path.abspath(source)}; relative paths are taken from the working directory "
                             f"{os.getcwd()}, as Caffe does)")
        is_lmdb = os.path.isfile(source) or os.path.exists(os.path.join(source, "data.mdb"))
        if not is_lmdb:
            raise self.error(f"data_param.source '{source}' is not an LMDB (no data.mdb in it); "
                             f"only the LMDB backend is supported")
        if dp.backend != caffe_pb2.DataParameter.LMDB:
            glog.warning(f"Data layer '{self.name}': backend is LEVELDB but '{source}' is an LMDB; reading it "
                         f"as LMDB")
        try:
            self.transformer = DataTransformer(_transform_param(self.layer_param), self.phase)
        except TransformError as e:
            raise self.error(str(e)) from None
        try:
            env = open_lmdb(source)
        except Exception as e:
            raise self.error(f"cannot open the LMDB '{source}': {e}") from None
        self._ebox[0] = env
        self.source = source
        self.entries = int(env.stat()["entries"])
        if self.entries == 0:
            raise self.error(f"the LMDB '{source}' holds no records")
        with env.begin(buffers=False) as txn:
            cur = txn.cursor()
            cur.first()
            first_key, value = cur.item()
        datum = caffe_pb2.Datum()
        datum.ParseFromString(value)
        try:
            self.datum_shape = tuple(int(s) for s in self.transformer.decode(datum).shape)
            self.out_shape = self.transformer.output_shape(self.datum_shape)
        except TransformError as e:
            raise self.error(f"first record {first_key!r}: {e}") from None
        self.rank, self.world = _shard()
        self.shard = self.world > 1 and self.phase == caffe_pb2.TRAIN
        self.prefetch = max(1, int(dp.prefetch))
        self.output_labels = len(top) > 1
        seed = int(torch.initial_seed()) & (2 ** 63 - 1)
        self._first_key = first_key
        self._consumed = {"version": STATE_VERSION, "offset": 0, "key": first_key.hex(), "batch": 0, "seed": seed}
        glog.info(f"{'TRAIN' if self.phase == caffe_pb2.TRAIN else 'TEST'}: reading {self.entries} records "
                  f"from '{source}'" + (f" (rank {self.rank} of {self.world})" if self.shard else ""),
                  src="data_layer.cpp:45")
        glog.info("output data size: " + ",".join(str(d) for d in (self.batch_size,) + self.out_shape),
                  src="data_layer.cpp:58")
        self._start(self._consumed)

    def _start(self, state: dict) -> None:
        old = self._pbox[0]
        if old is not None:
            old.close()
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        self._pbox[0] = _Prefetcher(self._ebox[0], self.entries, self.transformer, self.batch_size, state,
                                    self.rank, self.world, self.shard, self.prefetch, pin, self.name,
                                    self.output_labels, self.source)

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        shape = (self.batch_size,) + tuple(self.out_shape)
        if top[0].shape != shape:
            top[0].reshape(shape)
        if len(top) > 1 and top[1].shape != (self.batch_size,):
            top[1].reshape(self.batch_size)

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        p = self._pbox[0]
        if p is None:
            raise self.error("the layer is closed or was not set up")
        if self.device.type == "cuda" and not p.pin:
            p.pin = True  # moved to a GPU after setup (Net.to): pin the batches from now on
        try:
            batch = p.get()
        except Exception as e:  # from the prefetch thread: name the layer
            raise self.error(str(e)) from e
        cuda = self.device.type == "cuda"
        top[0].data_t = batch.data.to(self.device, non_blocking=cuda) if cuda else batch.data
        if len(top) > 1:
            top[1].data_t = batch.label.to(self.device, non_blocking=cuda) if cuda else batch.label
        self.out_shape = tuple(batch.data.shape[1:])
        self._consumed = batch.state

    # -- resumption -------------------------------------------------------------------------------------------
    def state(self) -> Optional[dict]:
        """Where the net's stream stands: the next record and the next batch's generator (JSON-able dict)."""
        return None if self._consumed is None else dict(self._consumed)

    def set_state(self, state) -> None:
        """Continue from a :meth:`state`: discards prefetched batches and restarts the reader there."""
        if state is None:
            state = {"version": STATE_VERSION, "offset": 0, "key": self._first_key.hex(), "batch": 0,
                     "seed": self._consumed["seed"] if self._consumed else int(torch.initial_seed())}
        if not isinstance(state, dict) or "offset" not in state or "seed" not in state:
            raise self.error(f"cannot restore from state {state!r}: expected the dict that state() returns")
        s = {"version": STATE_VERSION, "offset": int(state["offset"]), "key": state.get("key"),
             "batch": int(state.get("batch", 0)), "seed": int(state["seed"])}
        if self._ebox[0] is None:
            raise self.error("set_state before setup")
        self._consumed = s
        self._start(s)

    def close(self) -> None:
        """Stop the prefetch thread and close the database (also done when the layer is garbage-collected)."""
        self._finalizer()
