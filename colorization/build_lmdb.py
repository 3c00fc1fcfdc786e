"""Build Caffe LMDBs of Datum records from ImageNet (ILSVRC2012), any image folder, or a ``path label`` list.

Usage::

    python tools/build_lmdb.py --root ILSVRC2012 --split {train,val,test,vgg,all} --out DIR
        [--val-labels FILE] [--val-first 2000] [--test-last 10000] [--vgg-last 48000]
        [--workers N] [--resize 256] [--encoded] [--gray-threshold 5]
    python tools/build_lmdb.py --root IMAGES --out DIR                   # any folder (class sub-folders -> labels)
    python tools/build_lmdb.py --root IMAGES --list FILE --out DIR       # a convert_imageset list: "path label"

Inputs
    ILSVRC2012 layout: ``ROOT/train/<wnid>/*.JPEG`` (label = index of the wnid in sorted order, Caffe's
    ``synsets.txt``; ``--synsets FILE`` gives another order) and ``ROOT/val/ILSVRC2012_val_%08d.JPEG`` (also
    accepted sorted into ``val/<wnid>/`` folders).  Validation labels come from ``--val-labels``: Caffe's
    ``val.txt`` (``ILSVRC2012_val_00000001.JPEG 65``) or the devkit's ``ILSVRC2012_validation_ground_truth.txt``
    (one 1-based ILSVRC2012_ID per line) with the devkit's ``meta.mat`` (``--meta``, default: beside the ground
    truth file) mapping IDs to wnids; without ``--val-labels`` a ``val.txt`` or ground-truth file at ROOT is
    used when present, else labels are 0.  Any other folder: every file under it (recursively, sorted by
    relative path; hidden files ignored); files in class sub-folders get the sorted index of their top-level
    folder as label, files at the top level label 0.  ``--list FILE``: convert_imageset's list, one
    ``relative/path label`` per line (the label after the last space), paths relative to ``--root``.

Symlinks, odd files and odd names
    The walk takes each real folder and each real file once, under its own path: a symlinked folder is
    entered only when it points outside the tree (a class folder kept elsewhere; it is a class like any
    other); a link back into the tree (a loop such as ``b/loop -> ..``, or a second name for a class folder)
    is skipped with a warning, so no image is stored twice or under a second label.  A file reached twice
    (a symlink to a file, hard links) is stored once.  Only regular files are ever opened: a FIFO, socket or
    device -- in the tree or named by ``--list`` -- is skipped ("not a regular file").  File names and list
    lines that are not UTF-8 (a Latin-1 ``caf\xe9.jpg``) are kept as the bytes on disk, in the keys,
    ``gray.txt`` and ``skipped.txt`` (the JSON files escape them).  Errors in the command line or the label
    files are one line naming the flag and file (and line) and exit status 2.  A full disk stops the build
    with one line; nothing of the batch in flight is stored, and the same command resumes after space is
    freed.

Splits (supplementary material, Sec. 2.3)
    ``train``: all training images (seeded shuffle, as ``convert_imageset --shuffle``; ``--no-shuffle``);
    ``val``: the first ``--val-first`` (2000) validation images by file name; ``test``: the last
    ``--test-last`` (10000); ``vgg``: the last ``--vgg-last`` (48000).  Each split drops its grayscale images;
    the seed reports 9803 colour images in ``test`` and 47023 in ``vgg`` on the real ImageNet, and the summary
    prints the counts next to those.  ``all``: with the ILSVRC2012 layout, every split present, each into
    ``DIR/<split>/`` with a summary ``DIR/manifest.json``; with a folder or a list, every input in one
    database (list order).  With a folder or list, ``val``/``test``/``vgg`` take the first/last N inputs.

Grayscale rule (Sec. 2.2)
    An image is gray when no pixel has ``|a|`` or ``|b|`` above ``--gray-threshold`` (5), tested with
    ``cic.gray.is_gray_image`` on the image as stored (after the resize; for ``--encoded``, the decoded
    stored bytes).  The test first runs on every 4th pixel in each direction: one colour pixel there
    already makes the image colour (exact, since the rule is a maximum over pixels); only images whose
    subset looks gray get the full test.  Gray images are not stored; ``DIR/gray.txt`` lists them.

What is stored (what BVLC Caffe's Data layer reads)
    Keys ``%08d_<relative path>``: the index of the input in the split's (shuffled) order, as
    convert_imageset's ``line_id`` -- indices of gray and skipped inputs are left out, as convert_imageset
    leaves out unreadable ones.  Values: a Datum as convert_imageset writes it.  Raw (default):
    ``channels, height, width, data`` (BGR uint8 in CHW order), ``label``, ``encoded: false``
    (byte-identical to Caffe's CVMatToDatum + ReadImageToDatum).  ``--encoded``: ``data`` (the image
    re-encoded in the format of the file's extension, or ``--encode-type``), ``label``, ``encoded: true``;
    with ``--resize 0`` a file whose content matches its extension and needs no conversion is stored as its
    own bytes (Caffe's ReadFileToDatum).  Images are decoded as ``cv::imread(IMREAD_COLOR)`` does and resized
    with ``cv::resize`` (INTER_LINEAR) to ``--resize`` x ``--resize`` (256; 0 keeps the size), exactly as
    ``convert_imageset --resize_height --resize_width``.  ``--fast-decode`` lets libjpeg decode large JPEGs at
    1/2, 1/4 or 1/8 scale (only where the reduced image still has both sides >= the target size) before the
    resize: faster, but the stored pixels differ slightly from Caffe's (off by default).

Inputs that cannot be stored are skipped, listed with their reason in the manifest and ``DIR/skipped.txt``,
and never stop the build: empty files, non-images (text, random bytes), undecodable or truncated JPEG/PNG
files (no end-of-image marker / IEND chunk), images with a side under ``--min-size`` (8) pixels ("tiny").
Inputs that need a conversion are converted as ``IMREAD_COLOR`` does and listed under ``converted``: CMYK
JPEGs (to BGR), 16-bit images (to 8 bits), alpha channels (dropped), palette images (expanded), and files
whose content is another format than their extension says (decoded by content).

Speed and safety
    Worker processes (``--workers``, default: all CPUs; forked after torch and cic are loaded, so they
    start at once) decode, resize, test and serialize in input order (``Pool.imap``, ``--chunksize``); their
    Datums come back through a shared memory mapping rather than the result pipe (a bounded window of
    inputs in flight); the main process writes batched transactions (``--commit-every`` inputs) and doubles
    the map size whenever LMDB reports it full.  A progress bar shows the rate and ETA.  After every
    commit, ``DIR/build_journal.jsonl`` records how far the build got with the gray/skipped/converted inputs
    so far; a killed or interrupted build, rerun with the same command, continues after the last journaled
    input and ends with exactly the database of an uninterrupted build (inputs re-processed after a kill are
    written again with identical bytes).  A finished build is not redone (``--overwrite`` rebuilds).
    ``DIR/manifest.json`` (written atomically at the end) holds the parameters, counts, ``gray``,
    ``skipped``, ``converted`` and the duration.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import re
import sys
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SPLITS = ("train", "val", "test", "vgg", "all")
#: colour images the supplementary material reports in the seed's splits of the real ImageNet (Sec. 2.3)
SEED_COLOUR_COUNTS = {"test": (9803, 10000), "vgg": (47023, 48000)}
ILSVRC_VAL_IMAGES = 50000
JOURNAL = "build_journal.jsonl"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.[A-Za-z]+$")
_EXT_FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "png": "png", "bmp": "bmp", "gif": "gif",
                "tif": "tiff", "tiff": "tiff", "webp": "webp", "ppm": "pnm", "pgm": "pnm", "pbm": "pnm",
                "pnm": "pnm"}
_ENCODABLE = {"jpg", "jpeg", "jpe", "png", "bmp", "tif", "tiff", "webp", "ppm", "pgm", "pbm", "pnm"}


class BuildError(RuntimeError):
    """A problem with the command line, the inputs or the output directory (not with a single image)."""


# =========================================================================================================
# Inputs
# =========================================================================================================

def _walk_files(root: str, exclude: Sequence[str] = ()) -> List[str]:
    """Relative paths (with ``/``) of the non-hidden regular files under ``root``, sorted; directories in
    ``exclude`` (absolute) are not entered.

    Each real directory and each real file is taken once, under its own path: the tree of real (not
    symlinked) directories is walked first; then a symlinked directory is entered only when its target has
    not been walked (a link to a folder outside ``root``; a link back into the tree -- a loop such as
    ``b/loop -> ..`` or a second name for a class folder -- is skipped with a warning).  A file reached
    twice (a symlinked file, hard links) is stored once, under the first path in the walk.  FIFOs, sockets
    and devices are never opened.  Names that are not UTF-8 are kept as the file system gives them."""
    out: List[str] = []
    seen_dirs = {os.path.realpath(e) for e in exclude}
    seen_files = set()
    deferred: List[Tuple[str, str]] = []  # symlinked directories: entered after the real tree

    def walk(d: str, prefix: str) -> None:
        seen_dirs.add(os.path.realpath(d))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            print(f"warning: cannot list {d}: {e.strerror or e}", file=sys.stderr)
            return
        subdirs = []
        for ent in entries:
            if ent.name.startswith("."):
                continue
            try:
                if ent.is_dir():
                    if ent.is_symlink():
                        deferred.append((ent.path, prefix + ent.name + "/"))
                    else:
                        subdirs.append((ent.path, prefix + ent.name + "/"))
                elif ent.is_file():  # a regular file, or a symlink to one
                    st = ent.stat()
                    ident = (st.st_dev, st.st_ino)
                    if ident not in seen_files:
                        seen_files.add(ident)
                        out.append(prefix + ent.name)
            except OSError:
                continue
        for path, pre in subdirs:
            if os.path.realpath(path) not in seen_dirs:
                walk(path, pre)

    walk(root, "")
    while deferred:
        path, pre = deferred.pop(0)
        real = os.path.realpath(path)
        inside = any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in seen_dirs)
        if inside or real in seen_dirs:
            print(f"warning: skipping {pre.rstrip('/')} -> {os.readlink(path)}: a symlink to a folder already "
                  f"in the walk (its images are stored under their own path)", file=sys.stderr)
            continue
        walk(path, pre)
    out.sort()
    return out


def read_list_file(path: str) -> List[Tuple[str, int]]:
    """convert_imageset's list: ``path label`` per line, the label after the last space (paths may hold
    spaces); a line without a label gets 0; blank lines are ignored."""
    entries = []
    # bytes that are not UTF-8 (a Latin-1 file name) are kept as they are: the name is looked up as written
    with _open_input(path, "--list") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            pos = line.rstrip().rfind(" ")
            if pos > 0:
                name, lab = line[:pos].strip(), line[pos + 1:].strip()
                try:
                    entries.append((name, int(lab)))
                    continue
                except ValueError:
                    pass
            entries.append((line.strip(), 0))
    return entries


def _open_input(path: str, flag: str):
    """A text input file (list, labels, synsets) opened for reading; BuildError naming ``flag`` and ``path``
    when it cannot be; lines that are not UTF-8 keep their bytes (surrogate escapes)."""
    import stat as _stat

    try:
        st = os.stat(path)
    except OSError as e:
        raise BuildError(f"{flag} {path}: {e.strerror or e}") from None
    if not _stat.S_ISREG(st.st_mode):
        raise BuildError(f"{flag} {path}: not a regular file")
    try:
        return open(path, encoding="utf-8", errors="surrogateescape")
    except OSError as e:
        raise BuildError(f"{flag} {path}: {e.strerror or e}") from None


def is_ilsvrc_layout(root: str) -> bool:
    tr, va = os.path.join(root, "train"), os.path.join(root, "val")
    if os.path.isdir(va):
        names = os.listdir(va)
        if any(VAL_NAME.match(n) for n in names[:1000]) or any(
                os.path.isdir(os.path.join(va, n)) and re.match(r"^n\d{8}$", n) for n in names[:1000]):
            return True
    if os.path.isdir(tr):
        subs = [d for d in os.listdir(tr) if os.path.isdir(os.path.join(tr, d))]
        return bool(subs) and all(re.match(r"^n\d{8}$", d) for d in subs)
    return False


def read_synsets(path: str) -> List[str]:
    """Caffe's synsets.txt (``n01440764`` or ``n01440764 tench, ...`` per line): the wnids in label order."""
    with _open_input(path, "--synsets") as f:
        wnids = [ln.split()[0] for ln in f if ln.strip()]
    if not wnids:
        raise BuildError(f"--synsets {path}: no wnids in the file (expected 'n01440764 ...' per line)")
    dup = sorted({w for w in wnids if wnids.count(w) > 1})
    if dup:
        raise BuildError(f"--synsets {path}: wnid(s) listed twice: {', '.join(dup[:5])}")
    return wnids


