"""``turing_test.py prepare``: write a study folder (ground truth + recolorizations + manifest).

Photos come from a folder (``--images``, searched recursively; anything OpenCV cannot decode is skipped and
counted) or an LMDB of Datums (``--lmdb``, as ``build_lmdb.py`` writes them: BGR, raw or encoded).  Each is
centre-cropped to a square (the shorter side) and resized to 256 x 256 (OpenCV's area filter when shrinking,
bicubic when enlarging), the paper's display size; this is the ground truth.  Gray photos (no |a| or |b| above
5, the supplementary material's test) are skipped: a pair of two gray photos tests nothing.

Each algorithm recolorizes the 256 x 256 ground truth, so both images of a pair have the same size, crop and
lightness:

* a model (``--prototxt`` + ``--caffemodel``, any colorization deploy net the toolkit runs, the released
  ``colorization_deploy_v2`` included): :class:`colorization.colorizer.Colorizer`, i.e. the photo's own L with
  the net's ab, upsampled bilinearly to 256 x 256;
* ``--gray``: the gray baseline, L only (a = b = 0);
* ``--ground-truth``: the photo itself, a control that should score 50 %.

The first ``prepare`` of a study chooses its photos; later calls add algorithms to the same photos (omit
``--images`` / ``--lmdb``).  Recolorized images are written atomically and the manifest names an algorithm
only once all its images exist, so an interrupted ``prepare`` is simply run again.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np

from .study import FORMAT, MANIFEST, SIZE, check_name, load_manifest, now_iso, write_manifest

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jpe"}


def square_256(rgb: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Centre crop to a square (the shorter side), then resize to ``size`` x ``size``."""
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(rgb[y:y + s, x:x + s])
    if s == size:
        return crop
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_CUBIC)


def photos_from_folder(folder: Path) -> Iterator[Tuple[str, np.ndarray]]:
    import cv2

    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    for p in files:
        bgr = cv2.imdecode(np.fromfile(str(p), dtype=np.uint8), cv2.IMREAD_COLOR)
        yield str(p.relative_to(folder)), (None if bgr is None else bgr[..., ::-1])


def photos_from_lmdb(path: Path) -> Iterator[Tuple[str, np.ndarray]]:
    import lmdb

    from torchcaffe.data_transformer import TransformError, decode_datum
    from torchcaffe.proto import caffe_pb2

    if not (path / "data.mdb").is_file():
        raise FileNotFoundError(f"{path}: not an LMDB folder (no data.mdb)")
    with lmdb.open(str(path), readonly=True, lock=False) as env, env.begin() as txn:
        for key, value in txn.cursor():
            name = key.decode("utf-8", "replace")
            try:
                d = caffe_pb2.Datum()
                d.ParseFromString(value)
                chw = decode_datum(d, force_color=bool(d.encoded))
            except (TransformError, Exception):  # noqa: BLE001  (a bad record is skipped and counted)
                yield name, None
                continue
            if chw.dtype != np.uint8 or chw.shape[0] not in (1, 3):
                yield name, None
                continue
            hwc = chw.transpose(1, 2, 0)
            yield name, (np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc[..., ::-1])


def gray_version(rgb: np.ndarray) -> np.ndarray:
    """The gray baseline: the photo's L with a = b = 0 (a neutral gray: R = G = B, float32 rounding of the
    three channels averaged away)."""
    import cic

    lab = cic.rgb2lab(rgb.astype(np.float32) / 255.0)
    lab[..., 1:] = 0
    gray = (255 * np.clip(cic.lab2rgb(lab), 0, 1).mean(axis=-1) + 0.5).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def add_photos(study: Path, source_kind: str, source: Path, limit: int, seed: int, log) -> dict:
    import cic
    from colorization.colorizer import write_image

    (study / "real").mkdir(parents=True, exist_ok=True)
    reader = photos_from_folder if source_kind == "images" else photos_from_lmdb
    items = list(reader(source))
    if limit:
        random.Random(seed).shuffle(items)
    images, sources, bad, gray = [], {}, 0, 0
    for name, rgb in items:
        if limit and len(images) >= limit:
            break
        if rgb is None:
            bad += 1
            continue
        sq = square_256(rgb)
        if cic.is_gray_image(sq):
            gray += 1
            continue
        ident = f"{len(images):05d}"
        write_image(study / "real" / f"{ident}.png", sq)
        images.append(ident)
        sources[ident] = name
    if not images:
        raise ValueError(f"{source}: no usable colour photo ({gray} gray, {bad} unreadable)")
    log(f"prepare: {len(images)} photos from {source} ({gray} gray skipped, {bad} unreadable skipped)")
    return {"format": FORMAT, "version": 1, "size": SIZE, "created": now_iso(),
            "source": {source_kind: str(source.resolve())}, "images": images, "sources": sources,
            "algorithms": []}


