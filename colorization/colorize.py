"""The colorize command line (``tools/colorize_image.py``, console command ``cic-colorize``): photos in, colour out.

    colorize_image.py -img_in photo.jpg -img_out photo_color.png -caffemodel W.caffemodel
    colorize_image.py -img_in photos/ -img_out colorized/ -caffemodel W.caffemodel [-batch 8]
    colorize_image.py -list files.txt [-root DIR] -img_out colorized/ -caffemodel W.caffemodel

Inputs: image files, folders (searched recursively for the extensions Pillow reads) and list files (``-list``:
one path per line, relative to ``-root`` -- default: the list file's folder; a trailing integer label, as in
ImageNet's lists, is ignored).  With one input file, ``-img_out`` is the output file (or an existing folder);
otherwise a folder that receives each image under its path relative to its input folder (or ``-root``), with
its own extension (``-ext`` changes it; formats Pillow cannot write become .png).

Any image Pillow reads is accepted: RGB, grayscale, RGBA and LA (the alpha is kept where the output format
has one), palette, CMYK, 16-bit (written at 16 bits to PNG and TIFF), EXIF-rotated (written upright), tiny
or very large (the net sees a resized copy; the output is composed at full resolution in strips of rows).
The output's L is the input's: out-of-gamut colours lose chroma at constant L; ``--clip`` clips R, G and B
instead, as the released script did.  ``--side-by-side`` writes the input and the colorized photo side by side.

Files that cannot be read or written are skipped and listed with their reasons at the end; the exit status
is 1 only when no image could be colorized (2 for a bad command line).  Flags as the released demo script
names them (``-img_in``); ``--flag`` works too.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .images import ImageError, read_photo, writable_format, write_photo
from .paths import DEFAULT_PROTOTXT, PROTOTXT_DIR

WEIGHTS_HELP = (
    "-caffemodel is required: the trained weights of the -prototxt net. Train them (`make demo`, or "
    "`caffe train -solver prototxt/solver.prototxt`: snapshots/*.caffemodel), or use the authors' released "
    "model colorization_release_v2.caffemodel (github.com/richzhang/colorization, its Caffe release: "
    "models/fetch_release_models.sh; http://eecs.berkeley.edu/~rich.zhang/projects/2016_colorization/files/"
    "demo_v2/colorization_release_v2.caffemodel) with -prototxt "
    + str(PROTOTXT_DIR / "release_v2" / "colorization_deploy_v2.prototxt"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="colorize_image", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-img_in", "--img_in", nargs="+", default=[], help="input image files and/or folders")
    ap.add_argument("-list", "--list", action="append", default=[], help="a file listing input images")
    ap.add_argument("-root", "--root", default=None, help="folder that a list file's relative paths start from "
                                                          "(default: the list file's folder)")
    ap.add_argument("-img_out", "--img_out", required=True, help="output file (one input) or folder")
    ap.add_argument("-ext", "--ext", default=None, help="output extension in a folder (default: the input's)")
    ap.add_argument("-prototxt", "--prototxt", default=str(DEFAULT_PROTOTXT), help="deploy net")
    ap.add_argument("-caffemodel", "--caffemodel", default=None, help="trained weights (.caffemodel or .h5)")
    ap.add_argument("-gpu", "--gpu", type=int, default=-1, help="CUDA device id; -1 (default) is the CPU")
    ap.add_argument("-batch", "--batch", type=int, default=8, help="photos per forward pass (default 8)")
    ap.add_argument("-exact", "--exact", action="store_true",
                    help="run the net in Caffe's exact float32 (default: the fast inference path of torchcaffe.fast: "
                         "BatchNorm folded, channels-last, bf16 where the CPU or GPU has it; mean |delta ab| <= 1)")
    ap.add_argument("--clip", action="store_true",
                    help="clip out-of-gamut R, G, B as the released script did (changes L) instead of "
                         "reducing chroma at constant L")
    ap.add_argument("--side-by-side", "-side_by_side", dest="side_by_side", action="store_true",
                    help="write the input and the colorized photo side by side")
    ap.add_argument("--skip-existing", "-skip_existing", dest="skip_existing", action="store_true",
                    help="leave outputs that exist already (resume an interrupted run)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if not args.img_in and not args.list:
        ap.error("give input images with -img_in (files or folders) and/or -list")
    if args.batch < 1:
        ap.error("-batch must be at least 1")
    return args


class UsageError(Exception):
    """A problem with the command line or its files, reported as one line."""


def _image_extensions() -> set:
    from PIL import Image

    Image.init()
    return {e.lower() for e, f in Image.registered_extensions().items() if f in Image.OPEN}


def _read_list(list_file: Path, root: Optional[str]) -> List[Tuple[Path, Path]]:
    if not list_file.is_file():
        raise UsageError(f"-list {list_file}: no such file")
    base = Path(root) if root else list_file.parent
    items = []
    for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(.*\S)\s+-?\d+$", line)  # "path label" as in ImageNet's lists
        if m and not (base / line).exists():
            line = m.group(1)
        p = Path(line)
        # the output keeps the listed relative path, unless it would leave the output folder
        inside = not p.is_absolute() and ".." not in p.parts
        items.append((p if p.is_absolute() else base / p, p if inside else Path(p.name)))
    return items


def collect_inputs(args) -> Tuple[List[Tuple[Path, Path]], bool]:
    """``[(input path, output path relative to the output folder)]`` and whether the output is one file."""
    exts = _image_extensions()
    out = Path(args.img_out)
    items: List[Tuple[Path, Path]] = []
    folders = 0
    for name in args.img_in:
        p = Path(name)
        if p.is_dir():
            folders += 1
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                     and (Path(dirpath) / d).resolve() != out.resolve())
                found += [Path(dirpath) / f for f in sorted(filenames)
                          if Path(f).suffix.lower() in exts and not f.startswith(".")]
            items += [(f, f.relative_to(p)) for f in found]
        else:  # a file (a missing one is reported with the others)
            items.append((p, Path(p.name)))
    for lf in args.list:
        items += _read_list(Path(lf), args.root)
    single = (len(items) == 1 and folders == 0 and not args.list and not out.is_dir()
              and out.suffix != "" and not args.img_out.endswith(os.sep))
    return items, single


def output_path(rel: Path, out_dir: Path, ext: Optional[str]) -> Path:
    if ext:
        return out_dir / rel.with_suffix(ext if ext.startswith(".") else "." + ext)
    try:
        writable_format(rel)
        return out_dir / rel
    except ImageError:
        return out_dir / rel.with_suffix(".png")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"colorize_image: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("colorize_image: interrupted (finished outputs are complete; rerun with --skip-existing)",
              file=sys.stderr)
        return 130


def run(args) -> int:
    from tqdm import tqdm

    items, single = collect_inputs(args)
    out = Path(args.img_out)
    ext = None if not args.ext else (args.ext if args.ext.startswith(".") else "." + args.ext)
    try:
        writable_format(out if single else Path("output" + (ext or ".png")))
    except ImageError as e:
        raise UsageError(f"{'-img_out' if single else '-ext'} {e}") from None
    if single:
        jobs = [(items[0][0], out)]
    else:
        if out.exists() and not out.is_dir():
            raise UsageError(f"-img_out {out}: exists and is not a folder (several inputs need a folder)")
        jobs = [(src, output_path(rel, out, ext)) for src, rel in items]
    if not jobs:
        raise UsageError(f"no input images found in {', '.join(args.img_in + args.list)}")
    if not args.caffemodel:
        raise UsageError(WEIGHTS_HELP)
    for flag, path in (("-prototxt", args.prototxt), *(("-caffemodel", w) for w in args.caffemodel.split(","))):
        if not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")

    failures: List[Tuple[Path, str]] = []
    seen = {}
    todo = []
    for src, dst in jobs:
        key = os.path.normcase(os.path.abspath(dst))
        if key in seen:
            failures.append((src, f"its output {dst} is also the output of {seen[key]} (use -ext or rename)"))
        elif dst.exists() and src.exists() and os.path.samefile(src, dst):
            failures.append((src, f"its output {dst} would overwrite it (choose another -img_out)"))
        elif args.skip_existing and dst.exists():
            seen[key] = src
        else:
            seen[key] = src
            todo.append((src, dst))
    skipped = len(jobs) - len(todo) - len(failures)

    import torchcaffe as caffe

    from .colorizer import Colorizer, compose, torch_device

    try:
        device = torch_device(args.gpu)
    except ValueError as e:
        raise UsageError(str(e)) from None

    caffe.init_log(1)  # warnings and errors only
    try:
        model = Colorizer(args.prototxt, args.caffemodel, device=device, fast=not args.exact)
    except (ValueError, OSError, RuntimeError) as e:  # the runtime's errors name the file, layer or field
        raise UsageError(str(e)) from None
    if model.filled:
        print(f"filled in fixed layers the weights lack: {', '.join(model.filled)}", file=sys.stderr)

    done = 0
    batch: list = []
    bar = tqdm(total=len(todo), unit="img", disable=args.quiet or single, file=sys.stderr)

    def flush():
        """One forward pass for the batch; then each photo is composed, written and let go before the next
        (so a large photo's input and output are not held beside the next one's)."""
        nonlocal done
        if not batch:
            return
        jobs_now = [(src, dst) for src, dst, _ in batch]
        photos = [p for _, _, p in batch]
        batch.clear()
        try:
            ab = model.predict_ab_batch(np.stack([model.net_lightness(p) for p in photos]))
        except (RuntimeError, ValueError, MemoryError) as e:
            failures.extend((src, f"colorizing failed: {e}") for src, _ in jobs_now)
            bar.update(len(jobs_now))
            return
        for i, (src, dst) in enumerate(jobs_now):
            photo, photos[i] = photos[i], None
            try:
                rgb, alpha = compose(photo, ab[i], clip=args.clip, side_by_side=args.side_by_side)
                del photo
                write_photo(dst, rgb, alpha)
                done += 1
            except (ImageError, OSError, RuntimeError, ValueError, MemoryError) as e:
                failures.append((src, str(e)))
            bar.update(1)

    budget = 64 << 20  # pixels held at once by one batch (a large photo forms a batch of its own)
    for src, dst in todo:
        try:
            photo = read_photo(src)
        except (ImageError, OSError, MemoryError) as e:
            failures.append((src, str(e) if str(src) in str(e) else f"{src}: {e}"))
            bar.update(1)
            continue
        pixels = photo.shape[0] * photo.shape[1]
        if batch and sum(p.shape[0] * p.shape[1] for _, _, p in batch) + pixels > budget:
            flush()
        batch.append((src, dst, photo))
        if len(batch) >= args.batch:
            flush()
    flush()
    bar.close()

    if single and done:
        print(f"{jobs[0][0]} -> {jobs[0][1]}")
    elif done or skipped:
        print(f"colorized {done} of {len(jobs)} images into {out}" + (f" ({skipped} existed already)" if skipped else ""))
    if failures and single:
        print(f"colorize_image: {failures[0][1]}", file=sys.stderr)
    elif failures:
        print(f"colorize_image: {len(failures)} of {len(jobs)} images failed:", file=sys.stderr)
        for src, reason in failures:
            reason = reason if reason.startswith(str(src)) else f"{src}: {reason}"
            print(f"  {reason}", file=sys.stderr)
    if done == 0 and skipped == 0:
        if not failures:
            print("colorize_image: nothing to do", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
