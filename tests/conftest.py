"""Shared test fixtures: where the reference material lives, and the tolerance used against BVLC Caffe."""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# BVLC Caffe's golden data: ../shared/caffe_golden beside the checkout (CI), or where TORCHCAFFE_GOLDEN points
# (tools/device_check.sh on a machine where it lies elsewhere), or shared/caffe_golden inside the checkout
GOLDEN = next((p for p in (Path(os.environ["TORCHCAFFE_GOLDEN"]) if os.environ.get("TORCHCAFFE_GOLDEN") else None,
                           SHARED / "caffe_golden", REPO / "shared" / "caffe_golden") if p is not None and p.is_dir()),
              SHARED / "caffe_golden")


@pytest.fixture(scope="session")
def golden() -> Path:
    """BVLC Caffe's golden outputs (../shared/caffe_golden, present in CI)."""
    if not GOLDEN.is_dir():
        pytest.fail(f"the reference folder {GOLDEN} is missing: tests compare against it")
    return GOLDEN


def assert_close(actual, expected, rtol=1e-4, name="", floor=1.0):
    """Relative comparison in float32's sense: |a - e| <= rtol * (|e| + floor * max|e|) + 1e-7 elementwise,
    NaNs in the same places.

    The ``floor * max|e|`` term makes the error relative to the blob's own scale where values cancel to near
    zero (e.g. ab = sum of probabilities times bin centres of +-100); single layers use a tighter 1e-2."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape or a.size == e.size, f"{name}: shape {a.shape} != {e.shape}"
    a = a.reshape(e.shape)
    nan = np.isnan(e)
    assert np.array_equal(np.isnan(a), nan), f"{name}: NaN at different places"
    a, e = a[~nan], e[~nan]
    scale = np.abs(e).max() if e.size else 0.0
    tol = rtol * (np.abs(e) + floor * scale) + 1e-7
    bad = np.abs(a - e) > tol
    assert not bad.any(), (f"{name}: {int(bad.sum())} of {e.size} values differ; max abs err "
                           f"{np.abs(a - e).max():.3g}, max |expected| {scale:.3g}")


@pytest.fixture
def glog_info():
    """The runtime's log level at INFO for one test (tests that read Caffe's log lines), restored after."""
    from torchcaffe import glog

    level = glog.get_level()
    glog.set_level(glog.INFO)
    yield
    glog.set_level(level)