def read_meta_mat(path: str) -> Dict[int, str]:
    """ILSVRC2012_ID -> WNID for the 1000 leaf classes of the devkit's ``meta.mat``."""
    try:
        import scipy.io
    except ImportError as e:  # pragma: no cover
        raise BuildError(f"reading {path} needs scipy ({e})") from None
    try:
        m = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as e:
        raise BuildError(f"cannot read the devkit meta file {path}: {e}") from None
    if "synsets" not in m:
        raise BuildError(f"{path} has no 'synsets' variable (is it the ILSVRC2012 devkit's meta.mat?)")
    out = {}
    for s in np.atleast_1d(m["synsets"]):
        sid, wnid = int(np.asarray(s.ILSVRC2012_ID).item()), str(s.WNID)
        children = int(np.asarray(getattr(s, "num_children", 0)).item()) if hasattr(s, "num_children") else 0
        if 1 <= sid <= 1000 and children == 0:
            out[sid] = wnid
    if not out:
        raise BuildError(f"{path}: no leaf synsets with ILSVRC2012_ID 1..1000")
    return out


def read_val_labels(path: str, meta: Optional[str], synsets: Optional[List[str]]) -> Tuple[Dict[str, int], str]:
    """Validation labels by file name, from Caffe's val.txt or the devkit ground truth (+ meta.mat)."""
    with _open_input(path, "--val-labels") as f:
        lines = [ln.split() for ln in f if ln.strip()]
    if not lines:
        raise BuildError(f"--val-labels {path}: the validation label file is empty")
    if all(len(t) == 1 for t in lines):  # devkit ground truth: one ILSVRC2012_ID per image, in image order
        meta = meta or os.path.join(os.path.dirname(os.path.abspath(path)), "meta.mat")
        if not os.path.exists(meta):
            raise BuildError(f"--val-labels {path} is the devkit ground truth (ILSVRC2012_IDs); its synset mapping "
                             f"{meta} is missing (pass --meta ILSVRC2012_devkit_t12/data/meta.mat)")
        id2wnid = read_meta_mat(meta)
        order = synsets or sorted(id2wnid.values())
        index = {w: i for i, w in enumerate(order)}
        labels = {}
        for i, t in enumerate(lines, 1):
            try:
                sid = int(t[0])
            except ValueError:
                raise BuildError(f"--val-labels {path} line {i}: {t[0]!r} is not an ILSVRC2012_ID") from None
            if sid not in id2wnid:
                raise BuildError(f"--val-labels {path} line {i}: ILSVRC2012_ID {sid} is not a leaf synset of {meta}")
            wnid = id2wnid[sid]
            if wnid not in index:
                raise BuildError(f"--val-labels {path} line {i}: wnid {wnid} is not in the synset list")
            labels[f"ILSVRC2012_val_{i:08d}"] = index[wnid]
        return labels, f"devkit ground truth {path} with {meta}"
    labels = {}
    for i, t in enumerate(lines, 1):
        if len(t) < 2:
            raise BuildError(f"--val-labels {path} line {i}: expected 'file label', got {' '.join(t)!r}")
        try:
            labels[os.path.splitext(os.path.basename(" ".join(t[:-1])))[0]] = int(t[-1])
        except ValueError:
            raise BuildError(f"--val-labels {path} line {i}: the label {t[-1]!r} is not an integer") from None
    return labels, f"val.txt-style list {path}"


