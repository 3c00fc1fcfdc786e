"""turing_test.py serve without a browser: the answer API, several participants at once, malformed and replayed
posts, a server restarted in the middle of a session, a second session refused."""
import json
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from colorization.turing import Protocol, Study, main
from colorization.turing.server import make_server, serve_in_thread
from colorization.turing.study import read_jsonl


def synthetic_photos(folder, n=55, seed=0):
    """``n`` small colour photos (gradients of different hues and sizes) as PNG files."""
    import cv2

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(60, 140, 2))
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), rng.integers(0, 256))], -1).astype(np.uint8)
        cv2.imwrite(str(folder / f"p{i:03d}.png"), img)
    return folder


@pytest.fixture(scope="module")
def base_study(tmp_path_factory):
    d = tmp_path_factory.mktemp("turing")
    photos = synthetic_photos(d / "photos")
    assert main(["prepare", str(d / "study"), "--images", str(photos), "--gray", "--ground-truth",
                 "--quiet"]) == 0
    return d / "study"


@pytest.fixture
def study_dir(base_study, tmp_path):
    return shutil.copytree(base_study, tmp_path / "study")


class Client:
    def __init__(self, server):
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def request(self, method, path, body=None, raw=None, headers=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                payload, status, ctype = r.read(), r.status, r.headers["Content-Type"]
        except urllib.error.HTTPError as e:
            payload, status, ctype = e.read(), e.code, e.headers["Content-Type"]
        return status, (json.loads(payload) if ctype == "application/json" else payload)

    def session(self, who):
        return self.request("POST", "/api/session", {"participant": who})

    def answer(self, who, trial, choice="left", display_ms=1000.0, response_ms=500.0):
        return self.request("POST", "/api/answer", {"participant": who, "trial": trial, "choice": choice,
                                                    "display_ms": display_ms, "response_ms": response_ms})

    def fake_side(self, study_dir, who, trial):
        """Which side shows the recolorization, told by comparing the served images with the ground truth."""
        sides = {}
        for side in ("left", "right"):
            status, png = self.request("GET", f"/api/image/{who}/{trial}/{side}")
            assert status == 200 and png[:4] == b"\x89PNG"
            sides[side] = png
        reals = {p.read_bytes() for p in (study_dir / "real").glob("*.png")}
        fake = [s for s, png in sides.items() if png not in reals]
        return fake[0] if len(fake) == 1 else None  # the ground-truth control shows two real photos


@pytest.fixture
def running():
    servers = []

    def start(study_dir, protocol=Protocol(practice=2, test=4, display_ms=1000)):
        server = make_server(Study(study_dir, protocol), "127.0.0.1", 0, quiet=True)
        serve_in_thread(server)
        servers.append(server)
        return server, Client(server)

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_a_whole_paper_session_over_http(study_dir, running):
    server, c = running(study_dir, Protocol())
    assert server.server_address[0] == "127.0.0.1"
    status, state = c.session("p01")
    assert status == 200 and state == {"participant": "p01", "trials": 50, "practice": 10, "next": 0,
                                       "done": False, "display_ms": 1000, "feedback_ms": 1000}
    assert "algorithm" not in state  # the participant is not told what is tested
    alg = read_jsonl(study_dir / "sessions.jsonl")[0]["algorithm"]
    assert alg == "gray"  # the first algorithm of the manifest (no session yet anywhere)
    picks = []
    for t in range(50):
        fake = c.fake_side(study_dir, "p01", t)
        choice = fake if t % 3 else ("right" if fake == "left" else "left")  # every third trial fooled
        picks.append(choice)
        status, r = c.answer("p01", t, choice)
        assert status == 200 and r["next"] == t + 1 and r["done"] == (t == 49)
        assert r["feedback"] == ((("right" if choice == fake else "wrong")) if t < 10 else None)
    recs = read_jsonl(study_dir / "trials.jsonl")
    assert [r["trial"] for r in recs] == list(range(50))
    assert [r["choice"] for r in recs] == picks
    assert [r["practice"] for r in recs] == [True] * 10 + [False] * 40
    for r in recs:
        assert r["sides"][r["fake_side"]] == "gray" and set(r["sides"].values()) == {"gray", "real"}
        assert r["labelled_real"] == (r["choice"] != r["fake_side"])
        assert r["participant"] == "p01" and r["display_ms"] == 1000.0 and r["response_ms"] == 500.0
    # finished: no second session, no more answers, no images
    assert c.session("p01")[0] == 409
    assert c.answer("p01", 50)[0] == 409
    assert c.request("GET", "/api/image/p01/49/left")[0] == 404
    assert len(read_jsonl(study_dir / "trials.jsonl")) == 50
    # report: 40 test trials, practice excluded; every third test trial (t % 3 == 0) labelled real
    assert main(["report", str(study_dir), "--resamples", "200"]) == 0
    rep = json.loads((study_dir / "report" / "report.json").read_text())
    row = rep["algorithms"][0]
    fooled = sum(1 for t in range(10, 50) if t % 3 == 0)
    assert (row["algorithm"], row["participants"], row["test_trials"]) == ("gray", 1, 40)
    assert row["labelled_real_percent"] == 100 * fooled / 40


def test_several_participants_at_once_are_balanced_and_complete(study_dir, running):
    server, c = running(study_dir)
    errors = []

    def participant(who, seed):
        rng = np.random.default_rng(seed)
        try:
            assert c.session(who)[0] == 200
            for t in range(6):
                status, r = c.answer(who, t, ["left", "right"][rng.integers(2)], float(rng.uniform(990, 1010)),
                                     float(rng.uniform(100, 3000)))
                assert status == 200 and r["next"] == t + 1, r
        except AssertionError as e:  # pragma: no cover - reported below
            errors.append(f"{who}: {e}")

    threads = [threading.Thread(target=participant, args=(f"w{i}", i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sessions = read_jsonl(study_dir / "sessions.jsonl")
    assert sorted(s["participant"] for s in sessions) == [f"w{i}" for i in range(8)]
    counts = {a: sum(s["algorithm"] == a for s in sessions) for a in ("gray", "ground_truth")}
    assert counts == {"gray": 4, "ground_truth": 4}
    recs = read_jsonl(study_dir / "trials.jsonl")
    assert len(recs) == 48
    for i in range(8):
        mine = [r for r in recs if r["participant"] == f"w{i}"]
        assert [r["trial"] for r in mine] == list(range(6))
    # each participant saw distinct photos, seeded by the participant id
    for s in sessions:
        assert len({p["image"] for p in s["plan"]}) == 6


def test_malformed_and_replayed_posts_change_nothing(study_dir, running):
    server, c = running(study_dir)
    assert c.session("p1")[0] == 200
    assert c.answer("p1", 0)[0] == 200
    before = ((study_dir / "sessions.jsonl").read_bytes(), (study_dir / "trials.jsonl").read_bytes())
    ok = {"participant": "p1", "trial": 1, "choice": "left", "display_ms": 1000, "response_ms": 300}
    bad = [
        ({**ok, "trial": "1"}, 400), ({**ok, "trial": 1.0}, 400), ({**ok, "trial": True}, 400),
        ({**ok, "choice": "up"}, 400), ({**ok, "display_ms": -1}, 400), ({**ok, "response_ms": "5"}, 400),
        ({**ok, "response_ms": None}, 400), ({**ok, "extra": 1}, 400), ([ok], 400), ("p1", 400),
        ({k: v for k, v in ok.items() if k != "choice"}, 400), ({**ok, "participant": "nobody"}, 404),
        ({**ok, "participant": 7}, 404),
        ({**ok, "trial": 0}, 409),   # a replay of the answered trial
        ({**ok, "trial": 3}, 409),   # a trial not yet shown
        ({**ok, "trial": -1}, 409),
    ]
    for body, want in bad:
        status, r = c.request("POST", "/api/answer", body)
        assert status == want and r["error"], (body, status, r)
    for raw, want in ((b"{not json", 400), (b"\xff\xfe", 400), (b"x" * 5000, 413)):
        assert c.request("POST", "/api/answer", raw=raw)[0] == want
    for body in ({"participant": "../x"}, {"participant": ""}, {"participant": "a" * 65}, {"who": "p2"},
                 {"participant": "p2", "x": 1}, ["p2"]):
        assert c.request("POST", "/api/session", body)[0] == 400
    assert c.request("POST", "/api/nothing", {})[0] == 404
    assert c.request("GET", "/static/../study.json")[0] == 404
    assert c.request("GET", "/api/image/p1/5/left")[0] == 404   # not the current trial
    assert c.request("GET", "/api/image/p1/1/middle")[0] == 404
    assert c.request("GET", "/api/image/p2/0/left")[0] == 404   # no such session
    after = ((study_dir / "sessions.jsonl").read_bytes(), (study_dir / "trials.jsonl").read_bytes())
    assert after == before
    assert c.answer("p1", 1)[0] == 200  # the session goes on


def test_server_restarted_mid_session_loses_and_repeats_nothing(study_dir, running):
    server, c = running(study_dir)
    c.session("p1")
    c.session("p2")
    for t in range(3):
        assert c.answer("p1", t, "right")[0] == 200
    assert c.answer("p2", 0)[0] == 200
    server.shutdown()
    server.server_close()
    # a crash in the middle of an append leaves a torn line: set aside, never glued to the next record
    with open(study_dir / "trials.jsonl", "ab") as f:
        f.write(b'{"participant":"p1","tri')
    server2, c2 = running(study_dir)
    status, state = c2.session("p1")  # what a reloaded page asks
    assert status == 200 and state["next"] == 3
    assert c2.answer("p1", 2)[0] == 409  # the answer sent just before the restart, sent again
    for t in range(3, 6):
        assert c2.answer("p1", t)[0] == 200
    assert c2.session("p2")[1]["next"] == 1
    recs = read_jsonl(study_dir / "trials.jsonl")
    assert [r["trial"] for r in recs if r["participant"] == "p1"] == list(range(6))
    assert [r["choice"] for r in recs if r["participant"] == "p1"][:3] == ["right"] * 3
    assert (study_dir / "trials.jsonl.torn").read_bytes() == b'{"participant":"p1","tri\n'
    assert c2.session("p1")[0] == 409  # finished: a second session is refused, after the restart too
    # a third server still knows p1 finished and p2 did not
    server2.shutdown()
    server2.server_close()
    server3, c3 = running(study_dir)
    assert c3.session("p1")[0] == 409 and c3.session("p2")[1]["next"] == 1


def test_sessions_go_to_the_algorithm_with_fewest(study_dir, running):
    server, c = running(study_dir)
    order = []
    for who in ["a", "b", "c", "d", "e"]:
        c.session(who)
        order.append(read_jsonl(study_dir / "sessions.jsonl")[-1]["algorithm"])
    assert order == ["gray", "ground_truth", "gray", "ground_truth", "gray"]


def test_serve_command_errors(study_dir, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none")]) == 1
    assert "no study manifest" in capsys.readouterr().err
    assert main(["serve", str(study_dir), "--test", "60"]) == 1
    assert "55 photos; a session of 70 trials needs as many distinct photos" in capsys.readouterr().err
    (study_dir / "fake" / "gray" / "00003.png").unlink()
    assert main(["serve", str(study_dir)]) == 1
    assert "00003.png: missing" in capsys.readouterr().err


def test_serve_command_binds_localhost_and_stops_on_ctrl_c(study_dir):
    import os
    import re
    import signal
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, str(REPO / "tools" / "turing_test.py"), "serve", str(study_dir),
                          "--port", "0", "--display-ms", "500"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stderr.readline()
        m = re.search(r"serving .* at http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        assert "differs from the paper's" in p.stderr.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/", timeout=30) as r:
            page = r.read().decode()
        assert '<script src="/static/app.js">' in page and "http" not in page.replace("http-equiv", "")
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/static/app.js", timeout=30) as r:
            assert "/api/answer" in r.read().decode()
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30) == 0
