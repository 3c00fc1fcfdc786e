"""pycaffe's ``caffe.Timer``: ``start()``, ``stop()`` and the elapsed time ``ms``.

As Caffe's ``Timer``: in GPU mode (``set_mode_gpu``) it records CUDA events on the current stream and ``ms``
is their elapsed time (synchronizing on the stop event); in CPU mode it reads the wall clock and ``ms`` is
in whole milliseconds, as Caffe's (``total_milliseconds`` of a boost time duration).  ``start`` while
running and ``stop`` while stopped do nothing; reading ``ms`` while running stops the timer first; reading it
before any ``start`` logs a warning and gives 0.
"""
from __future__ import annotations

import time

import torch

from . import glog
from .mode import _state


class Timer:
    """A stopwatch over the current Caffe mode (pycaffe's ``caffe.Timer``)."""

    def __init__(self):
        self._gpu = _state["mode"] == "gpu" and torch.cuda.is_available()
        self._running = False
        self._has_run = False
        self._start = self._stop = None

    def start(self) -> None:
        if self._running:
            return
        if self._gpu:
            self._start = torch.cuda.Event(enable_timing=True)
            self._stop = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()
        self._running = True
        self._has_run = True

    def stop(self) -> None:
        if not self._running:
            return
        if self._gpu:
            self._stop.record()
        else:
            self._stop = time.perf_counter()
        self._running = False

    @property
    def ms(self) -> float:
        """Milliseconds between the last ``start`` and ``stop`` (whole milliseconds on the CPU)."""
        if not self._has_run:
            glog.warning("Timer has never been run before reading time.")
            return 0.0
        if self._running:
            self.stop()
        if self._gpu:
            self._stop.synchronize()
            return float(self._start.elapsed_time(self._stop))
        return float(int((self._stop - self._start) * 1000.0))
