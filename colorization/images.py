"""Reading and writing the images a user has, for the colorizer.

``read_photo`` decodes any image file that Pillow reads -- RGB, grayscale, RGBA / LA (the alpha is kept
apart), palette (with or without transparency), CMYK, 16-bit grayscale -- plus 16-bit colour PNG and TIFF
(which Pillow reduces to 8 bits; OpenCV decodes them at full depth), turned upright by its EXIF orientation.
A ``Photo`` keeps the pixels at their own depth (uint8 or uint16) and shape (H x W gray or H x W x 3 RGB), so
a very large photo costs its own size and no more: the colorizer reads it in strips of rows
(``Photo.rows``) and the net sees a small resized copy (``Photo.resized``).

``write_photo`` writes atomically (a hidden temporary file in the target folder, then a rename) in the format
of the file's extension; 16-bit output goes through OpenCV (PNG, TIFF), 8-bit through Pillow.

Every error names the file: ``ImageError`` (a ``ValueError``) for files that are not readable images or
formats that cannot be written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

#: Pillow's refusal of very large images (decompression-bomb protection) is lifted up to this many pixels:
#: a 20000 x 20000 photo (4e8) is a real use case; beyond 1e9 pixels the file is most likely hostile.
MAX_PIXELS = 1_000_000_000


class ImageError(ValueError):
    """A file that cannot be read or written as an image (the message names it)."""


@dataclass
class Photo:
    """Decoded pixels: ``pixels`` (H x W, or H x W x 3 RGB; uint8 or uint16), ``alpha`` (H x W or None)."""

    pixels: np.ndarray
    alpha: Optional[np.ndarray] = None
    path: str = ""

    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(self.pixels.shape[:2])

    @property
    def maxval(self) -> int:
        return 65535 if self.pixels.dtype == np.uint16 else 255

    @property
    def is_gray(self) -> bool:
        return self.pixels.ndim == 2

    def rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` as float32 RGB in [0, 1] (h x W x 3; gray repeated)."""
        x = self.pixels[r0:r1].astype(np.float32) / self.maxval
        return np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x

    def resized(self, hw: Tuple[int, int]) -> np.ndarray:
        """The photo resized to ``hw`` = (height, width) as float32 RGB in [0, 1]: area averaging where it
        shrinks (no aliasing however large the photo), bilinear where it grows (a tiny photo)."""
        import cv2

        h, w = hw
        shrink = h * w < self.shape[0] * self.shape[1]
        small = cv2.resize(self.pixels, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        small = small.astype(np.float32) / self.maxval
        return np.repeat(small[..., None], 3, axis=2) if small.ndim == 2 else small


def _orientation_ops(orientation: int):
    """numpy equivalents of Pillow's EXIF transposes (ImageOps.exif_transpose), for arrays decoded by OpenCV."""
    return {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
            5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
            8: lambda a: np.rot90(a, 1)}.get(orientation, lambda a: a)


def _sixteen_bit_colour(im, path) -> bool:
    """Whether Pillow reduced a 16-bit-per-channel colour PNG or TIFF to 8 bits."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    if im.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(25)
        return len(head) == 25 and head[12:16] == b"IHDR" and head[24] == 16
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16
    return False


def _read_16bit_colour(path, orientation: int) -> Photo:
    import cv2

    arr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"{path}: a 16-bit colour image that OpenCV cannot decode")
    arr = _orientation_ops(orientation)(arr)
    alpha = np.ascontiguousarray(arr[..., 3]) if arr.shape[2] == 4 else None
    return Photo(np.ascontiguousarray(arr[..., 2::-1]), alpha, str(path))


def read_photo(path) -> Photo:
    """Decode an image file (see the module's docstring); ``ImageError`` naming the file when it cannot."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            if _sixteen_bit_colour(im, path):
                return _read_16bit_colour(path, orientation)
            if orientation in range(2, 9):  # (exif_transpose copies the image even when upright)
                im = ImageOps.exif_transpose(im)
            return _photo_from_pil(im, path)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file that Pillow can identify") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{path}: cannot decode: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _photo_from_pil(im, path) -> Photo:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("1", "L"):
        return Photo(np.asarray(im.convert("L")), None, str(path))
    elif mode in ("LA", "La"):
        a = np.asarray(im.convert("LA"))
        return Photo(np.ascontiguousarray(a[..., 0]), np.ascontiguousarray(a[..., 1]), str(path))
    elif mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        return Photo(np.clip(arr, 0, 65535).astype(np.uint16), None, str(path))
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        return Photo((np.clip(arr, 0, 1) * 65535 + 0.5).astype(np.uint16), None, str(path))
    elif mode in ("RGBa",):
        im = im.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.shape[2] == 4:
        return Photo(np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3]), str(path))
    return Photo(arr, None, str(path))


def writable_format(path) -> str:
    """Pillow's format name for the extension of ``path``; ``ImageError`` when it writes no such format."""
    from PIL import Image

    Image.init()
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if not ext or fmt is None or fmt not in Image.SAVE:
        known = sorted(e for e, f in Image.registered_extensions().items() if f in Image.SAVE)
        raise ImageError(f"{path}: unknown output image format '{ext or '(no extension)'}' "
                         f"(use one of {', '.join(e for e in known if e in _COMMON) or ', '.join(known)})")
    return fmt


_COMMON = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_ALPHA = ("PNG", "TIFF", "WEBP")


def write_photo(path, rgb: np.ndarray, alpha: Optional[np.ndarray] = None) -> None:
    """Write ``rgb`` (H x W x 3 uint8 or uint16) with an optional ``alpha`` atomically to ``path``.

    16-bit data is written at 16 bits to PNG and TIFF (through OpenCV) and reduced to 8 bits for other formats;
    the alpha is dropped by formats without one (JPEG, BMP).  The folder is created when missing.
    """
    path = Path(path)
    fmt = writable_format(path)
    if alpha is not None and fmt not in _ALPHA:
        alpha = None
    if rgb.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        rgb = ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        alpha = None if alpha is None else ((alpha.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if alpha is not None and alpha.dtype != rgb.dtype:
        alpha = (alpha.astype(np.uint32) * 257).astype(np.uint16) if rgb.dtype == np.uint16 else \
            ((alpha.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        if rgb.dtype == np.uint16:
            import cv2

            bgr = rgb[..., ::-1] if alpha is None else np.dstack([rgb[..., ::-1], alpha])
            ok, buf = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(bgr))
            if not ok:
                raise ImageError(f"{path}: OpenCV cannot write 16-bit {fmt}")
            tmp.write_bytes(buf.tobytes())
        else:
            from PIL import Image

            img = Image.fromarray(np.ascontiguousarray(rgb if alpha is None else np.dstack([rgb, alpha])))
            img.save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
        os.replace(tmp, path)
    except OSError as e:
        raise ImageError(f"{path}: cannot write: {e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
