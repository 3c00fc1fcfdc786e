"""tools/colorize_image.py (colorization.colorize) on real photo collections: scikit-image's photos in every odd
format a user has, broken files, folders and lists, the output's size and L checked against the input's
(decoded independently: Pillow, tifffile, OpenCV), the weights check, and bounded memory on a large photo."""
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import skimage.data as sd
import tifffile
import torch
from PIL import Image, ImageOps
from skimage.color import rgb2lab

import cic
import torchcaffe as caffe
from colorization import colorize
from colorization.colorizer import Colorizer, _RowUpsampler, compose, random_colorization_weights
from colorization.images import Photo
from conftest import REPO

DEPLOY = REPO / "prototxt" / "demo" / "colorization_deploy.prototxt"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    net = caffe.Net(str(DEPLOY), caffe.TEST)
    random_colorization_weights(net, seed=3)
    path = tmp_path_factory.mktemp("w") / "demo.caffemodel"
    net.save(str(path))
    return path


@pytest.fixture(autouse=True)
def keep_log_state():
    """The command run in-process sets the runtime's log level: restore it for the tests that follow."""
    from torchcaffe import glog

    saved = dict(glog._state)
    yield
    glog._state.clear()
    glog._state.update(saved)


def run(args, capsys):
    rc = colorize.main([str(a) for a in args] + ["-q"])
    out, err = capsys.readouterr()
    return rc, out, err


def _pil(path, mode=None):
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert(mode) if mode else im)


def make_collection(root):
    """Every odd kind of image, with the reference RGB (floats in [0, 1], decoded independently) and alpha."""
    c = sd.chelsea()                                    # 300 x 451 RGB
    cam = sd.camera()[::2, ::2]                         # 256 x 256 gray
    alpha = np.tile(np.linspace(0, 255, c.shape[1]).astype(np.uint8), (c.shape[0], 1))
    (root / "sub" / "deeper").mkdir(parents=True)
    ref = {}
    Image.fromarray(c).save(root / "rgb.jpg", quality=95)
    ref["rgb"] = (_pil(root / "rgb.jpg") / 255.0, None)
    Image.fromarray(cam).save(root / "gray.png")
    ref["gray"] = (np.repeat(cam[..., None] / 255.0, 3, 2), None)
    g16 = (cam.astype(np.uint16) * 257 + 100)
    Image.fromarray(g16).save(root / "gray16.png")
    ref["gray16"] = (np.repeat(g16[..., None] / 65535.0, 3, 2), None)
    Image.fromarray(np.dstack([c, alpha])).save(root / "rgba.png")
    ref["rgba"] = (c / 255.0, alpha)
    Image.fromarray(np.dstack([cam, cam[::-1]])).convert("LA").save(root / "sub" / "la.png")
    ref["sub/la"] = (np.repeat(cam[..., None] / 255.0, 3, 2), cam[::-1])
    Image.fromarray(c).convert("CMYK").save(root / "sub" / "cmyk.jpg", quality=95)
    ref["sub/cmyk"] = (_pil(root / "sub" / "cmyk.jpg", "RGB") / 255.0, None)
    Image.fromarray(c).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "sub" / "palette.png")
    ref["sub/palette"] = (_pil(root / "sub" / "palette.png", "RGB") / 255.0, None)
    pt = Image.fromarray(c[:64, :80]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pt.info["transparency"] = 0
    pt.save(root / "sub" / "palette_transparent.png", transparency=0)
    rgba_t = _pil(root / "sub" / "palette_transparent.png", "RGBA")
    ref["sub/palette_transparent"] = (rgba_t[..., :3] / 255.0, rgba_t[..., 3])
    c16 = c.astype(np.uint16) * 257 + np.arange(3, dtype=np.uint16)[None, None]
    cv2.imwrite(str(root / "sub" / "deeper" / "rgb16.png"), c16[..., ::-1])
    ref["sub/deeper/rgb16"] = (c16 / 65535.0, None)
    tifffile.imwrite(root / "sub" / "deeper" / "rgb16_tiff.tif", c16[:100, :120])
    ref["sub/deeper/rgb16_tiff"] = (c16[:100, :120] / 65535.0, None)
    im = Image.fromarray(c)
    exif = im.getexif()
    exif[0x0112] = 6                                   # "rotate 90 clockwise to display"
    im.save(root / "exif_rotated.jpg", quality=95, exif=exif)
    upright = _pil(root / "exif_rotated.jpg")
    assert upright.shape[:2] == (451, 300)
    ref["exif_rotated"] = (upright / 255.0, None)
    Image.fromarray(c[:1, :1]).save(root / "tiny_1x1.png")
    ref["tiny_1x1"] = (c[:1, :1] / 255.0, None)
    Image.fromarray(c[100:102, 200:203]).save(root / "tiny_2x3.png")
    ref["tiny_2x3"] = (c[100:102, 200:203] / 255.0, None)
    # broken files: empty, truncated, not an image at all
    (root / "empty.jpg").write_bytes(b"")
    (root / "sub" / "truncated.png").write_bytes((root / "gray.png").read_bytes()[:400])
    (root / "sub" / "not_an_image.jpg").write_text("hello")
    (root / "notes.txt").write_text("not an image extension: not an input")
    broken = {"empty.jpg": "empty file", "sub/truncated.png": "truncated", "sub/not_an_image.jpg": "identify"}
    return ref, broken


@pytest.fixture(scope="module")
def collection(tmp_path_factory, weights):
    root = tmp_path_factory.mktemp("photos")
    ref, broken = make_collection(root / "in")
    out = root / "out"
    cmd = ["-img_in", root / "in", "-img_out", out, "-ext", "png", "-prototxt", DEPLOY, "-caffemodel", weights,
           "-batch", "4", "-q"]
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "colorize_image.py"), *map(str, cmd)],
                          capture_output=True, text=True, timeout=600)
    return root, ref, broken, proc


