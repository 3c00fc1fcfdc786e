"""Compute the empirical ab prior of a dataset and write it as ``prior_probs.npy`` for the layers.

    python tools/compute_prior.py --lmdb /data/ilsvrc12_train_lmdb --out prior_probs.npy [--device cuda]
    python tools/compute_prior.py --images /data/photos --out prior_probs.npy

Images are streamed (a batch at a time, on ``--device``), converted to CIE Lab, and every pixel is counted in
its nearest of the 313 released bins (``--bins`` for another set). Images judged gray (no |a| or |b| above
``--gray-threshold`` = 5, supplementary Sec. 2.2) are skipped, as they were excluded from training, unless
``--keep-gray``. The distribution is smoothed with a Gaussian of ``--sigma`` = 5 ab units on the ab grid
(the rule is documented in ``cic.prior``) and written atomically as float64, shape (Q,), summing to 1 --
the released ``prior_probs.npy`` format, which ``PriorBoostLayer`` reads (``{"prior": "<path>"}``).

Inputs:
* ``--lmdb DIR``: a Caffe Datum LMDB (e.g. from ``convert_imageset``): raw CxHxW BGR uint8 Datums or
  encoded ones (JPEG/PNG bytes, ``encoded: true``), decoded with OpenCV to BGR;
* ``--images DIR``: every image file under DIR (recursive, sorted), read with OpenCV (BGR).
Images are used at their stored size; consecutive images of one size form a batch (``--batch``).

Bad input is one line naming the flag and file (and the record's key for a damaged Datum) and exit status 2:
a missing, empty or damaged LMDB, a record that is not a Datum or whose pixels do not fill its shape, a
folder without images, an unreadable ``--bins``.  The output keeps the permissions the umask gives.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cic

import cv2
import numpy as np
import torch

class PriorError(RuntimeError):
    """Bad input or output for compute_prior; the message names the flag and the file."""


IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".jpe"}


# ---- Caffe Datum ------------------------------------------------------------------------------------


def datum_to_bgr(buf: bytes) -> np.ndarray:
    """The image of a serialized Caffe Datum (raw, float or encoded) as C x H x W BGR; gray is repeated to
    three channels.  Parsing and decoding are torchcaffe's (caffe_pb2, caffe.io.datum_to_array)."""
    from torchcaffe import io as caffe_io
    from torchcaffe.proto import caffe_pb2

    d = caffe_pb2.Datum()
    try:
        d.ParseFromString(buf)
    except Exception as e:  # google.protobuf.message.DecodeError
        raise ValueError(f"not a Datum ({type(e).__name__}: {e})") from None
    want = d.channels * d.height * d.width
    have = len(d.data) if len(d.data) else len(d.float_data)
    if not d.encoded and (want == 0 or have != want):
        raise ValueError(f"a Datum of shape {d.channels}x{d.height}x{d.width} with {have} values "
                         f"(short or damaged)")
    arr = caffe_io.datum_to_array(d)
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    elif arr.shape[0] != 3:
        raise ValueError(f"Datum with {arr.shape[0]} channels; expected 1 or 3")
    return arr


def lmdb_images(path: str, limit: int | None):
    import lmdb

    if not os.path.exists(path):
        raise PriorError(f"--lmdb {path}: no such database")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "data.mdb")):
        raise PriorError(f"--lmdb {path}: not an LMDB (no data.mdb in the folder)")
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=os.path.isdir(path))
        st, info = env.stat(), env.info()
        total = st["entries"]
    except lmdb.Error as e:
        raise PriorError(f"--lmdb {path}: not a readable LMDB ({e})") from None
    # a data file shorter than its pages (a copy cut short) would crash the reader with SIGBUS
    data_file = os.path.join(path, "data.mdb") if os.path.isdir(path) else path
    need, have = (info["last_pgno"] + 1) * st["psize"], os.path.getsize(data_file)
    if have < need:
        env.close()
        raise PriorError(f"--lmdb {path}: damaged database: {data_file} has {have} bytes, its pages need {need} "
                         f"(truncated copy?)")
    if total == 0:
        env.close()
        raise PriorError(f"--lmdb {path}: the database holds no records")
    total = min(total, limit) if limit else total

    def gen():
        try:
            with env.begin() as txn:
                for n, (key, value) in enumerate(txn.cursor()):
                    if limit and n >= limit:
                        break
                    try:
                        img = datum_to_bgr(value)
                    except ValueError as e:
                        raise PriorError(f"--lmdb {path}: record {key.decode('utf-8', 'backslashreplace')!r}: "
                                         f"{e}") from None
                    yield img
        except lmdb.Error as e:
            raise PriorError(f"--lmdb {path}: damaged database ({e})") from None
        finally:
            env.close()

    return total, gen()


