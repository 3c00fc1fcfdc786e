"""The toolkit as a new user installs it (SLOW: ~1 minute; builds and installs a wheel).

A wheel is built from the checkout (``pip wheel . --no-deps``, offline), installed into a fresh venv, and used
from another folder with no PYTHONPATH and no repo in sight: the bin centres and the prototxt files come from
inside the packages, ``python_param { module: "colorization_layers" }`` is found without PYTHONPATH, no
package named ``layers`` or folder ``data`` lands in site-packages, ``caffe train`` runs the shipped demo
net for a few iterations on a tiny LMDB, and ``cic-colorize`` colorizes a photo with the snapshot it wrote.

The venv gets the already-installed dependencies (torch, ...) through a .pth file naming this environment's
site-packages -- .pth files there (an editable install of this checkout) are not processed, so the toolkit
itself comes from the wheel only; this keeps the test offline.
"""
import ast
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest

import torchcaffe as caffe
from conftest import REPO




def console_scripts():
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CONSOLE_SCRIPTS":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py: no CONSOLE_SCRIPTS")


def _copy_checkout(dst: Path) -> None:
    """The files of the checkout (tracked and untracked-but-not-ignored), as a fresh clone would have them."""
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                               capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info",
                                                                 "__pycache__", "lmdb", "snapshots", "demo_out"))
        return
    for f in filter(None, files):
        if (REPO / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "TORCHCAFFE_LAYERS_PATH")}
    env["GLOG_minloglevel"] = "1"
    return env


def _tiny_lmdb(path: Path, n: int, seed: int) -> None:
    import skimage.data as sd
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    photos = [sd.astronaut(), sd.coffee(), sd.chelsea()]
    with lmdb.open(str(path), map_size=1 << 26) as env, env.begin(write=True) as txn:
        for i in range(n):
            p = photos[i % 3]
            y, x = rng.integers(0, p.shape[0] - 128), rng.integers(0, p.shape[1] - 128)
            im = (resize(p[y:y + 128, x:x + 128], (64, 64), anti_aliasing=True) * 255).round().astype(np.uint8)
            datum = caffe.io.array_to_datum(im[..., ::-1].transpose(2, 0, 1).copy(), label=0)
            txn.put(f"{i:08d}".encode(), datum.SerializeToString())


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    _copy_checkout(src)
    wheels = tmp / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = wheels.glob("colorization_toolkit-*.whl")
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    inner = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip()
    outer = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(inner) / "_outer_dependencies.pth").write_text("\n".join(outer) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                        str(whl)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return env_dir, Path(inner), whl


def test_the_wheel_ships_its_data_and_no_stray_top_level_names(venv):
    env_dir, inner, whl = venv
    assert (inner / "cic" / "data" / "pts_in_hull.npy").is_file()
    assert (inner / "colorization" / "prototxt" / "colorization_deploy.prototxt").is_file()
    assert (inner / "colorization" / "prototxt" / "demo" / "colorization_train_val.prototxt").is_file()
    assert (inner / "colorization_layers.py").is_file()
    assert not (inner / "layers").exists() and not (inner / "data").exists()
    code = ("import cic, colorization, colorization_layers, importlib.util as u;"
            "from colorization.paths import DEFAULT_PROTOTXT;"
            "print(cic.__file__, colorization_layers.__file__, cic.DATA_DIR, DEFAULT_PROTOTXT.is_file(),"
            " cic.load_bins().shape, u.find_spec('layers'))")
    r = subprocess.run([str(env_dir / "bin" / "python"), "-c", code], capture_output=True, text=True,
                       cwd=env_dir.parent, env=_clean_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    cic_file, layers_file, data_dir, default_ok, shape, layers_spec = r.stdout.split(maxsplit=5)
    assert cic_file.startswith(str(inner)) and layers_file.startswith(str(inner))  # the wheel's, not the repo's
    assert data_dir == str(inner / "cic" / "data") and default_ok == "True"
    assert shape.strip() + layers_spec.split(")")[0] == "(313,2" and layers_spec.strip().endswith("None")
    # every console command is installed and names an importable function
    scripts = console_scripts()
    for name in scripts:
        assert (env_dir / "bin" / name).is_file(), name
    targets = list(scripts.values())
    check = ";".join(f"import {t.split(':')[0]} as m{i}; assert callable(m{i}.{t.split(':')[1]})"
                     for i, t in enumerate(targets))
    r = subprocess.run([str(env_dir / "bin" / "python"), "-c", check], capture_output=True, text=True,
                       cwd=env_dir.parent, env=_clean_env(), timeout=120)
    assert r.returncode == 0, r.stderr


def test_caffe_train_the_demo_net_then_colorize_from_another_folder(venv, tmp_path):
    env_dir, inner, whl = venv
    work = tmp_path / "elsewhere"
    (work / "data" / "lmdb" / "demo").mkdir(parents=True)
    _tiny_lmdb(work / "data" / "lmdb" / "demo" / "train", 16, seed=0)
    _tiny_lmdb(work / "data" / "lmdb" / "demo" / "val", 4, seed=1)
    np.save(work / "data" / "prior_probs_demo.npy", np.full(313, 1 / 313))  # as the net names it
    shipped = inner / "colorization" / "prototxt" / "demo"
    (work / "prototxt" / "demo").mkdir(parents=True)
    shutil.copy(shipped / "colorization_train_val.prototxt", work / "prototxt" / "demo")
    solver = [l for l in (shipped / "solver.prototxt").read_text().splitlines()
              if not l.startswith(("max_iter", "snapshot:", "test_interval", "display"))]
    solver += ["max_iter: 3", "snapshot: 3", "test_interval: 1000", "display: 1"]
    (work / "solver.prototxt").write_text("\n".join(solver) + "\n")
    (work / "snapshots" / "demo").mkdir(parents=True)  # Caffe wants the snapshot folder to exist
    env = _clean_env()
    r = subprocess.run([str(env_dir / "bin" / "caffe"), "train", "-solver", "solver.prototxt"], cwd=work,
                       env=dict(env, GLOG_minloglevel="0"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Iteration 3" in r.stderr + r.stdout and "Optimization Done" in r.stderr + r.stdout
    (model,) = (work / "snapshots" / "demo").glob("*_iter_3.caffemodel")

    import skimage.data as sd
    from PIL import Image
    from skimage.color import rgb2lab

    Image.fromarray(sd.chelsea()).save(work / "cat.jpg", quality=95)
    deploy = shipped / "colorization_deploy.prototxt"
    r = subprocess.run([str(env_dir / "bin" / "cic-colorize"), "-img_in", "cat.jpg", "-img_out", "cat_color.png",
                        "-prototxt", str(deploy), "-caffemodel", str(model)], cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = np.asarray(Image.open(work / "cat_color.png"))
    src = np.asarray(Image.open(work / "cat.jpg"))
    assert out.shape == src.shape
    assert np.abs(rgb2lab(out)[..., 0] - rgb2lab(src)[..., 0]).max() < 1.0