def _label_for(labels: Dict[str, int], rel: str) -> Optional[int]:
    return labels.get(os.path.splitext(os.path.basename(rel))[0])


class Inputs:
    """The inputs of one split: ``entries`` [(relative path, label)], relative to ``base``."""

    def __init__(self, split: str, base: str, entries: List[Tuple[str, int]], label_source: str,
                 unlabeled: Optional[List[str]] = None):
        self.split, self.base, self.entries, self.label_source = split, base, entries, label_source
        self.unlabeled = unlabeled or []


def _slice_split(split: str, items: list, args) -> list:
    if split == "val":
        return items[:args.val_first]
    if split == "test":
        return items[-args.test_last:] if args.test_last > 0 else []
    if split == "vgg":
        return items[-args.vgg_last:] if args.vgg_last > 0 else []
    return items


def _shuffle(entries: list, seed: int) -> list:
    perm = np.random.default_rng(seed).permutation(len(entries))
    return [entries[i] for i in perm]


def collect_inputs(args) -> List[Inputs]:
    """The inputs of every split the command asks for, in storage order."""
    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
        raise BuildError(f"--root {args.root} is not a directory")
    out_abs = os.path.abspath(args.out)
    synsets = read_synsets(args.synsets) if args.synsets else None
    shuffle_train = not args.no_shuffle

    if args.list:
        entries = read_list_file(args.list)
        if not entries:
            raise BuildError(f"the list {args.list} holds no entries")
        split = args.split
        items = _shuffle(entries, args.seed) if (split == "train" and shuffle_train) else \
            _slice_split(split, entries, args)
        return [Inputs(split, root, items, f"list {args.list}")]

    if not is_ilsvrc_layout(root):
        files = _walk_files(root, exclude=[out_abs])
        tops = sorted({f.split("/")[0] for f in files if "/" in f})
        index = {t: i for i, t in enumerate(synsets or tops)}
        entries = [(f, index.get(f.split("/")[0], 0) if "/" in f else 0) for f in files]
        if not entries:
            raise BuildError(f"no files under {root}")
        split = args.split
        items = _shuffle(entries, args.seed) if (split == "train" and shuffle_train) else \
            _slice_split(split, entries, args)
        src = f"sorted class folders of {root}" if tops else "none (0)"
        return [Inputs(split, root, items, src)]

    # ILSVRC2012 layout
    splits = [args.split] if args.split != "all" else \
        [s for s in ("train", "val", "test", "vgg")
         if os.path.isdir(os.path.join(root, "train" if s == "train" else "val"))]
    result = []
    val_cache = None
    for split in splits:
        if split == "train":
            base = os.path.join(root, "train")
            if not os.path.isdir(base):
                raise BuildError(f"{base} does not exist")
            wnids = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
            order = synsets or wnids
            index = {w: i for i, w in enumerate(order)}
            missing = [w for w in wnids if w not in index]
            if missing:
                raise BuildError(f"train folders {missing[:5]} are not in --synsets {args.synsets}")
            files = _walk_files(base, exclude=[out_abs])
            entries = [(f, index[f.split("/")[0]]) for f in files if "/" in f]
            if shuffle_train:
                entries = _shuffle(entries, args.seed)
            result.append(Inputs(split, base, entries, "synsets.txt order" if synsets else "sorted wnid folders"))
            continue
        if val_cache is None:
            val_cache = _collect_val(root, args, synsets, out_abs)
        base, entries, src, unlabeled = val_cache
        result.append(Inputs(split, base, _slice_split(split, entries, args), src, unlabeled))
    return result