def folder_images(path: str, limit: int | None):
    if not os.path.isdir(path):
        raise PriorError(f"--images {path}: " + ("not a folder" if os.path.exists(path) else "no such folder"))
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise PriorError(f"--images {path}: no image files ({', '.join(sorted(IMAGE_EXTS))}) in the folder")
    if limit:
        files = files[:limit]

    def gen():
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                print(f"warning: cannot read {f}, skipped", file=sys.stderr)
                continue
            yield img.transpose(2, 0, 1)

    return len(files), gen()


def batches(images, size: int):
    """Group consecutive images of one shape into lists of at most ``size``."""
    batch = []
    for img in images:
        if batch and (len(batch) == size or batch[0].shape != img.shape):
            yield batch
            batch = []
        batch.append(img)
    if batch:
        yield batch


# ---- main ---------------------------------------------------------------------------------------------


def compute_prior(images, total: int, device, batch: int, sigma: float, keep_gray: bool,
                  gray_threshold: float, bins=None, progress: bool = True):
    """Stream ``images`` (CxHxW BGR) through a :class:`cic.PriorAccumulator`; returns (prior, accumulator)."""
    from tqdm import tqdm

    centers = _centers(bins)
    acc = cic.PriorAccumulator(centers, skip_gray=not keep_gray, threshold=gray_threshold, device=device)
    with tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for group in batches(images, batch):
            bgr = torch.from_numpy(np.stack(group)).to(device)
            acc.update(cic.bgr255_to_lab(bgr.float())[:, 1:])
            bar.update(len(group))
            bar.set_postfix(used=acc.images, gray=acc.skipped, refresh=False)
    if acc.images == 0:
        raise PriorError(f"no colour image to count ({acc.skipped} gray image(s) skipped; --keep-gray counts "
                         f"them)")
    return acc.prior(sigma), acc


def _centers(bins):
    """The bin centres of ``--bins`` (None: the released 313); PriorError naming the file otherwise."""
    given = bins
    if bins and os.path.exists(bins):
        bins = os.path.abspath(bins)  # a path the user typed is relative to the working directory
    try:
        centers = cic.load_bins(bins) if bins else None
    except Exception as e:  # missing, not .npy, wrong shape, an object array (never unpickled)
        why = "not a numeric .npy array (pickled or other data; never unpickled)" if "pickle" in str(e) else e
        raise PriorError(f"--bins {given}: cannot use it as bin centres: {why}") from None
    return centers


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--lmdb", help="Caffe Datum LMDB directory")
    src.add_argument("--images", help="folder of image files (recursive)")
    ap.add_argument("--out", required=True, help="output prior_probs.npy (float64, (Q,), sums to 1)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--sigma", type=float, default=cic.PRIOR_SIGMA, help="smoothing sigma, ab units (default 5)")
    ap.add_argument("--keep-gray", action="store_true", help="count gray images too (default: skip them)")
    ap.add_argument("--gray-threshold", type=float, default=cic.GRAY_THRESHOLD,
                    help="an image is gray if no |a| or |b| exceeds this (default 5)")
    ap.add_argument("--bins", default=None, help="bin centres .npy (default: the released 313)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.batch < 1 or (args.limit is not None and args.limit < 1) or args.sigma < 0:
        ap.error("--batch and --limit must be positive, --sigma non-negative")

    try:
        if not args.out.strip() or os.path.isdir(args.out):
            raise PriorError(f"--out {args.out!r}: " + ("is a folder; " if args.out.strip() else "") +
                             "give the file to write (e.g. prior_probs.npy)")
        parent = os.path.dirname(args.out)
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent and not os.path.isdir(parent):
            raise PriorError(f"--out {args.out}: {parent} is a file, not a folder")
        if args.device.startswith("cuda"):
            from torchcaffe import mode

            try:
                mode.check_gpus([torch.device(args.device).index or 0], flag="--device")
            except mode.DeviceError as e:
                raise PriorError(str(e)) from None
        _centers(args.bins)  # before any database is opened
        total, images = (lmdb_images(args.lmdb, args.limit) if args.lmdb else
                         folder_images(args.images, args.limit))
        t0 = time.time()
        prior, acc = compute_prior(images, total, torch.device(args.device), args.batch, args.sigma,
                                   args.keep_gray, args.gray_threshold, args.bins, progress=not args.no_progress)
        try:
            out = cic.save_prior(prior, args.out)
        except OSError as e:
            raise PriorError(f"--out {args.out}: cannot write: {e.strerror or e}") from None
    except PriorError as e:
        msg = str(e) if str(e).startswith("--") else f"{args.lmdb or args.images}: {e}"
        print(f"compute_prior: error: {msg}", file=sys.stderr)
        return 2
    print(f"{acc.images} images counted, {acc.skipped} gray skipped, {int(acc.counts.sum())} pixels, "
          f"{int((acc.counts > 0).sum())}/{len(prior)} bins seen, {time.time() - t0:.1f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
