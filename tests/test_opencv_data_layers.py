"""ImageData and WindowData against OpenCV: images written here, expected batches computed independently with
cv2 (imread, resize INTER_LINEAR, flip) and, for WindowData's context padding, from hand-worked geometry.

No BVLC run backs these tests: the BVLC build used for the golden data has no OpenCV, so it lacks both layers.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe.protoio import array_to_proto, write_binaryproto


def _net(tmp_path: Path, layer: str, phase=caffe.TEST):
    p = tmp_path / "net.prototxt"
    p.write_text(layer)
    return caffe.Net(str(p), phase)


def _images(tmp_path: Path, sizes, ext=".png", seed=0):
    r = np.random.RandomState(seed)
    paths, imgs = [], []
    for i, (h, w) in enumerate(sizes):
        img = r.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
        name = f"img {i}{ext}" if i == 1 else f"img{i}{ext}"  # one name with a space, as list files allow
        assert cv2.imwrite(str(tmp_path / name), img)
        paths.append(name)
        imgs.append(cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR))
    return paths, imgs


def _list_file(tmp_path, paths, labels):
    f = tmp_path / "list.txt"
    f.write_text("".join(f"{p} {lab}\n" for p, lab in zip(paths, labels)))
    return f


def _image_data(tmp_path, source, params="", transform="", batch=2):
    return _net(tmp_path, f'''
layer {{ name: "img" type: "ImageData" top: "data" top: "label"
        image_data_param {{ source: "{source}" root_folder: "{tmp_path}/" batch_size: {batch} {params} }}
        {transform} }}''')


def test_image_data_resizes_as_opencv(tmp_path):
    paths, imgs = _images(tmp_path, [(9, 11), (5, 6), (12, 7), (8, 8), (10, 13)], ext=".jpg")
    labels = [3, 1, 4, 1, 5]
    src = _list_file(tmp_path, paths, labels)
    net = _image_data(tmp_path, src, "new_height: 6 new_width: 7",
                      "transform_param { mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 }")
    mean = np.array([10, 20, 30], np.float32)[:, None, None]
    order = [0, 1, 2, 3, 4, 0, 1, 2]  # wraps around after the fifth image
    for b in range(4):
        net.forward()
        for k in range(2):
            i = order[2 * b + k]
            want = (cv2.resize(imgs[i], (7, 6), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
                    .astype(np.float32) - mean) * np.float32(0.5)
            np.testing.assert_array_equal(net.blobs["data"].data[k], want)
            assert net.blobs["label"].data[k] == labels[i]


def test_image_data_grey_and_native_size(tmp_path):
    paths, imgs = _images(tmp_path, [(5, 4)] * 3)
    src = _list_file(tmp_path, paths, [0, 1, 2])
    net = _image_data(tmp_path, src, "is_color: false", batch=3)
    assert net.blobs["data"].data.shape == (3, 1, 5, 4)
    net.forward()
    for i, p in enumerate(paths):
        want = cv2.imread(str(tmp_path / p), cv2.IMREAD_GRAYSCALE)[None].astype(np.float32)
        np.testing.assert_array_equal(net.blobs["data"].data[i], want)


def test_image_data_crop_and_mirror_in_train(tmp_path):
    paths, imgs = _images(tmp_path, [(8, 9), (10, 7)])
    src = _list_file(tmp_path, paths, [0, 1])
    p = tmp_path / "net.prototxt"
    p.write_text(f'''layer {{ name: "img" type: "ImageData" top: "data" top: "label"
        image_data_param {{ source: "{src}" root_folder: "{tmp_path}/" batch_size: 2 }}
        transform_param {{ crop_size: 5 mirror: true }} }}''')
    net = caffe.Net(str(p), caffe.TRAIN)
    seen = set()
    for _ in range(6):
        net.forward()
        for i, img in enumerate(imgs):
            got = net.blobs["data"].data[i]
            chw = img.transpose(2, 0, 1).astype(np.float32)
            hits = [(h, w, m) for h in range(chw.shape[1] - 4) for w in range(chw.shape[2] - 4) for m in (0, 1)
                    if np.array_equal(got, chw[:, h:h + 5, w:w + 5][:, :, ::-1] if m else chw[:, h:h + 5, w:w + 5])]
            assert hits, "the item is no crop of its image"
            seen |= {hit[2] for hit in hits}
    assert seen == {0, 1}  # both mirrored and plain crops occur


def test_image_data_shuffle_skip_and_resume(tmp_path):
    paths, imgs = _images(tmp_path, [(4, 4)] * 6)
    labels = list(range(6))
    src = _list_file(tmp_path, paths, labels)
    net = _image_data(tmp_path, src, "shuffle: true rand_skip: 3", batch=3)
    layer = net.layers[0]
    got = []
    for _ in range(4):
        net.forward()
        for k in range(3):
            lab = int(net.blobs["label"].data[k])
            np.testing.assert_array_equal(net.blobs["data"].data[k], imgs[lab].transpose(2, 0, 1))
            got.append(lab)
    first_pass = got[:6 - layer._start["lines_id"]]
    assert len(set(first_pass)) == len(first_pass)
    assert sorted(got[6 - layer._start["lines_id"]:][:6]) == labels  # a whole reshuffled pass
    state = layer.state()
    net.forward()
    after = net.blobs["data"].data.copy()
    net2 = _image_data(tmp_path, src, "shuffle: true rand_skip: 3", batch=3)
    net2.layers[0].set_state(state)
    net2.forward()
    np.testing.assert_array_equal(net2.blobs["data"].data, after)


def test_image_data_errors_name_the_problem(tmp_path):
    paths, _ = _images(tmp_path, [(4, 4), (5, 5)])
    with pytest.raises(ValueError, match="new_height and new_width"):
        _image_data(tmp_path, _list_file(tmp_path, paths, [0, 1]), "new_height: 3")
    with pytest.raises(ValueError, match="cannot open image_data_param.source"):
        _image_data(tmp_path, tmp_path / "nope.txt")
    net = _image_data(tmp_path, _list_file(tmp_path, paths, [0, 1]))
    with pytest.raises(ValueError, match="all images must match"):
        net.forward()  # different sizes without a crop or resize
    with pytest.raises(ValueError, match="Could not load .*missing.png"):
        _image_data(tmp_path, _list_file(tmp_path, ["missing.png"], [0]))


# -- WindowData ------------------------------------------------------------------------------------------------
def _window_file(tmp_path, image, windows):
    f = tmp_path / "windows.txt"
    h, w = image.shape[:2]
    cv2.imwrite(str(tmp_path / "im.png"), image)
    lines = ["# 0", "im.png", f"3 {h} {w}", str(len(windows))]
    lines += [" ".join(str(v) for v in win) for win in windows]
    f.write_text("\n".join(lines) + "\n")
    return f


def _window_net(tmp_path, src, params, transform, phase=caffe.TRAIN):
    p = tmp_path / "wnet.prototxt"
    p.write_text(f'''layer {{ name: "win" type: "WindowData" top: "data" top: "label"
        window_data_param {{ source: "{src}" root_folder: "{tmp_path}/" {params} }}
        transform_param {{ {transform} }} }}''')
    return caffe.Net(str(p), phase)


@pytest.fixture
def image():
    return np.random.RandomState(5).randint(0, 256, size=(16, 20, 3)).astype(np.uint8)  # rows 16, cols 20


def test_window_data_warp(tmp_path, image):
    # class overlap x1 y1 x2 y2; overlap >= 0.5 foreground, < 0.5 background (defaults)
    wins = [(1, 0.9, 2, 3, 7, 12), (2, 0.7, 10, 0, 19, 15), (5, 0.1, 0, 0, 3, 4), (7, 0.3, 4, 4, 12, 9)]
    src = _window_file(tmp_path, image, wins)
    net = _window_net(tmp_path, src, "batch_size: 8 fg_fraction: 0.25 scale: 0.5",
                      "crop_size: 6 mean_value: 100")
    by_label = {1: wins[0], 2: wins[1], 0: None}
    for _ in range(3):
        net.forward()
        labels = net.blobs["label"].data
        assert (labels[:6] == 0).all() and set(labels[6:]) <= {1, 2}  # background first, then int(8 * .25) fg
        for k, lab in enumerate(labels):
            got = net.blobs["data"].data[k]
            cands = [by_label[int(lab)]] if lab else [wins[2], wins[3]]
            outs = []
            for _, _, x1, y1, x2, y2 in cands:
                warped = cv2.resize(image[y1:y2 + 1, x1:x2 + 1], (6, 6), interpolation=cv2.INTER_LINEAR)
                outs.append((warped.transpose(2, 0, 1).astype(np.float32) - 100) * np.float32(0.5))
            assert any(np.array_equal(got, o) for o in outs)


def _square_expected(image, mirror, mean=None, mean_off=0, scale=1.0):
    """The hand-worked geometry of window (x1 2, y1 3, x2 7, y2 12), crop 12, context_pad 2, square mode:
    context scale 12 / 8 = 1.5; centre (5, 8); half sizes 5 (square); expanded x -2.5 -> -3 (C round, halves
    away from zero) .. 13, y 0.5 -> 1 .. 15.5 -> 16; clipped x 0..13 (pad_x1 3), y 1..15 (pad_y2 1);
    unclipped 17 wide, 16 high: scales 12/17 and 12/16; warped size round(14 * 12/17) = 10 by
    round(15 * 0.75) = 11; pad_x1 round(3 * 12/17) = 2, pad_y1 0.  Unmirrored the warp sits at rows 0..10,
    columns 2..11; mirrored (pad_x2 = 0) at columns 0..9."""
    warped = cv2.resize(image[1:16, 0:14], (10, 11), interpolation=cv2.INTER_LINEAR)
    pw = 2
    if mirror:
        warped, pw = cv2.flip(warped, 1), 0
    out = np.zeros((3, 12, 12), np.float32)
    pix = warped.transpose(2, 0, 1).astype(np.float32)
    if mean is not None:
        pix = pix - mean[:, mean_off:mean_off + 11, mean_off + pw:mean_off + pw + 10]
    out[:, 0:11, pw:pw + 10] = pix * np.float32(scale)
    return out


@pytest.mark.parametrize("cache", [False, True])
def test_window_data_square_context_pad_mirror(tmp_path, image, cache):
    wins = [(3, 1.0, 2, 3, 7, 12), (4, 0.0, 2, 3, 7, 12)]
    src = _window_file(tmp_path, image, wins)
    net = _window_net(tmp_path, src, f'batch_size: 4 fg_fraction: 0.5 context_pad: 2 crop_mode: "square" '
                      f'cache_images: {str(cache).lower()}', "crop_size: 12 mirror: true")
    plain, flipped = _square_expected(image, False), _square_expected(image, True)
    seen = set()
    for _ in range(4):
        net.forward()
        np.testing.assert_array_equal(net.blobs["label"].data, [0, 0, 3, 3])
        for k in range(4):
            got = net.blobs["data"].data[k]
            m = [np.array_equal(got, plain), np.array_equal(got, flipped)]
            assert any(m)
            seen.add(m.index(True))
    assert seen == {0, 1}


def test_window_data_mean_file(tmp_path, image):
    wins = [(3, 1.0, 2, 3, 7, 12), (4, 0.0, 2, 3, 7, 12)]
    src = _window_file(tmp_path, image, wins)
    mean = np.random.RandomState(1).uniform(0, 255, size=(3, 16, 16)).astype(np.float32)
    write_binaryproto(array_to_proto(mean[None]), tmp_path / "mean.binaryproto")
    net = _window_net(tmp_path, src, 'batch_size: 2 context_pad: 2 crop_mode: "square" scale: 0.25',
                      f'crop_size: 12 mean_file: "{tmp_path}/mean.binaryproto"')
    net.forward()
    want = _square_expected(image, False, mean=mean, mean_off=(16 - 12) // 2, scale=0.25)
    for k in range(2):
        np.testing.assert_allclose(net.blobs["data"].data[k], want, rtol=0, atol=1e-5)


def test_window_data_errors(tmp_path, image):
    src = _window_file(tmp_path, image, [(0, 0.9, 0, 0, 3, 3), (0, 0.1, 0, 0, 3, 3)])
    with pytest.raises(ValueError, match="foreground window .* class index 0"):
        _window_net(tmp_path, src, "batch_size: 2", "crop_size: 4")
    src = _window_file(tmp_path, image, [(1, 0.9, 0, 0, 3, 3), (0, 0.1, 0, 0, 3, 3)])
    with pytest.raises(ValueError, match="crop_size must be positive"):
        _window_net(tmp_path, src, "batch_size: 2", "")
    with pytest.raises(ValueError, match="Failed to open window file"):
        _window_net(tmp_path, tmp_path / "none.txt", "batch_size: 2", "crop_size: 4")
    src = _window_file(tmp_path, image, [(1, 0.9, 0, 0, 3, 3)])
    net = _window_net(tmp_path, src, "batch_size: 2", "crop_size: 4")
    with pytest.raises(ValueError, match="needs both"):
        net.forward()
