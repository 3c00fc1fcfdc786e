"""Every layer case of tests/bvlc_golden/ against real BVLC Caffe's forward and backward.

The golden files were written by ``tests/bvlc_golden/make_golden.py`` under BVLC's own pycaffe; here the same
net runs in torchcaffe from the same inputs and weights, and every blob's data and diff and every parameter's
diff must agree to 1e-4 relative (float32). The blob and parameter names must be Caffe's, split blobs included.
"""
import numpy as np
import pytest

import torchcaffe as caffe
from bvlc_golden.spec import CASES, all_cases
from conftest import assert_close

CASE_LIST = all_cases()


@pytest.mark.parametrize("case", CASE_LIST, ids=[c.name for c in CASE_LIST])
def test_layer_case_matches_bvlc(case, monkeypatch):
    assert case.golden.is_file(), (f"{case.golden} is missing: run tests/bvlc_golden/make_golden.py "
                                   f"{case.name} under BVLC's pycaffe")
    z = np.load(case.golden)
    monkeypatch.chdir(CASES)
    net = caffe.Net(str(case.path), getattr(caffe, case.phase))

    params = {f"param__{name}__{i}": p for name, blobs in net.params.items() for i, p in enumerate(blobs)}
    assert sorted(params) == sorted(k for k in z.files if k.startswith("param__"))
    for key, p in params.items():
        assert p.data.shape == z[key].shape, key
        p.data[...] = z[key]
    inputs = sorted(k[len("input__"):] for k in z.files if k.startswith("input__"))
    assert sorted(net.inputs) == inputs
    for b in inputs:
        net.blobs[b].data[...] = z[f"input__{b}"]

    net.forward()
    assert sorted(net.blobs) == sorted(k[len("data__"):] for k in z.files if k.startswith("data__"))
    for b, blob in net.blobs.items():
        assert_close(blob.data, z[f"data__{b}"], name=f"{case.name}: data of {b}")
    if not case.backward:
        return
    diffs = {k[len("topdiff__"):]: z[k] for k in z.files if k.startswith("topdiff__")}
    net.backward(**diffs)
    for b, blob in net.blobs.items():
        assert_close(blob.diff, z[f"diff__{b}"], name=f"{case.name}: diff of {b}")
    for key, p in params.items():
        assert_close(p.diff, z["param_diff__" + key[len("param__"):]], name=f"{case.name}: diff of {key}")