def _read_out(path):
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr is not None, path
    if arr.ndim == 3:
        arr = np.concatenate([arr[..., 2::-1], arr[..., 3:]], axis=2)
    return arr


def test_every_kind_of_photo_keeps_size_lightness_and_alpha(collection):
    root, ref, broken, proc = collection
    assert proc.returncode == 0, proc.stderr
    for rel, (rgb, alpha) in ref.items():
        out = _read_out(root / "out" / f"{rel}.png")
        assert out.shape[:2] == rgb.shape[:2], rel
        deep = "16" in rel
        assert out.dtype == (np.uint16 if deep else np.uint8), rel
        assert out.shape[2] == (3 if alpha is None else 4), rel
        col = out[..., :3] / (65535.0 if deep else 255.0)
        dl = np.abs(rgb2lab(col)[..., 0] - rgb2lab(rgb)[..., 0])
        assert dl.max() < (0.1 if deep else 1.0), (rel, dl.max())
        if alpha is not None:
            np.testing.assert_array_equal(out[..., 3], alpha, err_msg=rel)
        if rgb.shape[0] > 8:  # colour was added (the random net predicts some chroma)
            assert np.hypot(*rgb2lab(col)[..., 1:].transpose(2, 0, 1)).mean() > 1, rel


def test_broken_files_are_reported_and_the_rest_is_done(collection):
    root, ref, broken, proc = collection
    assert f"{len(broken)} of {len(ref) + len(broken)} images failed" in proc.stderr
    for rel, reason in broken.items():
        line = [l for l in proc.stderr.splitlines() if rel in l]
        assert len(line) == 1 and reason in line[0], (rel, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not list((root / "out").rglob("*.tmp*")) and not (root / "out" / "notes.png").exists()
    assert len(list((root / "out").rglob("*.png"))) == len(ref)


def test_list_file_default_extension_side_by_side_and_skip_existing(tmp_path, weights, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(sd.coffee()[::2, ::2]).save(src / "coffee.png")
    Image.fromarray(sd.astronaut()[::4, ::4]).save(src / "astronaut.jpg")
    (tmp_path / "list.txt").write_text("coffee.png 3\n# a comment\n\nastronaut.jpg 7\nmissing.png 1\n")
    out = tmp_path / "out"
    rc, so, se = run(["-list", tmp_path / "list.txt", "-root", src, "-img_out", out, "-prototxt", DEPLOY,
                      "-caffemodel", weights, "--side-by-side"], capsys)
    assert rc == 0 and "colorized 2 of 3" in so and "missing.png: no such file" in se
    coffee = np.asarray(Image.open(out / "coffee.png"))
    assert coffee.shape == (200, 600, 3)
    np.testing.assert_array_equal(coffee[:, :300], sd.coffee()[::2, ::2])  # the input, left
    assert (out / "astronaut.jpg").exists()  # the input's own format by default
    rc, so, se = run(["-list", tmp_path / "list.txt", "-root", src, "-img_out", out, "-prototxt", DEPLOY,
                      "-caffemodel", weights, "--skip-existing"], capsys)
    assert rc == 0 and "(2 existed already)" in so


def test_one_file_into_an_existing_folder_and_into_a_file(tmp_path, weights, capsys):
    Image.fromarray(sd.chelsea()).save(tmp_path / "cat.png")
    folder = tmp_path / "adir"
    folder.mkdir()
    rc, so, se = run(["-img_in", tmp_path / "cat.png", "-img_out", folder, "-prototxt", DEPLOY,
                      "-caffemodel", weights], capsys)
    assert rc == 0, se
    assert (folder / "cat.png").exists()
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.rglob(".*"))
    rc, so, se = run(["-img_in", tmp_path / "cat.png", "-img_out", tmp_path / "cat_color.jpg", "-prototxt", DEPLOY,
                      "-caffemodel", weights], capsys)
    assert rc == 0 and np.asarray(Image.open(tmp_path / "cat_color.jpg")).shape == (300, 451, 3)


def _one_error_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_command_line_errors_are_one_line(tmp_path, weights, capsys):
    Image.fromarray(sd.chelsea()).save(tmp_path / "cat.png")
    base = ["-prototxt", DEPLOY, "-caffemodel", weights]
    rc, so, se = run(["-img_in", tmp_path / "cat.png", "-img_out", tmp_path / "o.png", "-prototxt", DEPLOY], capsys)
    assert rc == 1 and "-caffemodel is required" in se and "colorization_release_v2.caffemodel" in se
    assert not (tmp_path / "o.png").exists()
    rc, so, se = run(["-img_in", tmp_path / "cat.png", "-img_out", tmp_path / "o.xyz", *base], capsys)
    assert rc == 1 and "o.xyz" in _one_error_line(se) and "unknown output image format '.xyz'" in se
    (tmp_path / "empty.jpg").write_bytes(b"")
    rc, so, se = run(["-img_in", tmp_path / "empty.jpg", "-img_out", tmp_path / "o.png", *base], capsys)
    assert rc == 1 and "empty.jpg: empty file" in _one_error_line(se)
    rc, so, se = run(["-img_in", tmp_path / "missing.jpg", "-img_out", tmp_path / "o.png", *base], capsys)
    assert rc == 1 and "missing.jpg: no such file" in _one_error_line(se)
    rc, so, se = run(["-img_in", tmp_path / "cat.png", "-img_out", tmp_path / "o.png", "-prototxt", DEPLOY,
                      "-caffemodel", tmp_path / "nope.caffemodel"], capsys)
    assert rc == 1 and "-caffemodel" in _one_error_line(se) and "nope.caffemodel: no such file" in se
    # every input broken: nothing done, a non-zero exit
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(b"\x89PNG")
    rc, so, se = run(["-img_in", tmp_path / "b", "-img_out", tmp_path / "ob", *base], capsys)
    assert rc == 1 and "x.png" in se
    # two inputs, one output name
    (tmp_path / "c").mkdir()
    Image.fromarray(sd.chelsea()).save(tmp_path / "c" / "cat.png")
    Image.fromarray(sd.chelsea()).save(tmp_path / "c" / "cat.jpg")
    rc, so, se = run(["-img_in", tmp_path / "c", "-img_out", tmp_path / "oc", "-ext", "png", *base], capsys)
    assert rc == 0 and "is also the output of" in se and len(list((tmp_path / "oc").iterdir())) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_without_cuda_is_one_line(tmp_path, weights, capsys):
    Image.fromarray(sd.chelsea()).save(tmp_path / "cat.png")
    rc, so, se = run(["-img_in", tmp_path / "cat.png", "-img_out", tmp_path / "o.png", "-prototxt", DEPLOY,
                      "-caffemodel", weights, "-gpu", "0"], capsys)
    assert rc == 1 and _one_error_line(se).startswith("colorize_image: -gpu 0:")


def test_weights_that_do_not_cover_the_net_name_the_missing_layers(tmp_path, weights, capsys):
    from torchcaffe.protoio import read_net_weights, write_binaryproto

    w = read_net_weights(str(weights))
    keep = [layer for layer in w.layer if layer.name not in ("conv8_313", "conv2_1")]
    del w.layer[:]
    w.layer.extend(keep)
    partial = tmp_path / "partial.caffemodel"
    write_binaryproto(w, str(partial))
    Image.fromarray(sd.chelsea()).save(tmp_path / "cat.png")
    rc, so, se = run(["-img_in", tmp_path / "cat.png", "-img_out", tmp_path / "o.png", "-prototxt", DEPLOY,
                      "-caffemodel", partial], capsys)
    line = _one_error_line(se)
    assert rc == 1 and "partial.caffemodel: leaves unset" in line and "conv2_1, conv8_313" in line
    other = caffe.NetSpec()
    other.data = caffe.layers.Input(input_param=dict(shape=dict(dim=[1, 1, 8, 8])))
    other.unrelated = caffe.layers.Convolution(other.data, num_output=2, kernel_size=1)
    net = caffe.Net(other.to_proto(), caffe.TEST)
    net.save(str(tmp_path / "other.caffemodel"))
    rc, so, se = run(["-img_in", tmp_path / "cat.png", "-img_out", tmp_path / "o.png", "-prototxt", DEPLOY,
                      "-caffemodel", tmp_path / "other.caffemodel"], capsys)
    assert rc == 1 and "other.caffemodel: sets none of the weights" in _one_error_line(se)


# --- the composition: tiles equal the whole, L kept unless --clip ---------------------------------------

def test_row_strips_equal_one_bilinear_upsampling():
    ab = torch.randn(2, 7, 9, generator=torch.Generator().manual_seed(0)) * 40
    full = cic.upsample_bilinear(ab[None], (53, 71))[0]
    up = _RowUpsampler(ab, (53, 71))
    strips = torch.cat([up.rows(r, min(53, r + 10)) for r in range(0, 53, 10)], dim=1)
    torch.testing.assert_close(strips, full, rtol=0, atol=1e-4)
    photo = Photo(sd.chelsea()[:53, :71])
    a, _ = compose(photo, ab, strip_pixels=71 * 3)
    b, _ = compose(photo, ab, strip_pixels=1 << 30)
    np.testing.assert_array_equal(a, b)


def test_chroma_reduction_keeps_lightness_where_clipping_does_not():
    gray = np.tile(np.linspace(0, 255, 200).astype(np.uint8), (40, 1))
    ab = torch.tensor([70.0, -90.0]).reshape(2, 1, 1).expand(2, 5, 5).clone()  # far outside the gamut
    kept, _ = compose(Photo(gray), ab)
    clipped, _ = compose(Photo(gray), ab, clip=True)
    L_in = rgb2lab(np.repeat(gray[..., None], 3, 2) / 255.0)[..., 0]
    assert np.abs(rgb2lab(kept / 255.0)[..., 0] - L_in).max() < 1.0
    assert np.median(np.abs(rgb2lab(clipped / 255.0)[..., 0] - L_in)) > 2.0
    # the hue is the predicted one wherever chroma is left
    lab = rgb2lab(kept / 255.0)
    c = np.hypot(lab[..., 1], lab[..., 2]) > 15
    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1]))[c]
    assert c.mean() > 0.5 and np.abs(hue - np.degrees(np.arctan2(-90, 70))).max() < 3


