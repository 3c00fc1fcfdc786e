"""Faults and bad input against the user tools (build_lmdb, compute_prior, parse_log, plot_training_log):
each bad input is one line naming the flag/file/record and a non-zero exit, never a traceback; build_lmdb
stores exactly the good files once each with the right labels (symlink loops, symlinked class folders,
Latin-1 names, a FIFO in --list, a full disk).  The inputs are made here."""
import os
import resource
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest

from data_helpers import (PYTHON, REPO, colour_image, datum_of, env_for_subprocess, png_bytes, read_lmdb,
                          write, write_lmdb)

LATIN1 = "caf\xe9".encode("latin-1")  # a file name that is not UTF-8


def _tool(name, *args, preexec=None, timeout=120):
    r = subprocess.run([PYTHON, str(REPO / "tools" / f"{name}.py"), *map(str, args)], capture_output=True,
                       env=env_for_subprocess(), timeout=timeout, preexec_fn=preexec)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def _one_line_error(rc, out, err, *needles):
    """A clean user error: non-zero exit, no traceback, the last line names what is wrong."""
    assert rc != 0, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    for n in needles:
        assert n in last, (n, err)
    return last


def _main(module, *args):
    """Run ``colorization.<module>.<fn>(argv)`` in this process; returns (rc, stdout, stderr) as _tool does
    (a raised exception fails the test: a user error must not be a traceback)."""
    import contextlib
    import importlib
    import io

    mod_name, _, fn = module.partition(":")
    main = getattr(importlib.import_module(f"colorization.{mod_name}"), fn or "main")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def _png(rng, size=20):
    return png_bytes(colour_image(rng, size, size))


def _build(*args, **kw):
    return _tool("build_lmdb", "--quiet", "--resize", 0, "--workers", 0, *args, **kw)


def _build_here(*args):
    return _main("build_lmdb", "--quiet", "--resize", 0, "--workers", 0, *args)


def _records(db):
    """{key: label} of an LMDB that build_lmdb wrote (keys as raw bytes)."""
    return {k: datum_of(v).label for k, v in read_lmdb(db)}


# ---- build_lmdb: what is stored ------------------------------------------------------------------------