def _collect_val(root: str, args, synsets, out_abs):
    base = os.path.join(root, "val")
    if not os.path.isdir(base):
        raise BuildError(f"{base} does not exist")
    files = _walk_files(base, exclude=[out_abs])
    # by file name (the ILSVRC2012 image number), also when the images were sorted into class folders
    files.sort(key=lambda f: (os.path.basename(f), f))
    label_file = args.val_labels
    if label_file is None:
        for cand in ("val.txt", "ILSVRC2012_validation_ground_truth.txt",
                     "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"):
            if os.path.exists(os.path.join(root, cand)):
                label_file = os.path.join(root, cand)
                break
    foldered = any("/" in f for f in files)
    unlabeled: List[str] = []
    if label_file:
        labels, src = read_val_labels(label_file, args.meta, synsets)
        entries = []
        for f in files:
            lab = _label_for(labels, f)
            if lab is None:
                unlabeled.append(f)
                lab = -1
            entries.append((f, lab))
    elif foldered:
        tops = sorted({f.split("/")[0] for f in files if "/" in f})
        index = {t: i for i, t in enumerate(synsets or tops)}
        entries = [(f, index.get(f.split("/")[0], 0)) for f in files]
        src = "sorted wnid folders of val/"
    else:
        entries = [(f, 0) for f in files]
        src = "none (0): no --val-labels, val.txt or ground truth found"
        print(f"warning: no validation labels found; labels are 0 ({src})", file=sys.stderr)
    return base, entries, src, unlabeled


# =========================================================================================================
# Per-image work (worker processes)
# =========================================================================================================

_CFG: dict = {}


def _worker_init(cfg: dict) -> None:
    global _CFG
    _CFG = cfg
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not cfg.get("in_process"):
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: it stops the pool
    if cfg.get("die_with_parent") and sys.platform.startswith("linux"):
        try:  # a worker dies with the main process (a killed build leaves no orphans behind)
            import ctypes
            import signal
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass
    import cv2

    if not cfg.get("in_process"):
        cv2.setNumThreads(1)
    try:
        import torch

        if not cfg.get("in_process"):
            torch.set_num_threads(1)
        import cic.gray  # noqa: F401  (load the grayscale rule now rather than at the first image)
        from torchcaffe.proto import caffe_pb2  # noqa: F401
    except Exception:  # pragma: no cover - reported by the first image that needs them
        pass


def sniff(data: bytes) -> Optional[str]:
    """The image format of ``data`` from its magic bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3] in b" \t\r\n":
        return "pnm"
    return None


_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def _jpeg_info(data: bytes) -> dict:
    """Components, precision and size from the first SOF marker; whether the scan data is complete."""
    info = {}
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seglen = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF_MARKERS and i + 10 <= n:
            info["precision"] = data[i + 4]
            info["height"] = int.from_bytes(data[i + 5:i + 7], "big")
            info["width"] = int.from_bytes(data[i + 7:i + 9], "big")
            info["components"] = data[i + 9]
            break
        if marker == 0xDA:
            break
        i += 2 + seglen
    sos = data.rfind(b"\xff\xda")
    info["complete"] = sos >= 0 and data.rfind(b"\xff\xd9") > sos
    return info


def _png_info(data: bytes) -> dict:
    info = {"complete": data.rfind(b"IEND") > 8}
    if len(data) >= 33 and data[12:16] == b"IHDR":
        info["width"] = int.from_bytes(data[16:20], "big")
        info["height"] = int.from_bytes(data[20:24], "big")
        info["bit_depth"] = data[24]
        info["color_type"] = data[25]
        i, trns = 8, False
        while i + 8 <= len(data):  # walk the chunks before the image data for a tRNS (transparency) chunk
            length = int.from_bytes(data[i:i + 4], "big")
            ctype = data[i + 4:i + 8]
            if ctype == b"tRNS":
                trns = True
            if ctype in (b"IDAT", b"IEND"):
                break
            i += 12 + length
        info["trns"] = trns
    return info


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        s = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t\f" for ch in s)


def _gray(bgr: np.ndarray, threshold: float) -> bool:
    """cic's grayscale rule on a BGR uint8 image, with an exact shortcut (see the module docstring)."""
    from cic.gray import is_gray_image

    if bgr.ndim == 2:
        bgr = bgr[:, :, None].repeat(3, axis=2)
    sub = bgr[::4, ::4]
    if sub.size and not is_gray_image(np.ascontiguousarray(sub[:, :, ::-1]), threshold):
        return False
    return bool(is_gray_image(np.ascontiguousarray(bgr[:, :, ::-1]), threshold))


def datum_bytes_raw(img: np.ndarray, label: int) -> bytes:
    """Caffe's CVMatToDatum + set_label, serialized: channels, height, width, data (CHW), label, encoded."""
    from torchcaffe.proto import caffe_pb2

    if img.ndim == 2:
        img = img[:, :, None]
    d = caffe_pb2.Datum()
    d.channels, d.height, d.width = int(img.shape[2]), int(img.shape[0]), int(img.shape[1])
    d.encoded = False
    d.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    d.label = int(label)
    return d.SerializeToString()


def datum_bytes_encoded(buf: bytes, label: int) -> bytes:
    """ReadImageToDatum with an encoding: data, label, encoded = true."""
    from torchcaffe.proto import caffe_pb2

    d = caffe_pb2.Datum()
    d.data = bytes(buf)
    d.label = int(label)
    d.encoded = True
    return d.SerializeToString()