def test_array_api_keeps_depth(weights):
    colorizer = Colorizer(DEPLOY, weights)
    rgb16 = sd.coffee()[:40, :50].astype(np.uint16) * 257
    out = colorizer.colorize(rgb16)
    assert out.dtype == np.uint16 and out.shape == rgb16.shape
    assert np.abs(rgb2lab(out / 65535.0)[..., 0] - rgb2lab(rgb16 / 65535.0)[..., 0]).max() < 0.1


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    import torchcaffe as caffe
    from colorization.colorizer import Colorizer
    from colorization.images import Photo
    caffe.init_log(2)
    h, w = 1000, 1500
    model = Colorizer(sys.argv[1], sys.argv[2])
    photo = Photo(np.tile(np.arange(250, dtype=np.uint8)[None, :, None], (h, w // 250, 3)))
    list(model.colorize_photos([Photo(photo.pixels[:600, :600])]))  # warm up: a whole strip's allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    (out, _), = model.colorize_photos([photo])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert out.shape == (h, w, 3)
    print((after - before) / (h * w))
""")


def test_a_large_photo_is_composed_in_bounded_memory(weights):
    """Peak RSS growth per pixel while colorizing a 1.5-megapixel photo: the output (3 B/px) and a few strips
    (STRIP_PIXELS, independent of the photo's size); the whole photo in float32 Lab/RGB would be ~100 B/px.
    (A 20000 x 20000 photo is the same code; see docs/ARCHITECTURE.md for that run.)"""
    r = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(DEPLOY), str(weights)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    per_pixel = float(r.stdout.split()[-1])
    assert per_pixel < 3 + 45e6 / 1.5e6, per_pixel  # the output and at most 45 MB of strips


def test_outputs_never_overwrite_inputs_or_leave_the_output_folder(tmp_path, weights, capsys):
    (tmp_path / "photos").mkdir()
    Image.fromarray(sd.chelsea()).save(tmp_path / "photos" / "cat.png")
    Image.fromarray(sd.coffee()).save(tmp_path / "coffee.png")
    before = (tmp_path / "photos" / "cat.png").read_bytes()
    base = ["-prototxt", DEPLOY, "-caffemodel", weights]
    rc, so, se = run(["-img_in", tmp_path / "photos", "-img_out", tmp_path / "photos", *base], capsys)
    assert rc == 1 and "would overwrite it" in se
    assert (tmp_path / "photos" / "cat.png").read_bytes() == before
    (tmp_path / "photos" / "list.txt").write_text("../coffee.png\n")
    rc, so, se = run(["-list", tmp_path / "photos" / "list.txt", "-img_out", tmp_path / "out", *base], capsys)
    assert rc == 0 and (tmp_path / "out" / "coffee.png").exists()
