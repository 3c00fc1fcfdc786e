"""HDF5Data: Caffe's row/file order, wrap-around, shuffling, multi-solver skipping, and exact resumption."""
import json

import h5py
import numpy as np
import pytest

from layer_helpers import GOLDEN, TEST, TRAIN, make_layer
from torchcaffe.blob import Blob
from torchcaffe.layer import LayerError


def _layer(source, batch, tops=("data", "label"), shuffle=False, phase=TRAIN):
    text = (f'name: "h5" type: "HDF5Data" ' + " ".join(f'top: "{t}"' for t in tops) +
            f' hdf5_data_param {{ source: "{source}" batch_size: {batch} shuffle: {str(shuffle).lower()} }}')
    layer = make_layer(text, phase)
    top = [Blob(()) for _ in tops]
    layer.setup([], top)
    return layer, top


def _batches(layer, top, n):
    out = []
    for _ in range(n):
        layer.forward([], top)
        out.append([t.data.copy() for t in top])
    return out


@pytest.fixture()
def two_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = []
    for name, n in (("a.h5", 3), ("b.h5", 5)):
        d = np.random.RandomState(n).randn(n, 2, 3).astype(np.float32)
        lab = np.arange(n, dtype=np.int32) + 10 * n  # integer datasets are read as float, as Caffe does
        with h5py.File(name, "w") as f:
            f["data"] = d
            f["label"] = lab
        rows += [(d[i], float(lab[i])) for i in range(n)]
    (tmp_path / "list.txt").write_text("a.h5\n  b.h5\n")  # relative to the working directory
    return rows


@pytest.mark.skipif(not (GOLDEN / "solver").is_dir(), reason="../shared/caffe_golden is not present")
def test_golden_file_batches_and_wrap(monkeypatch):
    monkeypatch.chdir(GOLDEN / "solver")  # h5list.txt names golden_data.h5 relative to the working directory
    with h5py.File("golden_data.h5", "r") as f:
        data, label = f["data"][...], f["label"][...]
    layer, top = _layer("h5list.txt", 4)
    assert top[0].shape == (4, 2, 8, 8) and top[1].shape == (4,)
    for k, (d, l) in enumerate(_batches(layer, top, 6)):
        idx = [(4 * k + i) % 16 for i in range(4)]
        np.testing.assert_array_equal(d, data[idx])
        np.testing.assert_array_equal(l, label[idx])


def test_rows_run_across_files_and_wrap(two_files):
    layer, top = _layer("list.txt", 3)
    got = _batches(layer, top, 6)
    for k, (d, l) in enumerate(got):
        for i in range(3):
            rd, rl = two_files[(3 * k + i) % 8]
            np.testing.assert_array_equal(d[i], rd)
            assert l[i] == rl


def test_shuffle_is_a_seeded_permutation(two_files):
    def epoch(seed):
        np.random.seed(seed)
        layer, top = _layer("list.txt", 4, shuffle=True)
        return [l for _, ls in _batches(layer, top, 4) for l in ls]
    a, b = epoch(1), epoch(1)
    assert a == b
    labels = sorted(r[1] for r in two_files)
    assert sorted(a[:8]) == labels and sorted(a[8:]) == labels  # each pass visits every row once
    assert a != epoch(2)


@pytest.mark.parametrize("shuffle", [False, True])
def test_state_resumes_exactly(two_files, shuffle):
    np.random.seed(5)
    layer, top = _layer("list.txt", 3, shuffle=shuffle)
    _batches(layer, top, 3)
    state = json.loads(json.dumps(layer.state()))  # the state is plain JSON
    expected = _batches(layer, top, 5)
    np.random.seed(123)
    fresh, ftop = _layer("list.txt", 3, shuffle=shuffle)
    fresh.set_state(state)
    for (d, l), (ed, el) in zip(_batches(fresh, ftop, 5), expected):
        np.testing.assert_array_equal(d, ed)
        np.testing.assert_array_equal(l, el)
    # without a state, a new layer starts at the top of its first file (Caffe after a solverstate restore)
    again, atop = _layer("list.txt", 3)
    np.testing.assert_array_equal(_batches(again, atop, 1)[0][1], [two_files[i][1] for i in range(3)])


def test_solver_rank_skips_rows_in_train_only(two_files):
    layer, top = _layer("list.txt", 2)
    layer.solver_count, layer.solver_rank = 2, 1
    got = [l for _, ls in _batches(layer, top, 2) for l in ls]
    assert got == [two_files[i][1] for i in (1, 3, 5, 7)]
    layer, top = _layer("list.txt", 2, phase=TEST)
    layer.solver_count, layer.solver_rank = 2, 1
    assert [l for _, ls in _batches(layer, top, 1) for l in ls] == [two_files[i][1] for i in (0, 1)]


def test_errors_name_the_problem(two_files, tmp_path):
    with pytest.raises(LayerError, match="source file"):
        _layer("missing.txt", 2)
    with pytest.raises(LayerError, match="dataset nothere"):
        _layer("list.txt", 2, tops=("data", "nothere"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(LayerError, match="at least 1"):
        _layer("empty.txt", 2)
    with h5py.File("c.h5", "w") as f:
        f["data"] = np.zeros((2, 3, 3), np.float32)
        f["label"] = np.zeros(2, np.float32)
    (tmp_path / "mixed.txt").write_text("a.h5 c.h5")
    layer, top = _layer("mixed.txt", 2)
    with pytest.raises(LayerError, match="rows of shape"):
        _batches(layer, top, 3)
