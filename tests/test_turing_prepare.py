"""turing_test.py prepare: the study folder (256 x 256 ground truth, recolorizations, manifest) from a photo
folder or an LMDB, with a model, the gray baseline and the ground-truth control."""
import json

import cv2
import numpy as np
from skimage.color import rgb2lab

from conftest import REPO
from data_helpers import write_lmdb

from colorization.colorizer import Colorizer, read_image
from colorization.turing import main
from colorization.turing.prepare import square_256

DEMO = REPO / "prototxt" / "demo" / "colorization_deploy.prototxt"


def photo(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    c = rng.integers(0, 256, 3)
    return np.stack([(x * c[0] / w), (y * c[1] / h), np.full((h, w), c[2])], -1).astype(np.uint8)


def test_centre_crop_and_resize():
    img = np.zeros((300, 500, 3), np.uint8)
    img[:, 100:400] = 200  # the centre square (columns 100..399) is uniform; the sides are black
    out = square_256(img)
    assert out.shape == (256, 256, 3) and (out == 200).all()
    small = photo(100, 80, 0)  # enlarged: 80 x 80 centre crop (rows 10..89), bicubic
    ref = cv2.resize(np.ascontiguousarray(small[10:90]), (256, 256), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(square_256(small), ref)
    exact = photo(256, 256, 1)
    np.testing.assert_array_equal(square_256(exact), exact)


def test_prepare_from_a_folder_with_a_model_gray_and_control(tmp_path, capsys):
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(src / ("sub" if i else ".") / f"p{i}.png"), photo(120 + 10 * i, 200, i)[..., ::-1])
    cv2.imwrite(str(src / "gray.png"), np.full((64, 64, 3), 90, np.uint8))  # a gray photo: skipped
    (src / "broken.jpg").write_bytes(b"not a jpeg")                           # unreadable: skipped
    study = tmp_path / "study"
    assert main(["prepare", str(study), "--images", str(src), "--prototxt", str(DEMO), "--name", "demo",
                 "--gray", "--ground-truth"]) == 0
    err = capsys.readouterr().err
    assert "3 photos from" in err and "1 gray skipped, 1 unreadable skipped" in err
    m = json.loads((study / "study.json").read_text())
    assert m["images"] == ["00000", "00001", "00002"] and m["size"] == 256
    assert sorted(m["sources"].values()) == ["p0.png", "sub/p1.png", "sub/p2.png"]
    assert [(a["name"], a["kind"]) for a in m["algorithms"]] == [("demo", "model"), ("gray", "gray"),
                                                                 ("ground_truth", "ground_truth")]
    assert m["algorithms"][0]["prototxt"] == str(DEMO) and m["algorithms"][0]["caffemodel"] is None
    colorizer = Colorizer(DEMO)
    for ident, name in m["sources"].items():
        real = read_image(study / "real" / f"{ident}.png")
        np.testing.assert_array_equal(real, square_256(read_image(src / name)))
        # the model's recolorization is the colorizer's output on the 256 x 256 ground truth
        np.testing.assert_array_equal(read_image(study / "fake" / "demo" / f"{ident}.png"), colorizer.colorize(real))
        # gray: the photo's lightness (scikit-image's Lab), no colour
        gray = read_image(study / "fake" / "gray" / f"{ident}.png")
        assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
        assert np.abs(rgb2lab(gray)[..., 0] - rgb2lab(real)[..., 0]).max() < 0.6
        np.testing.assert_array_equal(read_image(study / "fake" / "ground_truth" / f"{ident}.png"), real)


def test_prepare_from_an_lmdb_and_limit(tmp_path):
    imgs = [photo(64 + 8 * i, 96, i)[..., ::-1] for i in range(6)]  # BGR, as build_lmdb stores them
    write_lmdb(tmp_path / "raw", [im.transpose(2, 0, 1) for im in imgs])
    write_lmdb(tmp_path / "enc", imgs, encoded=True)
    for kind in ("raw", "enc"):
        study = tmp_path / f"s_{kind}"
        assert main(["prepare", str(study), "--lmdb", str(tmp_path / kind), "--gray", "--quiet"]) == 0
        m = json.loads((study / "study.json").read_text())
        assert len(m["images"]) == 6
        for ident, key in m["sources"].items():
            expect = square_256(np.ascontiguousarray(imgs[int(key)][..., ::-1]))
            np.testing.assert_array_equal(read_image(study / "real" / f"{ident}.png"), expect)
    study = tmp_path / "s_limit"
    assert main(["prepare", str(study), "--lmdb", str(tmp_path / "raw"), "--limit", "4", "--seed", "3",
                 "--quiet"]) == 0
    m = json.loads((study / "study.json").read_text())
    assert len(m["images"]) == 4 and len(set(m["sources"].values())) == 4 and m["algorithms"] == []
    # later calls add algorithms to the same photos
    assert main(["prepare", str(study), "--ground-truth", "--quiet"]) == 0
    assert [a["name"] for a in json.loads((study / "study.json").read_text())["algorithms"]] == ["ground_truth"]


def test_prepare_errors_are_one_line(tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), photo(50, 50, 0))
    study = str(tmp_path / "study")

    def fails(args, text):
        assert main(["prepare"] + args) == 1
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1 and "Traceback" not in err, err

    fails([study, "--gray"], "a new study needs its photos: --images DIR or --lmdb DIR")
    fails([study, "--images", str(tmp_path / "none"), "--gray"], "none: no such folder")
    fails([study, "--lmdb", str(src), "--gray"], "not an LMDB folder (no data.mdb)")
    fails([study, "--images", str(src), "--lmdb", str(src)], "give --images or --lmdb, not both")
    empty = tmp_path / "empty"
    empty.mkdir()
    fails([str(tmp_path / "s2"), "--images", str(empty), "--gray"], "no usable colour photo")
    assert main(["prepare", study, "--images", str(src), "--gray", "--quiet"]) == 0
    capsys.readouterr()
    fails([study, "--images", str(src)], "the study already has its 1 photos; omit --images/--lmdb")
    fails([study, "--gray"], "algorithm 'gray' is already prepared")
    fails([study, "--gray", "--gray-name", "real"], "'real' names the ground-truth side")
    fails([study, "--gray", "--gray-name", "a/b"], "--gray-name 'a/b': use 1-64 letters")
    fails([study, "--prototxt", str(tmp_path / "missing.prototxt")], "missing.prototxt")
    m = json.loads((tmp_path / "study" / "study.json").read_text())
    assert [a["name"] for a in m["algorithms"]] == ["gray"]  # a failed prepare leaves the manifest alone


def test_prepare_with_the_released_deploy_file(tmp_path):
    """The released ``colorization_deploy_v2`` (224 x 224 input, output blob ``class8_ab``, final Silence)
    through the same Colorizer, with seeded random weights for every layer (the colorizer refuses weights that
    leave layers unset)."""
    import torchcaffe as caffe
    from colorization.colorizer import random_colorization_weights

    deploy = REPO / "prototxt" / "release_v2" / "colorization_deploy_v2.prototxt"
    net = caffe.Net(str(deploy), caffe.TEST)
    random_colorization_weights(net, seed=3)
    net.save(str(tmp_path / "random.caffemodel"))
    src = tmp_path / "photos"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), photo(300, 240, 5))
    study = tmp_path / "study"
    args = ["--prototxt", str(deploy), "--caffemodel", str(tmp_path / "random.caffemodel")]
    assert main(["prepare", str(study), "--images", str(src), "--name", "release_v2", "--quiet"] + args) == 0
    real = read_image(study / "real" / "00000.png")
    expect = Colorizer(args[1], args[3]).colorize(real)
    np.testing.assert_array_equal(read_image(study / "fake" / "release_v2" / "00000.png"), expect)