def process_image(path: str, rel: str, label: int, cfg: dict):
    """Decode, check, convert, resize, gray-test and serialize one input.

    Returns ``("ok", datum_bytes, note)``, ``("gray", None, note)`` or ``("skip", None, reason)``; ``note`` is
    the conversion that was applied, or None.
    """
    import cv2

    import stat as _stat

    try:
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer; then only a regular
        # file is read
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        return "skip", None, f"unreadable: {e.strerror or e}"
    try:
        mode = os.fstat(fd).st_mode
        if not _stat.S_ISREG(mode):
            kind = ("a FIFO" if _stat.S_ISFIFO(mode) else "a directory" if _stat.S_ISDIR(mode) else
                    "a socket" if _stat.S_ISSOCK(mode) else "a device" if _stat.S_ISCHR(mode) or
                    _stat.S_ISBLK(mode) else "not a file")
            return "skip", None, f"not a regular file ({kind})"
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read()
    except OSError as e:
        return "skip", None, f"unreadable: {e.strerror or e}"
    finally:
        if fd >= 0:
            os.close(fd)
    if not data:
        return "skip", None, "empty file"
    fmt = sniff(data)
    ext = os.path.splitext(rel)[1][1:].lower()
    notes = []
    if fmt is None:
        arr = np.frombuffer(data, dtype=np.uint8)
        img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
        if img is None:
            return "skip", None, "not an image (text file)" if _looks_like_text(data) else \
                "not an image (unrecognised content)"
        fmt = "other"
    ncomp = 3
    if fmt == "jpeg":
        info = _jpeg_info(data)
        if not info["complete"]:
            return "skip", None, "truncated JPEG (no end-of-image marker after the scan data)"
        ncomp = info.get("components", 3)
        if ncomp == 4:
            notes.append("CMYK JPEG converted to BGR")
        if info.get("precision", 8) > 8:
            notes.append(f"{info['precision']}-bit JPEG reduced to 8 bits")
    elif fmt == "png":
        info = _png_info(data)
        if not info["complete"]:
            return "skip", None, "truncated PNG (no IEND chunk)"
        ct, bd = info.get("color_type", 2), info.get("bit_depth", 8)
        ncomp = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(ct, 3)
        if bd == 16:
            notes.append("16-bit PNG reduced to 8 bits")
        if ct == 3:
            notes.append("palette PNG expanded to BGR")
        if ct in (4, 6) or info.get("trns"):
            notes.append("alpha channel dropped")
    else:
        info = {}
    if ext and _EXT_FORMATS.get(ext, ext) != fmt and fmt != "other":
        notes.append(f"{fmt.upper()} content in a .{ext} file (decoded by content)")

    flag = cv2.IMREAD_COLOR
    resize = int(cfg["resize"])
    if cfg.get("fast_decode") and fmt == "jpeg" and resize > 0 and "width" in info:
        small = min(info["width"], info["height"])
        for factor, f2 in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                           (2, cv2.IMREAD_REDUCED_COLOR_2)):
            if small // factor >= resize:
                flag = f2
                break
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag) if fmt != "other" else img
    except cv2.error as e:
        return "skip", None, f"corrupt {fmt.upper()}: {str(e).strip().splitlines()[-1]}"
    if img is None:
        return "skip", None, f"undecodable {fmt.upper()} (corrupt, or a variant OpenCV cannot read)"
    h, w = img.shape[:2]
    if min(h, w) < cfg["min_size"]:
        return "skip", None, f"tiny: {w}x{h} (a side under {cfg['min_size']} px)"
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if resize > 0:
        img = cv2.resize(img, (resize, resize), interpolation=cv2.INTER_LINEAR)
    note = "; ".join(notes) or None

    if cfg["encoded"]:
        enc = (cfg.get("encode_type") or ext or "png").lower()
        if enc not in _ENCODABLE:
            enc = "png"
        if resize == 0 and not notes and _EXT_FORMATS.get(ext) == fmt and ncomp == 3 \
                and _EXT_FORMATS.get(enc) == fmt:
            buf, stored = data, img  # ReadFileToDatum: the file's own bytes
        else:
            ok, arr = cv2.imencode("." + enc, img)
            if not ok:
                return "skip", None, f"cannot encode as {enc}"
            buf = arr.tobytes()
            stored = cv2.imdecode(arr, cv2.IMREAD_COLOR)
        if _gray(stored, cfg["gray_threshold"]):
            return "gray", None, note
        return "ok", datum_bytes_encoded(buf, label), note
    if _gray(img, cfg["gray_threshold"]):
        return "gray", None, note
    return "ok", datum_bytes_raw(img, label), note


#: (mmap, slots, slot size): an anonymous shared mapping made before the workers are forked; worker results
#: travel through it instead of through the result pipe (see build_split)
_SHM: Optional[tuple] = None


def _task(task):
    index, rel, label, base = task
    cfg = _CFG
    delay = cfg.get("delay", 0.0)
    if delay:
        time.sleep(delay)
    if label < 0:
        return index, "skip", None, "no label in the validation label file"
    try:
        status, payload, info = process_image(os.path.join(base, rel), rel, label, cfg)
    except Exception as e:  # never abort the build on one image
        status, payload, info = "skip", None, f"error: {type(e).__name__}: {e}"
    if payload is not None and _SHM is not None and cfg.get("use_shm") and len(payload) <= _SHM[2]:
        mm, slots, size = _SHM
        off = (index % slots) * size
        mm[off:off + len(payload)] = payload
        payload = len(payload)  # the main process reads it from slot index % slots
    return index, status, payload, info


# =========================================================================================================
# The database, the journal and the manifest
# =========================================================================================================

