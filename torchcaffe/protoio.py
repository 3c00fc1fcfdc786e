"""Reading and writing Caffe's own files: prototxt, binaryproto, caffemodel (any size) and HDF5 weights.

Everything that reads a file raises :class:`CaffeFormatError` with a one-line message that names the file
(and, for text files, the line and column) instead of a protobuf traceback.  Everything that writes a file
writes it atomically (:func:`atomic_write`): a temporary file in the same directory is written, flushed to
disk and renamed over the target, so that the target is either the old file or the complete new one.

Net and solver definitions are upgraded on reading exactly as Caffe's ``ReadNetParamsFrom*FileOrDie`` and
``ReadSolverParamsFromTextFileOrDie`` do (see :mod:`torchcaffe.upgrade`).

Blob conversion follows ``caffe::Blob``: :func:`blob_to_proto` writes the N-d ``shape`` field and float data
(Blob::ToProto); :func:`proto_to_array` / :func:`proto_shape` honour either ``shape`` or the legacy 4-D
num/channels/height/width fields and ``double_data`` (Blob::FromProto); :func:`shape_equals` is
Blob::ShapeEquals, the rule Net::CopyTrainedLayersFrom uses before copying a weight blob.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
from typing import Iterator, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
from google.protobuf import message as _pb_message
from google.protobuf import text_format

from .proto import caffe_pb2
from . import upgrade as _upgrade

__all__ = [
    "CaffeFormatError",
    "atomic_write",
    "read_prototxt", "parse_prototxt_string", "write_prototxt", "to_prototxt_string",
    "read_binaryproto", "write_binaryproto",
    "blob_to_proto", "array_to_proto", "proto_to_array", "proto_shape", "shape_equals", "shapes_match",
    "shape_string",
    "is_missing_blob",
    "read_net_param", "read_net_weights", "is_hdf5_weights", "write_net_hdf5", "read_solver_param",
]

PathLike = Union[str, "os.PathLike[str]"]
MessageArg = Union[_pb_message.Message, Type[_pb_message.Message]]


class CaffeFormatError(ValueError):
    """A Caffe file (or message) cannot be used; the one-line message says which file and what is wrong."""


# ---------------------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: Optional[str] = None,
                 newline: Optional[str] = None) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` atomically.

    ``mode`` is a writing mode: ``"wb"`` (default), ``"w"``/``"wt"`` (text, ``encoding`` default UTF-8) or
    ``"w+b"`` (read-write binary, e.g. for ``h5py.File(f, "w")``).  When the ``with`` block finishes, the
    file is flushed, fsync'ed and renamed over ``path`` (``os.replace``; the directory is fsync'ed too).
    When the block raises -- anything, KeyboardInterrupt included -- the temporary file is removed and
    ``path`` is left as it was.  An existing target keeps its permission bits.

    The temporary file is ``.NAME.tmp-HOST-PID-XXXXXXXX``; one left behind by a process that was killed
    during the write (on this host, whose PID no longer runs) is removed by the next atomic write into the
    same directory.
    """
    if not mode.startswith("w") or any(c not in "wbt+" for c in mode):
        raise ValueError(f"atomic_write: mode must be a writing mode ('wb', 'w', 'w+b', ...), got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(2, f"cannot write {path}: directory {directory} does not exist", path)
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"cannot write {path}: it is a directory", path)
    base = os.path.basename(path)
    flags = os.O_CREAT | os.O_EXCL | (os.O_RDWR if "+" in mode else os.O_WRONLY)
    flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    remove_stale_temporaries(directory)
    while True:
        tmp = os.path.join(directory, f".{base}.tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        if "b" in mode:
            f = os.fdopen(fd, mode)
        else:
            f = os.fdopen(fd, mode, encoding=encoding or "utf-8", newline=newline)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except OSError as e:
        _unlink_quietly(tmp)
        if e.filename is None or e.filename == tmp:  # name what the caller asked for, not the temporary
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}", path) from e
        raise
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(directory)


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname() or "host")[:64].replace("-", "_")
_TMP_NAME = re.compile(r"^\..+\.tmp-([A-Za-z0-9_.]+)-(\d+)-[0-9a-f]{8}$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: PathLike) -> List[str]:
    """Remove the temporary files of :func:`atomic_write` in ``directory`` that a killed process left:
    written on this host by a PID that no longer runs.  Returns their paths."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TMP_NAME.match(name)
        if m and m.group(1) == _HOST and int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2))):
            p = os.path.join(directory, name)
            _unlink_quietly(p)
            removed.append(p)
    return removed


def _unlink_quietly(p: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(p)


def _fsync_dir(directory: str) -> None:
    # Makes the rename durable; not possible on every platform / file system, so best effort.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------------------------------------------
# Text and binary protobuf files
# ---------------------------------------------------------------------------------------------------------

def _instance(msg: MessageArg) -> _pb_message.Message:
    if isinstance(msg, type):
        return msg()
    if isinstance(msg, _pb_message.Message):
        return msg
    raise TypeError(f"expected a protobuf message class or instance, got {type(msg).__name__}")


def _read_bytes(path: PathLike) -> bytes:
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CaffeFormatError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise CaffeFormatError(f"{p}: is a directory, not a file") from None
    except PermissionError:
        raise CaffeFormatError(f"{p}: permission denied") from None


_POSITION_PREFIX = re.compile(r"^\s*\d+:\d+\s*:\s*")


def parse_prototxt_string(text: Union[str, bytes], msg: MessageArg, source: str = "<string>"):
    """Parse protobuf text format into ``msg`` (a message class or instance; an instance is cleared first,
    as Caffe's TextFormat::Parse does) and return the message.

    Errors raise :class:`CaffeFormatError` ``"SOURCE:LINE:COL: what is wrong"`` (1-based line and column).
    As in Caffe, a non-repeated field given twice is an error.
    """
    m = _instance(msg)
    binary_hint = None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            line = text[:e.start].count(b"\n") + 1
            binary_hint = f"{source}:{line}: not UTF-8 text (byte 0x{text[e.start]:02x}); is this a binary file?"
            if b"\0" in text:
                raise CaffeFormatError(binary_hint) from None
            # bytes that are not UTF-8 (a Latin-1 or GBK comment): kept as they are, as Caffe's C++ parser
            # does; only inside a string value do they stop the parse (below)
            text = text.decode("utf-8", "surrogateescape")
    m.Clear()
    try:
        text_format.Parse(text, m)
    except text_format.ParseError as e:
        what = _POSITION_PREFIX.sub("", str(e)) or "syntax error"
        if "surrogates not allowed" in what:
            what = "a string value holds bytes that are not UTF-8 (protobuf strings must be UTF-8)"
        elif binary_hint and any("\udc80" <= c <= "\udcff" for c in what):
            raise CaffeFormatError(binary_hint) from None
        line, col = e.GetLine(), e.GetColumn()
        if line is not None and 0 < line <= text.count("\n") + 1:
            # protobuf quotes the whole offending line before some messages; the position says it already
            quoted = "'" + text.split("\n")[line - 1].rstrip("\r") + "': "
            if what.startswith(quoted):
                what = what[len(quoted):]
        if line is not None and col is not None:
            where = f"{source}:{line}:{col}"
        elif line is not None:
            where = f"{source}:{line}"
        else:
            where = source
        what = what.encode("utf-8", "backslashreplace").decode("utf-8")
        raise CaffeFormatError(f"{where}: {what}") from None
    return m


def read_prototxt(path: PathLike, msg: MessageArg):
    """Read a text-format protobuf file into ``msg`` (class or instance) and return the message."""
    p = os.fspath(path)
    return parse_prototxt_string(_read_bytes(p), msg, source=p)


def to_prototxt_string(msg: _pb_message.Message) -> str:
    """The message in protobuf text format."""
    return text_format.MessageToString(msg)


def write_prototxt(msg: _pb_message.Message, path: PathLike) -> None:
    """Write ``msg`` in protobuf text format to ``path`` (atomically)."""
    text = to_prototxt_string(msg)
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _parse_binary(data: bytes, msg: MessageArg, source: str):
    m = _instance(msg)
    m.Clear()
    try:
        m.ParseFromString(data)
    except (_pb_message.DecodeError, RuntimeError, ValueError) as e:
        detail = str(e).strip().rstrip(".")
        detail = f" ({detail})" if detail else ""
        raise CaffeFormatError(
            f"{source}: cannot parse {len(data)} bytes as binary {m.DESCRIPTOR.full_name}{detail}: "
            f"the file is truncated, corrupt or not of this kind") from None
    return m


def read_binaryproto(path: PathLike, msg: MessageArg):
    """Read a binary protobuf file of any size (no 64 MB limit) into ``msg`` and return the message.

    A truncated or corrupt file raises :class:`CaffeFormatError` naming the file.  (As with any protobuf
    reader, a file cut exactly between two top-level fields cannot be told from a shorter valid file.)
    """
    p = os.fspath(path)
    return _parse_binary(_read_bytes(p), msg, p)


def write_binaryproto(msg: _pb_message.Message, path: PathLike) -> None:
    """Serialize ``msg`` to ``path`` atomically (Caffe's WriteProtoToBinaryFile, without half-written files)."""
    data = msg.SerializeToString()
    with atomic_write(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------------------
# Blobs
# ---------------------------------------------------------------------------------------------------------

_LEGACY = ("num", "channels", "height", "width")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _packed_floats(field_number: int, values: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    if not raw:
        return b""
    return _varint((field_number << 3) | 2) + _varint(len(raw)) + raw


def array_to_proto(data, diff=None) -> "caffe_pb2.BlobProto":
    """A BlobProto with ``shape`` = ``data.shape`` and float32 ``data`` (and ``diff`` when given).

    Fast for large arrays: the packed fields are built as bytes and parsed by protobuf in one go.
    """
    data = np.asarray(data)
    bp = caffe_pb2.BlobProto()
    # Blob::ToProto adds one dim per axis: a 0-axis blob (a learned scalar) gets no ``shape`` field at all
    if data.ndim:
        bp.shape.dim.extend(int(d) for d in data.shape)
    payload = _packed_floats(5, data)
    if diff is not None:
        diff = np.asarray(diff)
        if diff.size != data.size:
            raise ValueError(f"diff has {diff.size} values but data has {data.size}")
        payload += _packed_floats(6, diff)
    if payload:
        bp.MergeFromString(payload)
    return bp


def blob_to_proto(blob, write_diff: bool = False) -> "caffe_pb2.BlobProto":
    """Caffe's Blob::ToProto: the ``shape`` field and the float data (and the diff when ``write_diff``).

    ``blob`` is a :class:`~torchcaffe.blob.Blob` (anything with ``.data``/``.diff`` numpy arrays) or an
    array (then ``write_diff`` must be False).
    """
    if hasattr(blob, "data") and not isinstance(blob, np.ndarray):
        data = np.asarray(blob.data)
        diff = np.asarray(blob.diff) if write_diff else None
    else:
        if write_diff:
            raise ValueError("blob_to_proto: write_diff needs a Blob, not a bare array")
        data, diff = np.asarray(blob), None
    return array_to_proto(data, diff)


def _has_legacy_shape(bp) -> bool:
    return any(bp.HasField(f) for f in _LEGACY)


def proto_shape(bp) -> Tuple[int, ...]:
    """The shape Blob::FromProto(reshape=true) gives: the legacy (num, channels, height, width) when any of
    those fields is set, else ``shape.dim`` (which may be empty: a 0-axis blob of one element)."""
    if _has_legacy_shape(bp):
        return (int(bp.num), int(bp.channels), int(bp.height), int(bp.width))
    return tuple(int(d) for d in bp.shape.dim)


def shape_string(shape: Sequence[int]) -> str:
    """Caffe's Blob::shape_string: ``"64 3 3 3 (1728)"``."""
    shape = tuple(int(d) for d in shape)
    return " ".join(str(d) for d in shape) + (" " if shape else "") + f"({int(np.prod(shape, dtype=np.int64))})"


def shape_equals(target, bp) -> bool:
    """Caffe's Blob::ShapeEquals(proto): may ``bp`` be copied into a blob of shape ``target``?

    ``target`` is a shape tuple or anything with ``.shape`` (a Blob).  When the proto uses the legacy 4-D
    fields, the target (at most 4 axes) is padded with ones *on the left* to 4 axes and must agree
    (so a legacy 1x1x1xN bias matches shape (N,), a legacy 1x1xMxN weight matches (M, N)); otherwise the
    proto's ``shape.dim`` must equal the target exactly.
    """
    shape = tuple(int(d) for d in (target.shape if hasattr(target, "shape") else target))
    if _has_legacy_shape(bp):
        if len(shape) > 4:
            return False
        padded = (1,) * (4 - len(shape)) + shape
        return padded == (int(bp.num), int(bp.channels), int(bp.height), int(bp.width))
    return shape == tuple(int(d) for d in bp.shape.dim)


def shapes_match(bp, shape) -> bool:
    """:func:`shape_equals` with the proto first: may ``bp`` be copied into a blob of ``shape``?"""
    return shape_equals(shape, bp)


def is_missing_blob(bp) -> bool:
    """True for the placeholder :func:`read_net_weights` puts where an HDF5 weights file has no dataset for
    a parameter (Caffe skips weight-shared parameters when it writes HDF5).  Caffe itself never writes such
    a BlobProto: Blob::ToProto always sets ``shape``."""
    return (not bp.HasField("shape") and not _has_legacy_shape(bp) and len(bp.data) == 0
            and len(bp.double_data) == 0)


def proto_to_array(bp, diff: bool = False, dtype=np.float32) -> Optional[np.ndarray]:
    """The blob's data (or diff) as a new ``dtype`` array (float32 by default, as Caffe's float blobs) of
    :func:`proto_shape`; ``double_data``/``double_diff`` take precedence as in Blob::FromProto.

    With ``diff=True`` and no diff stored, returns None (Caffe then leaves the target's diff alone).
    A value count that does not match the shape raises :class:`CaffeFormatError`.
    """
    shape = proto_shape(bp)
    count = int(np.prod(shape, dtype=np.int64))
    if diff:
        values = bp.double_diff if len(bp.double_diff) else bp.diff
        if len(values) == 0 and count != 0:
            return None
        what = "diff"
    else:
        values = bp.double_data if len(bp.double_data) else bp.data
        what = "data"
    if len(values) != count:
        raise CaffeFormatError(f"blob has {len(values)} {what} values but its shape {shape_string(shape)} "
                               f"needs {count}")
    return np.array(values, dtype=dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------------------
# Nets, weights, solvers
# ---------------------------------------------------------------------------------------------------------

def _other_kind_hint(data: bytes, wanted: str) -> str:
    """When a file fails to parse as one kind of definition, say if it is the other kind."""
    other = caffe_pb2.SolverParameter if wanted == "net" else caffe_pb2.NetParameter
    try:
        parsed = parse_prototxt_string(data, other)
    except CaffeFormatError:
        return ""
    if wanted == "net":
        return " (this looks like a solver definition, not a net)"
    if len(parsed.layer) or len(parsed.layers):
        return " (this looks like a net definition, not a solver)"
    return ""


def _run_upgrade(fn, msg, source: str) -> bool:
    try:
        return fn(msg, source=source)
    except _upgrade.UpgradeError as e:
        raise CaffeFormatError(f"{source}: {e}") from None


def read_net_param(path: PathLike) -> "caffe_pb2.NetParameter":
    """Read a net prototxt and upgrade it (Caffe's ReadNetParamsFromTextFileOrDie).

    Raises :class:`CaffeFormatError` for a missing or malformed file, or one that defines no layers.
    """
    p = os.fspath(path)
    data = _read_bytes(p)
    try:
        net = parse_prototxt_string(data, caffe_pb2.NetParameter, source=p)
    except CaffeFormatError as e:
        raise CaffeFormatError(f"{e}{_other_kind_hint(data, 'net')}") from None
    _run_upgrade(_upgrade.upgrade_net, net, p)
    if len(net.layer) == 0:
        raise CaffeFormatError(f"{p}: defines no layers; not a net definition")
    return net


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5_weights(path: PathLike) -> bool:
    """Whether :func:`read_net_weights` reads ``path`` as HDF5: Caffe's rule (the name ends in ``.h5``),
    or the file starts with the HDF5 signature."""
    p = os.fspath(path)
    if p.endswith(".h5"):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(8) == _HDF5_SIGNATURE
    except OSError:
        return False


def read_net_weights(path: PathLike) -> "caffe_pb2.NetParameter":
    """Read trained weights as a NetParameter whose layers carry ``blobs``.

    * a binary caffemodel (any size; V0/V1 ones included) is parsed and upgraded as Caffe's
      ReadNetParamsFromBinaryFileOrDie does;
    * an HDF5 file (``*.h5``, e.g. ``*.caffemodel.h5``, or any file with the HDF5 signature) in Caffe's
      layout -- ``data/<layer name>/<i>`` datasets -- becomes one layer per group, in HDF5's (name) order,
      with float32 blobs in the ``shape`` form.  A parameter whose dataset is absent (Caffe does not write
      weight-shared parameters) is a placeholder blob (:func:`is_missing_blob`); trailing absent ones are
      simply not there.  The ``diff/`` group is not read (Caffe's CopyTrainedLayersFromHDF5 ignores it).

    Raises :class:`CaffeFormatError` for a missing, truncated or corrupt file, or one without layers.
    """
    p = os.fspath(path)
    if is_hdf5_weights(p):
        return _read_net_hdf5(p)
    data = _read_bytes(p)
    try:
        net = _parse_binary(data, caffe_pb2.NetParameter, p)
    except CaffeFormatError as e:
        hint = ""
        if len(data) < (16 << 20):
            with contextlib.suppress(CaffeFormatError):
                parse_prototxt_string(data, caffe_pb2.NetParameter)
                hint = " (it is a text prototxt: net definitions go to read_net_param, weights are binary)"
        raise CaffeFormatError(f"{e}{hint}") from None
    _run_upgrade(_upgrade.upgrade_net, net, p)
    if len(net.layer) == 0:
        raise CaffeFormatError(f"{p}: holds no layers; is it really a caffemodel?")
    return net


def _read_net_hdf5(p: str) -> "caffe_pb2.NetParameter":
    import h5py

    if not os.path.exists(p):
        raise CaffeFormatError(f"{p}: no such file")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise CaffeFormatError(f"{p}: cannot open as HDF5 ({e}); truncated or not an HDF5 file") from None
    net = caffe_pb2.NetParameter()
    try:
        with f:
            if "data" not in f or not isinstance(f["data"], h5py.Group):
                raise CaffeFormatError(f"{p}: HDF5 file has no 'data' group; not Caffe HDF5 weights")

            def walk(group, prefix: str) -> None:
                datasets, subgroups = {}, []
                for key in group:  # HDF5's name order, as Caffe's hdf5_get_name_by_idx
                    obj = group[key]
                    if isinstance(obj, h5py.Dataset):
                        if key.isdigit():
                            datasets[int(key)] = obj
                    elif isinstance(obj, h5py.Group):
                        subgroups.append(key)
                if prefix and (datasets or not subgroups):
                    layer = net.layer.add()
                    layer.name = prefix
                    for j in range(max(datasets) + 1 if datasets else 0):
                        if j in datasets:
                            arr = np.asarray(datasets[j][()], dtype=np.float32)
                            layer.blobs.add().CopyFrom(array_to_proto(arr))
                        else:
                            layer.blobs.add()  # placeholder: see is_missing_blob
                for key in subgroups:
                    walk(group[key], f"{prefix}/{key}" if prefix else key)

            walk(f["data"], "")
    except CaffeFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise CaffeFormatError(f"{p}: cannot read HDF5 weights ({e})") from None
    if len(net.layer) == 0:
        raise CaffeFormatError(f"{p}: HDF5 'data' group holds no layers")
    return net


def write_net_hdf5(net_param: "caffe_pb2.NetParameter", path: PathLike, diff: bool = False) -> None:
    """Write the layers' blobs in Caffe's HDF5 layout (Net::ToHDF5), atomically.

    ``data/<layer>/<i>`` holds each parameter as float32 of its blob shape; like Caffe, a parameter that
    is weight-shared (its ParamSpec name was owned by an earlier parameter) is not written to ``data/``.
    With ``diff=True`` a ``diff/<layer>/<i>`` group holds every parameter's diff (zeros where a blob
    carries none).  Every layer gets its group, blobs or not.
    """
    import h5py

    p = os.fspath(path)
    seen = {}
    for layer in net_param.layer:
        if layer.name in seen:
            raise CaffeFormatError(f"{p}: two layers are named '{layer.name}'; HDF5 weights need unique "
                                   f"layer names")
        seen[layer.name] = True
    owned_names = set()
    with atomic_write(p, "w+b") as fobj:
        with h5py.File(fobj, "w") as h5:
            data_g = h5.create_group("data")
            diff_g = h5.create_group("diff") if diff else None
            for layer in net_param.layer:
                ld = data_g.create_group(layer.name)
                lf = diff_g.create_group(layer.name) if diff else None
                for j, bp in enumerate(layer.blobs):
                    name = layer.param[j].name if j < len(layer.param) else ""
                    owner = True
                    if name:
                        owner = name not in owned_names
                        owned_names.add(name)
                    shape = proto_shape(bp)
                    if owner:
                        ld.create_dataset(str(j), data=proto_to_array(bp))
                    if diff:
                        d = proto_to_array(bp, diff=True)
                        if d is None:
                            d = np.zeros(shape, dtype=np.float32)
                        lf.create_dataset(str(j), data=d)


def read_solver_param(path: PathLike) -> "caffe_pb2.SolverParameter":
    """Read a solver prototxt and upgrade it (Caffe's ReadSolverParamsFromTextFileOrDie: the legacy
    ``solver_type`` enum becomes the ``type`` string)."""
    p = os.fspath(path)
    data = _read_bytes(p)
    try:
        solver = parse_prototxt_string(data, caffe_pb2.SolverParameter, source=p)
    except CaffeFormatError as e:
        raise CaffeFormatError(f"{e}{_other_kind_hint(data, 'solver')}") from None
    _run_upgrade(_upgrade.upgrade_solver, solver, p)
    return solver
