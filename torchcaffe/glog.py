"""Log lines in Google glog's format, as BVLC Caffe writes them.

Every line looks like glog's::

    I1126 12:00:00.123456  1234 solver.cpp:218] Iteration 100 (4.2 iter/s, 23.8s/100 iters), loss = 6.8

(severity letter, month and day, local time with microseconds, the thread id right-aligned in five columns,
``file:line]``, the message), so that Caffe's log parsers and plotters (``tools/extra/parse_log.py``,
``extract_seconds.py``, ``plot_training_log.py``) read them.

Lines go to ``stderr`` (as ``caffe`` does with ``FLAGS_alsologtostderr``) and to any sink added with
:func:`add_sink`.  ``init(level)`` sets glog's ``minloglevel``: 0 = INFO, 1 = WARNING, 2 = ERROR, 3 = FATAL;
the ``GLOG_minloglevel`` environment variable gives the starting level, as it does for Caffe.

Use from the runtime::

    from torchcaffe import glog
    glog.info("Iteration %d, lr = %s" % (it, glog.fmt(rate)), src="sgd_solver.cpp:106")

``src`` names the place the line claims to come from; without it, the caller's ``file.py:line`` is used.
:func:`fmt` prints a number as a C++ ``ostream`` does by default (``%g``, six significant digits), which is
what Caffe's ``LOG(INFO) << value`` gives.
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
import threading
from typing import IO, List, Optional

__all__ = ["INFO", "WARNING", "ERROR", "FATAL", "init", "set_level", "get_level", "enabled", "log", "info",
           "warning", "error", "fatal", "fmt", "format_line", "add_sink", "remove_sink", "set_stderr", "log_to_dir",
           "FatalError"]

INFO, WARNING, ERROR, FATAL = 0, 1, 2, 3
_LETTERS = "IWEF"


def _env_level() -> int:
    try:
        return max(0, min(3, int(os.environ.get("GLOG_minloglevel", "0"))))
    except ValueError:
        return INFO


_lock = threading.Lock()
_state = {"level": _env_level(), "stderr": True, "prefix": True}
_sinks: List[IO[str]] = []


class FatalError(RuntimeError):
    """Raised by :func:`fatal` after the F-line is logged (glog would abort the process)."""


def init(level: int = 0) -> None:
    """pycaffe's ``caffe.init_log(level)``: log to stderr from ``level`` on (0 = INFO)."""
    set_level(level)
    _state["stderr"] = True


def set_level(level: int) -> None:
    """Set ``minloglevel``: lines below it are dropped (FATAL lines are always written)."""
    _state["level"] = max(INFO, min(FATAL, int(level)))


def get_level() -> int:
    return _state["level"]


def enabled(severity: int = INFO) -> bool:
    return severity >= _state["level"] or severity >= FATAL


def set_stderr(on: bool) -> None:
    """Turn writing to stderr on or off (sinks still receive every line)."""
    _state["stderr"] = bool(on)


def add_sink(stream: IO[str]) -> None:
    """Also write every line to ``stream`` (a text file opened for writing)."""
    with _lock:
        if stream not in _sinks:
            _sinks.append(stream)


def remove_sink(stream: IO[str]) -> None:
    with _lock:
        if stream in _sinks:
            _sinks.remove(stream)


def fmt(x) -> str:
    """A number as C++'s ``std::ostream << x`` prints it by default (``%g``; ints unchanged)."""
    if isinstance(x, bool):
        return "1" if x else "0"
    if isinstance(x, int):
        return str(x)
    try:
        import numpy as np
        if isinstance(x, np.integer):
            return str(int(x))
    except ImportError:  # pragma: no cover
        pass
    try:
        return "%g" % float(x)
    except (TypeError, ValueError):
        return str(x)


def _caller_src(depth: int) -> str:
    try:
        frame = sys._getframe(depth)
        return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
    except ValueError:  # pragma: no cover
        return "unknown:0"


def format_line(severity: int, message: str, src: str, when: Optional[_dt.datetime] = None,
                tid: Optional[int] = None) -> str:
    """One glog line (without the newline): ``Lmmdd hh:mm:ss.uuuuuu ttttt file:line] message``."""
    when = when or _dt.datetime.now()
    tid = threading.get_native_id() if tid is None else tid
    return "%s%02d%02d %02d:%02d:%02d.%06d %5d %s] %s" % (
        _LETTERS[severity], when.month, when.day, when.hour, when.minute, when.second, when.microsecond,
        tid, src, message)


def log(severity: int, message: str, src: Optional[str] = None, _depth: int = 1) -> None:
    """Write ``message`` (one line per line of text, as glog does for each LOG statement's lines)."""
    if not enabled(severity):
        return
    src = src or _caller_src(_depth + 1)
    now = _dt.datetime.now()
    tid = threading.get_native_id()
    text = str(message)
    # glog writes the whole message after one prefix; embedded newlines stay as they are
    line = format_line(severity, text, src, now, tid) + "\n"
    with _lock:
        if _state["stderr"]:
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (ValueError, OSError):  # closed stream (interpreter shutdown)
                pass
        for s in list(_sinks):
            try:
                s.write(line)
                s.flush()
            except (ValueError, OSError):
                pass


def info(message: str, src: Optional[str] = None) -> None:
    log(INFO, message, src, _depth=2)


def warning(message: str, src: Optional[str] = None) -> None:
    log(WARNING, message, src, _depth=2)


def error(message: str, src: Optional[str] = None) -> None:
    log(ERROR, message, src, _depth=2)


def fatal(message: str, src: Optional[str] = None, exc: type = FatalError):
    """Log an F-line and raise ``exc(message)`` (glog aborts; a Python runtime raises instead)."""
    log(FATAL, message, src, _depth=2)
    raise exc(message)


def log_to_dir(directory: str, program: str = "caffe") -> str:
    """Also write every line to a glog-style INFO log file in ``directory`` (``-log_dir``): named
    ``<program>.<host>.<user>.log.INFO.<yyyymmdd-hhmmss>.<pid>``, with glog's header and a
    ``<program>.INFO`` symlink to it.  Returns the file's path."""
    import getpass
    import socket

    os.makedirs(directory, exist_ok=True)
    now = _dt.datetime.now()
    host = socket.gethostname()
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001
        user = "invalid-user"
    name = f"{program}.{host}.{user}.log.INFO.{now:%Y%m%d-%H%M%S}.{os.getpid()}"
    path = os.path.join(directory, name)
    f = open(path, "a", encoding="utf-8")
    f.write(f"Log file created at: {now:%Y/%m/%d %H:%M:%S}\n"
            f"Running on machine: {host}\n"
            "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg\n")
    f.flush()
    link = os.path.join(directory, f"{program}.INFO")
    try:
        if os.path.islink(link) or os.path.exists(link):
            os.remove(link)
        os.symlink(name, link)
    except OSError:
        pass
    add_sink(f)
    return path