def _atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (torchcaffe's atomic_write: fsync, rename, no debris)."""
    from torchcaffe.protoio import atomic_write

    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def _inputs_digest(entries: List[Tuple[str, int]]) -> str:
    h = hashlib.sha1()
    for rel, lab in entries:
        h.update(f"{rel}\t{lab}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


class Journal:
    """``build_journal.jsonl``: a header, then one line per committed batch of inputs, then ``done``."""

    def __init__(self, path: str):
        self.path = path
        self.header: Optional[dict] = None
        self.next = 0
        self.count = 0
        self.gray: List[str] = []
        self.skipped: Dict[str, str] = {}
        self.converted: Dict[str, str] = {}
        self.elapsed = 0.0
        self.sessions = 0
        self.done = False

    def load(self) -> bool:
        if not os.path.exists(self.path):
            return False
        with open(self.path, "rb") as f:
            raw = f.read()
        good_end = 0
        for line in raw.split(b"\n")[:-1]:  # the last piece is empty, or a line cut by a kill
            try:
                rec = json.loads(line)
            except ValueError:
                break
            good_end += len(line) + 1
            t = rec.get("type")
            if t == "header":
                self.header = rec
                self.sessions += 1
            elif t == "commit":
                self.next = rec["next"]
                self.count += rec["stored"]
                self.gray.extend(rec["gray"])
                self.skipped.update(rec["skipped"])
                self.converted.update(rec["converted"])
                self.elapsed = rec["elapsed"]
            elif t == "done":
                self.done = True
        if good_end != len(raw):  # a line cut by a kill: drop it
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return self.header is not None

    def append(self, rec: dict) -> None:
        with open(self.path, "ab") as f:
            f.write((json.dumps(rec, sort_keys=True) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())


def _grow(env, need: int = 0) -> int:
    cur = env.info()["map_size"]
    new = max(cur * 2, cur + 2 * need)
    env.set_mapsize(new)
    return new


def _commit(env, pending: List[Tuple[bytes, bytes]], stats: dict) -> None:
    import lmdb

    if not pending:
        return
    need = sum(len(k) + len(v) for k, v in pending)
    while True:
        txn = env.begin(write=True)
        try:
            for k, v in pending:
                txn.put(k, v)
            txn.commit()
            return
        except lmdb.MapFullError:
            txn.abort()
            stats["map_size"] = _grow(env, need)
            stats["map_grows"] += 1
        except lmdb.Error as e:
            txn.abort()
            raise BuildError(f"{env.path()}: cannot write the database ({e}; is the disk full?); nothing of this "
                             f"batch was stored: free space and rerun the same command to resume") from None


def _content_params(args, inputs: Inputs) -> dict:
    return {
        "split": inputs.split,
        "resize": args.resize,
        "encoded": bool(args.encoded),
        "encode_type": args.encode_type or "",
        "gray_threshold": float(args.gray_threshold),
        "min_size": args.min_size,
        "fast_decode": bool(args.fast_decode),
        "seed": args.seed,
        "shuffle": not args.no_shuffle,
        "val_first": args.val_first,
        "test_last": args.test_last,
        "vgg_last": args.vgg_last,
        "inputs": len(inputs.entries),
        "inputs_sha1": _inputs_digest(inputs.entries),
    }


def _clear_outputs(out: str) -> None:
    for name in ("data.mdb", "lock.mdb", JOURNAL, MANIFEST, "gray.txt", "skipped.txt"):
        p = os.path.join(out, name)
        if os.path.exists(p):
            os.remove(p)


def worker_config(args) -> dict:
    return {"resize": args.resize, "encoded": bool(args.encoded), "encode_type": args.encode_type,
            "gray_threshold": float(args.gray_threshold), "min_size": args.min_size,
            "fast_decode": bool(args.fast_decode), "delay": args.test_delay, "die_with_parent": True}


def make_pool(args):
    """The worker processes (None with --workers 0: everything runs in this process)."""
    if args.workers <= 0:
        return None
    global _SHM
    method = args.start_method or ("fork" if "fork" in mp.get_all_start_methods() else None)
    ctx = mp.get_context(method)
    cfg = worker_config(args)
    if ctx.get_start_method() == "fork":
        import mmap

        # results of up to `slots` inputs in flight share this mapping with the forked workers
        slots = max(64, 4 * args.workers * args.chunksize)
        size = (3 * args.resize * args.resize + 4096) if args.resize > 0 else (4 << 20)
        _SHM = (mmap.mmap(-1, slots * size), slots, size)
        cfg["use_shm"] = True
        # load torch and the grayscale rule once here; forked workers share them instead of each
        # importing them again (importing starts no threads, so forking afterwards is safe)
        try:
            import cic.gray  # noqa: F401
            from torchcaffe.proto import caffe_pb2  # noqa: F401
        except Exception:  # pragma: no cover - reported by the first image that needs them
            pass
    return ctx.Pool(args.workers, initializer=_worker_init, initargs=(cfg,))


def build_split(inputs: Inputs, out: str, args, log=print, get_pool=None) -> dict:
    """Build (or resume, or find finished) the LMDB of one split; returns its manifest.  ``get_pool()``
    gives the worker pool (made on first use; None: decode in this process)."""
    import lmdb

    os.makedirs(out, exist_ok=True)
    if args.overwrite:
        _clear_outputs(out)
    params = _content_params(args, inputs)
    journal = Journal(os.path.join(out, JOURNAL))
    had_journal = journal.load()
    mpath = os.path.join(out, MANIFEST)
    if had_journal:
        old = {k: journal.header.get("params", {}).get(k) for k in params}
        if old != params:
            diff = {k: (old[k], params[k]) for k in params if old[k] != params[k]}
            raise BuildError(f"{out} holds a build with other inputs or parameters {diff}; rerun with "
                             f"--overwrite to rebuild it")
        if journal.done and os.path.exists(mpath):
            with open(mpath, encoding="utf-8") as f:
                manifest = json.load(f)
            log(f"{inputs.split}: {out} is already complete ({manifest['count']} images); --overwrite rebuilds it")
            return manifest
    elif os.path.exists(os.path.join(out, "data.mdb")):
        raise BuildError(f"{out} already holds an LMDB without a build journal; rerun with --overwrite to "
                         f"replace it, or choose another --out")

    n = len(inputs.entries)
    start = journal.next
    if not had_journal:
        journal.append({"type": "header", "params": params, "format": FORMAT_VERSION})
        journal.sessions = 1
    else:
        journal.append({"type": "header", "params": params, "format": FORMAT_VERSION, "resume_at": start})
        journal.sessions += 1
        log(f"{inputs.split}: resuming at input {start} of {n} ({journal.count} stored so far)")

    per_image = (3 * args.resize * args.resize if args.resize > 0 else 600_000) // (4 if args.encoded else 1) + 512
    map_size = args.map_size or max(64 << 20, int((n - start) * per_image * 1.1) + (64 << 20))
    env = lmdb.open(out, map_size=map_size, subdir=True, readahead=False, meminit=False, max_dbs=0)
    stats = {"map_size": env.info()["map_size"], "map_grows": 0}
    if had_journal and int(env.stat()["entries"]) < journal.count:
        have = int(env.stat()["entries"])
        env.close()
        raise BuildError(f"{out}: the journal counts {journal.count} stored images but the database holds "
                         f"{have} (was data.mdb replaced?); rerun with --overwrite to rebuild")

    base = inputs.base
    pool = get_pool() if (get_pool is not None and n > start) else None
    shm = _SHM if pool is not None else None
    permits = threading.Semaphore(shm[1] if shm else 1)
    stop = threading.Event()

    def task_iter():
        # with shared-memory results, at most `slots` inputs are in flight: input i may use slot i % slots
        # only once input i - slots has been read out by this loop (which then releases a permit)
        for i in range(start, n):
            if shm is not None:
                while not permits.acquire(timeout=0.2):
                    if stop.is_set():
                        return
            if stop.is_set():
                return
            yield i, inputs.entries[i][0], inputs.entries[i][1], base

    tasks = task_iter()
    t0 = time.time()
    elapsed0 = journal.elapsed
    pending: List[Tuple[bytes, bytes]] = []
    pend = {"n": 0, "bytes": 0, "stored": 0, "gray": [], "skipped": {}, "converted": {}}
    count = journal.count
    gray_n, skip_n = len(journal.gray), len(journal.skipped)

    def flush(next_index: int) -> None:
        nonlocal pending, pend
        _commit(env, pending, stats)
        journal.append({"type": "commit", "next": next_index, "stored": pend["stored"], "gray": pend["gray"],
                        "skipped": pend["skipped"], "converted": pend["converted"],
                        "elapsed": round(elapsed0 + time.time() - t0, 3)})
        journal.next = next_index
        journal.gray.extend(pend["gray"])
        journal.skipped.update(pend["skipped"])
        journal.converted.update(pend["converted"])
        pending = []
        pend = {"n": 0, "bytes": 0, "stored": 0, "gray": [], "skipped": {}, "converted": {}}

    bar = None
    if not args.quiet:
        try:
            from tqdm import tqdm

            bar = tqdm(total=n, initial=start, unit="img", desc=inputs.split, dynamic_ncols=True,
                       smoothing=0.05, mininterval=0.5, file=sys.stderr)
        except ImportError:  # pragma: no cover
            bar = None
    try:
        if pool is not None:
            results = pool.imap(_task, tasks, chunksize=args.chunksize)
        else:
            _worker_init(dict(worker_config(args), die_with_parent=False, in_process=True))
            results = map(_task, tasks)
        last = start - 1
        first_at = None
        for index, status, payload, info in results:
            if first_at is None:
                first_at = time.time() - t0
            last = index
            rel = inputs.entries[index][0]
            if isinstance(payload, int):  # in the shared mapping
                off = (index % shm[1]) * shm[2]
                payload = shm[0][off:off + payload]
            if shm is not None:
                permits.release()
            if status == "ok":
                key = f"{index:08d}_{rel}".encode("utf-8", "surrogateescape")
                pending.append((key, payload))
                pend["bytes"] += len(key) + len(payload)
                pend["stored"] += 1
                count += 1
            elif status == "gray":
                pend["gray"].append(rel)
                gray_n += 1
            else:
                pend["skipped"][rel] = info
                skip_n += 1
            if info and status != "skip":
                pend["converted"][rel] = info
            pend["n"] += 1
            if bar is not None:
                bar.update(1)
                if pend["n"] % 64 == 0:
                    bar.set_postfix_str(f"stored {count}, gray {gray_n}, skipped {skip_n}", refresh=False)
            if pend["n"] >= args.commit_every or pend["bytes"] >= args.commit_bytes:
                flush(index + 1)
        flush(last + 1 if n > start else start)
    except KeyboardInterrupt:
        stop.set()
        env.close()
        raise BuildError(f"interrupted; rerun the same command to resume {inputs.split} after input "
                         f"{journal.next}") from None
    finally:
        stop.set()  # a task feeder waiting for a permit gives up (lets pool.terminate() finish)
        if bar is not None:
            bar.close()

    entries = int(env.stat()["entries"])
    env.close()
    if entries != count:
        raise BuildError(f"{out}: the database holds {entries} records but the journal counts {count}; "
                         f"rebuild with --overwrite")
    duration = elapsed0 + (time.time() - t0)
    gray = journal.gray
    skipped = journal.skipped
    with open(os.path.join(out, "gray.txt.tmp"), "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("".join(g + "\n" for g in gray))
    os.replace(os.path.join(out, "gray.txt.tmp"), os.path.join(out, "gray.txt"))
    with open(os.path.join(out, "skipped.txt.tmp"), "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write("".join(f"{k}\t{v}\n" for k, v in skipped.items()))
    os.replace(os.path.join(out, "skipped.txt.tmp"), os.path.join(out, "skipped.txt"))
    manifest = {
        "tool": "tools/build_lmdb.py",
        "format_version": FORMAT_VERSION,
        "split": inputs.split,
        "database": os.path.abspath(out),
        "source": {"root": os.path.abspath(args.root), "base": inputs.base,
                   "list": os.path.abspath(args.list) if args.list else None,
                   "labels": inputs.label_source},
        "params": dict(params, workers=args.workers, commit_every=args.commit_every),
        "datum": ("encoded" if args.encoded else "raw BGR uint8 CxHxW") + (
            f", {args.resize}x{args.resize}" if args.resize else ", original size"),
        "key_format": "%08d_<relative path> (index in the split's input order)",
        "inputs": n,
        "count": count,
        "gray_count": len(gray),
        "skipped_count": len(skipped),
        "converted_count": len(journal.converted),
        "gray": gray,
        "skipped": skipped,
        "converted": journal.converted,
        "gray_file": "gray.txt",
        "skipped_file": "skipped.txt",
        "duration_s": round(duration, 3),
        "images_per_s": round(n / duration, 2) if duration > 0 else None,
        "sessions": journal.sessions,
        "startup_s": round(first_at, 3) if first_at is not None else None,
        "map_size": stats["map_size"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if inputs.split in SEED_COLOUR_COUNTS:
        colour, of = SEED_COLOUR_COUNTS[inputs.split]
        manifest["seed_reported_colour"] = {"count": colour, "of": of}
    _atomic_write_text(mpath, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    journal.append({"type": "done", "count": count})
    return manifest


def summary_line(m: dict) -> str:
    s = (f"{m['split']}: {m['inputs']} inputs -> {m['count']} stored, {m['gray_count']} gray, "
         f"{m['skipped_count']} skipped, {m['converted_count']} converted; {m['duration_s']:.1f} s"
         + (f" ({m['images_per_s']:.1f} img/s)" if m.get("images_per_s") else ""))
    seed = m.get("seed_reported_colour")
    if seed:
        s += f"; colour {m['count']} of {m['inputs']} (the seed reports {seed['count']} of {seed['of']})"
    return s


# =========================================================================================================
# Command line
# =========================================================================================================

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring (pydoc colorization.build_lmdb) for the details.")
    p.add_argument("--root", required=True, help="ILSVRC2012 folder (train/, val/), any image folder, or the "
                   "folder that --list paths are relative to")
    p.add_argument("--list", help="convert_imageset list: 'relative/path label' per line")
    p.add_argument("--split", choices=SPLITS, default="all")
    p.add_argument("--out", required=True, help="output LMDB directory (for --split all with the ILSVRC2012 "
                   "layout: the parent of one LMDB per split)")
    p.add_argument("--val-labels", help="Caffe val.txt or the devkit ILSVRC2012_validation_ground_truth.txt")
    p.add_argument("--meta", help="the devkit's meta.mat (for the ground truth file; default: beside it)")
    p.add_argument("--synsets", help="wnids in label order (Caffe's synsets.txt); default: sorted wnids")
    p.add_argument("--val-first", type=int, default=2000)
    p.add_argument("--test-last", type=int, default=10000)
    p.add_argument("--vgg-last", type=int, default=48000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (0: in-process)")
    p.add_argument("--resize", type=int, default=256, help="resize to N x N with INTER_LINEAR (0: keep size)")
    p.add_argument("--encoded", action="store_true", help="store encoded images (encoded Datum)")
    p.add_argument("--encode-type", default="", help="with --encoded: format to encode (default: the file's "
                   "extension, as convert_imageset)")
    p.add_argument("--gray-threshold", type=float, default=None,
                   help="gray if no |a| or |b| is above this (default: cic's GRAY_THRESHOLD, 5)")
    p.add_argument("--min-size", type=int, default=8, help="skip images with a side under N px ('tiny')")
    p.add_argument("--fast-decode", action="store_true", help="decode large JPEGs at reduced scale (changes "
                   "the stored pixels slightly)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train shuffle")
    p.add_argument("--no-shuffle", action="store_true", help="keep the train inputs in sorted order")
    p.add_argument("--commit-every", type=int, default=1000, help="inputs per LMDB transaction")
    p.add_argument("--commit-bytes", type=int, default=256 << 20, help="bytes per LMDB transaction at most")
    p.add_argument("--chunksize", type=int, default=16, help="inputs per worker task")
    p.add_argument("--map-size", type=int, default=0, help="initial LMDB map size in bytes (grows as needed)")
    p.add_argument("--start-method", choices=("fork", "forkserver", "spawn"), default=None)
    p.add_argument("--overwrite", action="store_true", help="rebuild even if DIR holds a finished build")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--test-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.gray_threshold is None:
        from cic.gray import GRAY_THRESHOLD  # the supplementary material's 5

        args.gray_threshold = float(GRAY_THRESHOLD)
    if args.workers < 0 or args.resize < 0 or args.commit_every < 1 or args.chunksize < 1:
        p.error("--workers, --resize must be >= 0; --commit-every, --chunksize >= 1")
    if args.list and args.split == "all":
        pass
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    try:
        if not args.out.strip():
            raise BuildError("--out '': give the output folder")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise BuildError(f"--out {args.out}: is a file, not a folder")
        if args.list is not None:
            _open_input(args.list, "--list").close()
        splits = collect_inputs(args)
        multi = len(splits) > 1 or (args.split == "all" and is_ilsvrc_layout(args.root) and not args.list)
        manifests = []
        pool = None

        def get_pool():
            nonlocal pool
            if pool is None and args.workers > 0:
                pool = make_pool(args)
            return pool

        try:
            for inp in splits:
                out = os.path.join(args.out, inp.split) if multi else args.out
                if inp.unlabeled:
                    print(f"warning: {len(inp.unlabeled)} validation images have no label and are skipped "
                          f"(e.g. {inp.unlabeled[0]})", file=sys.stderr)
                print(f"{inp.split}: {len(inp.entries)} inputs from {inp.base} -> {out}", file=sys.stderr)
                manifests.append(build_split(inp, out, args, log=lambda s: print(s, file=sys.stderr),
                                             get_pool=get_pool))
        except BaseException:
            if pool is not None:
                pool.terminate()
                pool = None
            raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        if multi:
            top = {
                "tool": "tools/build_lmdb.py", "format_version": FORMAT_VERSION, "split": "all",
                "splits": {m["split"]: {"path": m["split"], "inputs": m["inputs"], "count": m["count"],
                                        "gray_count": m["gray_count"], "skipped_count": m["skipped_count"],
                                        "converted_count": m["converted_count"]} for m in manifests},
                "count": sum(m["count"] for m in manifests),
                "gray": sorted({f"{m['split']}/{g}" if m["split"] == "train" else f"val/{g}"
                                for m in manifests for g in m["gray"]}),
                "skipped": {(f"train/{k}" if m["split"] == "train" else f"val/{k}"): v
                            for m in manifests for k, v in m["skipped"].items()},
                "params": {k: v for k, v in manifests[0]["params"].items() if k not in ("split", "inputs",
                                                                                     "inputs_sha1")},
                "duration_s": round(time.time() - t0, 3),
            }
            _atomic_write_text(os.path.join(args.out, MANIFEST), json.dumps(top, indent=1, sort_keys=True) + "\n")
        for m in manifests:
            print(summary_line(m))
    except BuildError as e:
        print(f"build_lmdb: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the output folder or the disk: name the file, no traceback
        where = e.filename or args.out
        print(f"build_lmdb: error: {where}: {e.strerror or e}" + (
            " (is the disk full? free space and rerun the same command to resume)"
            if e.errno in (28, 27, 122) else ""), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