def test_symlink_loop_and_symlinked_class_folder_store_each_real_image_once(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    for cls in ("a", "b"):
        for i in range(2):
            write(root / cls / f"{cls}{i}.png", _png(rng))
    os.symlink("..", root / "b" / "loop")                    # a loop back to the root
    os.symlink("a", root / "c")                              # a second name for class a (inside the tree)
    outside = tmp_path / "outside"
    write(outside / "d0.png", _png(rng))
    os.symlink(outside, root / "d")                          # a class folder that lives elsewhere
    os.symlink(root / "a" / "a0.png", root / "b" / "alias.png")  # a second name for a file
    rc, out, err = _build_here("--root", root, "--out", tmp_path / "db", "--split", "all")
    assert rc == 0, err
    recs = _records(tmp_path / "db")
    names = sorted(k.split(b"_", 1)[1].decode() for k in recs)
    assert names == ["a/a0.png", "a/a1.png", "b/b0.png", "b/b1.png", "d/d0.png"]
    labels = {k.split(b"_", 1)[1].decode(): v for k, v in recs.items()}
    assert labels == {"a/a0.png": 0, "a/a1.png": 0, "b/b0.png": 1, "b/b1.png": 1, "d/d0.png": 2}
    assert "skipping b/loop" in err and "skipping c" in err


def test_latin1_file_names_and_list_are_stored_under_their_bytes(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "root"
    root.mkdir()
    (root / os.fsdecode(LATIN1 + b".png")).write_bytes(_png(rng))
    (root / os.fsdecode(LATIN1 + b"_gray.png")).write_bytes(png_bytes(np.full((20, 20, 3), 128, np.uint8)))
    (root / os.fsdecode(b"r" + LATIN1[-1:] + b"sum.png")).write_bytes(b"not an image")
    rc, out, err = _build_here("--root", root, "--out", tmp_path / "db", "--split", "all")
    assert rc == 0, err
    keys = [k for k, _ in read_lmdb(tmp_path / "db")]
    assert [k.split(b"_", 1)[1] for k in keys] == [LATIN1 + b".png"]
    assert (tmp_path / "db" / "gray.txt").read_bytes() == LATIN1 + b"_gray.png\n"
    assert (tmp_path / "db" / "skipped.txt").read_bytes().startswith(b"r\xe9sum.png\t")
    assert (tmp_path / "db" / "manifest.json").exists()
    # a --list that is not UTF-8 either
    lst = tmp_path / "list.txt"
    lst.write_bytes(LATIN1 + b".png 7\n")
    rc, out, err = _build_here("--root", root, "--list", lst, "--out", tmp_path / "db2", "--split", "all")
    assert rc == 0, err
    assert _records(tmp_path / "db2") == {b"00000000_" + LATIN1 + b".png": 7}


def test_fifo_in_list_is_skipped_not_opened(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "root"
    write(root / "ok.png", _png(rng))
    os.mkfifo(root / "pipe.png")
    lst = tmp_path / "list.txt"
    lst.write_text("pipe.png 1\nok.png 2\n")
    for workers in (2,):
        out = tmp_path / f"db{workers}"
        rc, _, err = _tool("build_lmdb", "--quiet", "--resize", 0, "--workers", workers, "--root", root,
                           "--list", lst, "--out", out, "--split", "all", timeout=60)
        assert rc == 0, err
        assert _records(out) == {b"00000001_ok.png": 2}
        assert (out / "skipped.txt").read_text() == "pipe.png\tnot a regular file (a FIFO)\n"


def _limit_file_size(limit):
    def f():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return f


def test_full_disk_is_one_line_and_the_build_resumes(tmp_path):
    """A disk that fills up (the file-size limit of the process stands in for a small tmpfs: writes past it
    fail as on a full disk) ends with one line; the same command afterwards finishes the database."""
    rng = np.random.default_rng(3)
    root = tmp_path / "root"
    for i in range(12):
        write(root / f"{i:02d}.png", png_bytes(colour_image(rng, 64, 64)))
    args = ("--root", root, "--out", tmp_path / "db", "--split", "all", "--commit-every", 2,
            "--map-size", 1 << 20)
    rc, _, err = _build(*args, preexec=_limit_file_size(60000))
    _one_line_error(rc, "", err, "db", "cannot write the database", "rerun the same command to resume")
    rc, _, err = _build_here(*args)
    assert rc == 0, err
    recs = _records(tmp_path / "db")
    assert sorted(k.split(b"_", 1)[1] for k in recs) == [f"{i:02d}.png".encode() for i in range(12)]


# ---- build_lmdb: one-line errors -----------------------------------------------------------------------

def test_build_lmdb_bad_flags_are_one_line(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "root"
    write(root / "x.png", _png(rng))
    afile = tmp_path / "afile"
    afile.write_text("x")
    _one_line_error(*_build_here("--root", root, "--out", afile), "--out", "afile", "is a file")
    _one_line_error(*_build_here("--root", root, "--out", afile / "sub"), "afile/sub")
    _one_line_error(*_build_here("--root", root, "--out", ""), "--out ''")
    _one_line_error(*_build_here("--root", root, "--list", tmp_path / "nope.txt", "--out", tmp_path / "o"),
                    "--list", "nope.txt")
    _one_line_error(*_build_here("--root", root, "--list", root, "--out", tmp_path / "o"), "--list", "regular file")
    _one_line_error(*_build_here("--root", tmp_path / "none", "--out", tmp_path / "o"), "--root")
    # ILSVRC layout with missing and malformed label files
    ils = tmp_path / "ils"
    write(ils / "val" / "ILSVRC2012_val_00000001.JPEG", _png(rng))
    write(ils / "train" / "n01440764" / "t.JPEG", _png(rng))
    for flag, content, needle in (("--val-labels", None, "nope"),
                                  ("--val-labels", "ILSVRC2012_val_00000001.JPEG seven\n", "line 1"),
                                  ("--val-labels", "x\n", "meta.mat"),
                                  ("--synsets", None, "nope"),
                                  ("--synsets", "\n\n", "no wnids")):
        path = tmp_path / "nope" if content is None else tmp_path / f"f{abs(hash(content))}"
        if content is not None:
            path.write_text(content)
        split = "val" if flag == "--val-labels" else "train"
        _one_line_error(*_build_here("--root", ils, "--split", split, flag, path, "--out", tmp_path / "o2"),
                        flag, path.name, needle)


# ---- compute_prior ---------------------------------------------------------------------------------------

def test_compute_prior_bad_inputs_are_one_line(tmp_path):
    from torchcaffe.proto import caffe_pb2
    import lmdb

    cp = ("--out", tmp_path / "p.npy", "--device", "cpu", "--no-progress")
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "nope", *cp), "--lmdb", "nope", "no such")
    (tmp_path / "emptydir").mkdir()
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "emptydir", *cp), "--lmdb", "not an LMDB")
    _one_line_error(*_main("compute_prior", "--images", tmp_path / "emptydir", *cp), "--images", "no image")
    (tmp_path / "afile").write_text("x")
    for out, needle in (("", "--out ''"), (tmp_path / "afile" / "p.npy", "afile is a file"),
                        (tmp_path, "is a folder")):
        _one_line_error(*_main("compute_prior", "--images", tmp_path / "emptydir", "--out", out), needle)
    lmdb.open(str(tmp_path / "empty_db")).close()
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "empty_db", *cp), "empty_db", "no records")
    (tmp_path / "garbage").write_bytes(b"x" * 5000)
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "garbage", *cp), "garbage", "not a readable")
    # a record that is not a Datum, and a Datum whose pixels are short of its shape
    env = lmdb.open(str(tmp_path / "bad_db"))
    with env.begin(write=True) as t:
        t.put(b"00000000_bad", b"\xff\xff\xff\xff")
    env.close()
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "bad_db", *cp), "bad_db", "00000000_bad",
                    "not a Datum")
    d = caffe_pb2.Datum(channels=3, height=4, width=4, data=b"abcde")
    env = lmdb.open(str(tmp_path / "short_db"))
    with env.begin(write=True) as t:
        t.put(b"00000000_short", d.SerializeToString())
    env.close()
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "short_db", *cp), "00000000_short", "short")
    # a copy of a good database cut short (reading it would crash with SIGBUS)
    rng = np.random.default_rng(5)
    write_lmdb(tmp_path / "good", [colour_image(rng, 32, 32).transpose(2, 0, 1) for _ in range(200)])
    (tmp_path / "cut").mkdir()
    data = (tmp_path / "good" / "data.mdb").read_bytes()
    (tmp_path / "cut" / "data.mdb").write_bytes(data[:len(data) // 3])
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "cut", *cp), "--lmdb", "cut", "damaged")
    # --bins: missing, not an array, a pickle (never unpickled: it would create a folder)
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "good", *cp, "--bins", tmp_path / "nob.npy"),
                    "--bins", "nob.npy")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([_Boom(marker)], dtype=object), allow_pickle=True)
    _one_line_error(*_main("compute_prior", "--lmdb", tmp_path / "good", *cp, "--bins", evil), "--bins",
                    "evil.npy", "never unpickled")
    assert not marker.exists()