def add_algorithm(study: Path, manifest: dict, entry: dict, recolor, log) -> None:
    from colorization.colorizer import read_image, write_image

    out = study / "fake" / entry["name"]
    out.mkdir(parents=True, exist_ok=True)
    for k, ident in enumerate(manifest["images"]):
        real = read_image(study / "real" / f"{ident}.png")
        fake = recolor(real)
        if fake.shape != real.shape:
            raise ValueError(f"algorithm {entry['name']}: output shape {fake.shape} != {real.shape}")
        write_image(out / f"{ident}.png", fake)
        if (k + 1) % 50 == 0:
            log(f"prepare: {entry['name']}: {k + 1}/{len(manifest['images'])}")
    manifest["algorithms"].append({**entry, "prepared": now_iso()})
    write_manifest(study, manifest)
    log(f"prepare: algorithm {entry['name']!r} ({entry['kind']}): {len(manifest['images'])} images in {out}")


def run(args) -> int:
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    study = Path(args.study)
    if args.caffemodel and not args.prototxt:
        from colorization.colorizer import DEFAULT_PROTOTXT

        args.prototxt = str(DEFAULT_PROTOTXT)
    wanted = []
    if args.prototxt:
        name = args.name or Path(args.caffemodel or args.prototxt).stem
        wanted.append(("model", check_name("--name", name)))
    if args.gray:
        wanted.append(("gray", check_name("--gray-name", args.gray_name)))
    if args.ground_truth:
        wanted.append(("ground_truth", "ground_truth"))
    if args.name and not args.prototxt:
        raise ValueError("--name names a model: give --prototxt/--caffemodel with it")
    names = [n for _, n in wanted]
    if "real" in names:
        raise ValueError("'real' names the ground-truth side of each pair; choose another algorithm name")
    if len(set(names)) != len(names):
        raise ValueError(f"two algorithms named {names}; choose --name / --gray-name")

    source = [(k, Path(v)) for k, v in (("images", args.images), ("lmdb", args.lmdb)) if v]
    if len(source) > 1:
        raise ValueError("give --images or --lmdb, not both")
    if (study / MANIFEST).exists():
        manifest = load_manifest(study)
        if source:
            raise ValueError(f"{study}: the study already has its {len(manifest['images'])} photos; omit "
                             f"--images/--lmdb to add algorithms to them (or prepare a new study folder)")
    else:
        if not source:
            raise ValueError(f"{study}: a new study needs its photos: --images DIR or --lmdb DIR")
        if study.exists() and not study.is_dir():
            raise ValueError(f"{study}: exists and is not a folder")
        manifest = add_photos(study, *source[0], args.limit, args.seed, log)
        write_manifest(study, manifest)
    have = {a["name"] for a in manifest["algorithms"]}
    for _, name in wanted:
        if name in have:
            raise ValueError(f"{study / MANIFEST}: algorithm {name!r} is already prepared; choose another name")

    for kind, name in wanted:
        if kind == "model":
            import torchcaffe as caffe
            from colorization.colorizer import Colorizer, torch_device

            caffe.init_log(1)  # the runtime's INFO lines (the whole net) are not a progress report
            colorizer = Colorizer(args.prototxt, args.caffemodel, device=torch_device(args.gpu))
            entry = {"name": name, "kind": "model", "prototxt": str(Path(args.prototxt).resolve()),
                     "caffemodel": str(Path(args.caffemodel).resolve()) if args.caffemodel else None}
            add_algorithm(study, manifest, entry, colorizer.colorize, log)
        elif kind == "gray":
            add_algorithm(study, manifest, {"name": name, "kind": "gray"}, gray_version, log)
        else:
            add_algorithm(study, manifest, {"name": name, "kind": "ground_truth"}, lambda x: x, log)
    print(f"{study}: {len(manifest['images'])} photos; algorithms: "
          f"{', '.join(a['name'] for a in manifest['algorithms']) or '(none yet)'}")
    return 0