class _Boom:
    """Pickles as a call that creates the folder ``path`` when it is unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_compute_prior_writes_with_the_umask_mode(tmp_path):
    rng = np.random.default_rng(6)
    write_lmdb(tmp_path / "db", [colour_image(rng, 16, 16).transpose(2, 0, 1) for _ in range(3)])
    out = tmp_path / "prior.npy"
    old = os.umask(0o022)
    try:
        rc, _, err = _main("compute_prior", "--lmdb", tmp_path / "db", "--out", out, "--device", "cpu",
                           "--no-progress")
    finally:
        os.umask(old)
    assert rc == 0, err
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# ---- parse_log / plot_training_log ---------------------------------------------------------------------

LOG = """I1126 12:00:00.000000  1 solver.cpp:57] Solving demo
I1126 12:00:01.000000  1 solver.cpp:218] Iteration 0 (0 iter/s, 0.1s/50 iters), loss = 6.5
I1126 12:00:01.000000  1 solver.cpp:237]     Train net output #0: loss = 6.5 (* 1 = 6.5 loss)
"""


def test_parse_log_and_plot_missing_inputs_are_one_line(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    _one_line_error(*_main("training_log:parse_main", tmp_path / "nope.log", tmp_path), "nope.log")
    _one_line_error(*_main("training_log:parse_main", log, tmp_path / "no_folder"), "no_folder", "does not exist")
    _one_line_error(*_main("training_log:parse_main", tmp_path, tmp_path), "is a directory")
    _one_line_error(*_main("training_log:plot_main", tmp_path / "nope.log", tmp_path / "x.png"), "nope.log")
    _one_line_error(*_main("training_log:plot_main", log, tmp_path / "no_folder" / "x.png"), "no_folder")
    rc, _, err = _main("training_log:parse_main", log, tmp_path)
    assert rc == 0, err
    assert (tmp_path / "train.log.train").read_text().splitlines()[0] == "NumIters,Seconds,LearningRate,loss"


def test_tools_are_thin_wrappers_without_sys_path_editing():
    for name, module in (("build_lmdb", "colorization.build_lmdb"), ("compute_prior", "colorization.compute_prior"),
                         ("parse_log", "colorization.training_log"),
                         ("plot_training_log", "colorization.training_log")):
        text = (REPO / "tools" / f"{name}.py").read_text()
        assert f"from {module} import" in text and "sys.path" not in text
        assert len([l for l in text.splitlines() if l.strip() and not l.startswith(("#", '"""'))]) <= 3
