"""A Turing-test study folder and its append-only answer log.

Layout of a study folder (written by ``prepare``, read by ``serve`` and ``report``)::

    STUDY/study.json          manifest: the image ids, the algorithms (name, kind, model files), the image size
    STUDY/real/ID.png         256 x 256 ground-truth colour photos
    STUDY/fake/NAME/ID.png    the same photos recolorized by algorithm NAME
    STUDY/sessions.jsonl      one line per session started: participant, algorithm, protocol, the trial plan
    STUDY/trials.jsonl        one line per answered trial

Both ``.jsonl`` files are append-only: every record is written as one line under a lock, flushed and
``fsync``'ed before the answer is acknowledged, and never rewritten.  The server's state (who started, who
finished, the next unanswered trial of each participant) is rebuilt from them on start, so a server restarted
in the middle of a session continues it without losing or repeating a trial.
"""
from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

MANIFEST = "study.json"
SESSIONS = "sessions.jsonl"
TRIALS = "trials.jsonl"
FORMAT = "colorization-turing-study"
SIZE = 256  # the paper's 256 x 256 display size

# the paper (Sec. 3.1, Table 1): 10 practice trials with feedback, 40 test trials, 1 s display
PAPER_PRACTICE = 10
PAPER_TEST = 40
PAPER_DISPLAY_MS = 1000
PAPER_LABELLED_REAL = 32.3  # "Ours (full)", % of test trials whose recolorization was labelled real

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SIDES = ("left", "right")


class StudyError(Exception):
    """A study folder that cannot be used (the message names the file and what is wrong)."""


class Rejected(Exception):
    """A request the server refuses without changing anything; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"{kind} {name!r}: use 1-64 letters, digits, '_', '.' or '-' (starting with a letter "
                         f"or digit)")
    return name


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


def load_manifest(study: Path) -> dict:
    path = Path(study) / MANIFEST
    if not path.is_file():
        raise StudyError(f"{path}: no study manifest (create the study with `turing_test.py prepare`)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StudyError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StudyError(f"{path}: not a Turing-test study manifest (field 'format' must be {FORMAT!r})")
    for key in ("images", "algorithms"):
        if not isinstance(m.get(key), list):
            raise StudyError(f"{path}: field '{key}' must be a list")
    return m


def write_manifest(study: Path, manifest: dict) -> None:
    from torchcaffe.protoio import atomic_write

    with atomic_write(Path(study) / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def read_jsonl(path: Path) -> List[dict]:
    """The records of an append-only log; a torn last line (a crash during a write) is skipped, a corrupt line
    elsewhere is an error naming the file and line."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError as e:
            if i == len(lines) - 1:  # no newline after it: an interrupted append
                continue
            raise StudyError(f"{path}:{i + 1}: not a JSON record ({e})") from None
        out.append(rec)
    return out


class AppendLog:
    """An append-only JSON-lines file: each record is one line, flushed and fsync'ed before returning."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and _last_byte(self.path) != b"\n":
                line = b"\n" + line  # never glue a record to a torn line left by a crash
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new file's directory entry is durable too
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def set_aside_torn_tail(path: Path) -> None:
    """A log whose last line has no newline was cut by a crash during an append (that answer was never
    acknowledged): move the fragment to ``PATH.torn`` (kept for inspection) so the log ends with a whole line."""
    if not path.exists() or path.stat().st_size == 0 or _last_byte(path) == b"\n":
        return
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    with open(str(path) + ".torn", "ab") as f:
        f.write(data[cut:] + b"\n")
        f.flush()
        os.fsync(f.fileno())
    with open(path, "r+b") as f:
        f.truncate(cut)
        os.fsync(f.fileno())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


@dataclass
class Protocol:
    """Counts and timings of one session (the paper's by default)."""

    practice: int = PAPER_PRACTICE
    test: int = PAPER_TEST
    display_ms: int = PAPER_DISPLAY_MS
    feedback_ms: int = 1000

    def check(self) -> "Protocol":
        if self.practice < 0 or self.test < 1:
            raise ValueError("a session needs at least one test trial and no negative practice count")
        if self.display_ms < 1 or self.feedback_ms < 0:
            raise ValueError("display time must be at least 1 ms and feedback time non-negative")
        return self

    @property
    def trials(self) -> int:
        return self.practice + self.test

    def is_paper(self) -> bool:
        return (self.practice, self.test, self.display_ms) == (PAPER_PRACTICE, PAPER_TEST, PAPER_DISPLAY_MS)


@dataclass
class Session:
    record: dict
    answers: List[dict] = field(default_factory=list)

    @property
    def n_trials(self) -> int:
        return len(self.record["plan"])

    @property
    def next(self) -> int:
        return len(self.answers)

    @property
    def done(self) -> bool:
        return self.next >= self.n_trials


class Study:
    """A prepared study with its sessions; thread-safe (one lock around every state change and append)."""

    def __init__(self, path, protocol: Optional[Protocol] = None, seed: int = 0):
        self.path = Path(path)
        self.manifest = load_manifest(self.path)
        self.protocol = (protocol or Protocol()).check()
        self.seed = seed
        self.images: List[str] = list(self.manifest["images"])
        self.algorithms: List[str] = [a["name"] for a in self.manifest["algorithms"]]
        if not self.algorithms:
            raise StudyError(f"{self.path / MANIFEST}: no algorithm prepared yet")
        for a in self.algorithms:
            for i in self.images:
                for p in (self.image_path("real", i), self.image_path(a, i)):
                    if not p.is_file():
                        raise StudyError(f"{p}: missing (the study folder is incomplete; rerun prepare)")
        self.lock = threading.Lock()
        self.sessions_log = AppendLog(self.path / SESSIONS)
        self.trials_log = AppendLog(self.path / TRIALS)
        self.sessions: Dict[str, Session] = {}
        for log in (self.sessions_log, self.trials_log):
            set_aside_torn_tail(log.path)
        for rec in read_jsonl(self.path / SESSIONS):
            self.sessions[rec["participant"]] = Session(rec)
        for rec in read_jsonl(self.path / TRIALS):
            s = self.sessions.get(rec.get("participant"))
            if s is None or rec.get("trial") != s.next:
                raise StudyError(f"{self.path / TRIALS}: record for participant {rec.get('participant')!r} trial "
                                 f"{rec.get('trial')!r} does not follow {SESSIONS}")
            s.answers.append(rec)

    def image_path(self, algorithm: str, image: str) -> Path:
        sub = Path("real") if algorithm == "real" else Path("fake") / algorithm
        return self.path / sub / f"{image}.png"

    # -- sessions ------------------------------------------------------------------------------------------
    def _choose_algorithm(self) -> str:
        """The algorithm with the fewest sessions started; ties go to the manifest's order."""
        counts = {a: 0 for a in self.algorithms}
        for s in self.sessions.values():
            if s.record["algorithm"] in counts:
                counts[s.record["algorithm"]] += 1
        return min(self.algorithms, key=lambda a: (counts[a], self.algorithms.index(a)))

    def _plan(self, participant: str, protocol: Protocol) -> List[dict]:
        n = protocol.trials
        if n > len(self.images):
            raise Rejected(503, f"the study has {len(self.images)} photos; a session of {n} trials needs as many "
                                f"distinct photos")
        rng = random.Random(f"{self.seed}:{participant}")
        images = rng.sample(self.images, n)
        return [{"image": im, "fake_side": rng.choice(SIDES), "practice": k < protocol.practice}
                for k, im in enumerate(images)]

    def start(self, participant) -> Session:
        """Start a session for ``participant``, or return the unfinished one it already has."""
        try:
            check_name("participant id", participant)
        except ValueError as e:
            raise Rejected(400, str(e)) from None
        with self.lock:
            s = self.sessions.get(participant)
            if s is not None:
                if s.done:
                    raise Rejected(409, f"participant {participant!r} has already completed a session; "
                                        f"each participant takes part once")
                return s
            p = self.protocol
            rec = {"participant": participant, "algorithm": self._choose_algorithm(), "started": now_iso(),
                   "practice": p.practice, "test": p.test, "display_ms": p.display_ms,
                   "feedback_ms": p.feedback_ms, "plan": self._plan(participant, p)}
            self.sessions_log.append(rec)
            s = self.sessions[participant] = Session(rec)
            return s

    def session(self, participant) -> Session:
        s = self.sessions.get(participant) if isinstance(participant, str) else None
        if s is None:
            raise Rejected(404, f"no session for participant {participant!r}; start one first")
        return s

    def current_image(self, participant: str, trial: int, side: str) -> Path:
        """The image shown on ``side`` of the participant's current (first unanswered) trial."""
        s = self.session(participant)
        if side not in SIDES or trial != s.next or s.done:
            raise Rejected(404, "only the current trial's two images can be fetched")
        t = s.record["plan"][trial]
        return self.image_path(s.record["algorithm"] if side == t["fake_side"] else "real", t["image"])

    def answer(self, body) -> dict:
        """Record one answer: ``{"participant", "trial", "choice": "left"|"right", "display_ms", "response_ms"}``.

        The trial must be the participant's next unanswered one: an answer to an earlier trial (a replay, a
        double click, a resubmission after a reload) is refused with 409, as is one to a later trial."""
        if not isinstance(body, dict):
            raise Rejected(400, "the body must be a JSON object")
        unknown = set(body) - {"participant", "trial", "choice", "display_ms", "response_ms"}
        if unknown:
            raise Rejected(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        trial, choice = body.get("trial"), body.get("choice")
        if type(trial) is not int:
            raise Rejected(400, "field 'trial' must be an integer")
        if choice not in SIDES:
            raise Rejected(400, "field 'choice' must be 'left' or 'right'")
        times = {}
        for key in ("display_ms", "response_ms"):
            v = body.get(key)
            if type(v) not in (int, float) or not (0 <= v < 1e9):
                raise Rejected(400, f"field '{key}' must be a non-negative number of milliseconds")
            times[key] = round(float(v), 1)
        with self.lock:
            s = self.session(body.get("participant"))
            if s.done:
                raise Rejected(409, f"participant {s.record['participant']!r} has already completed the session")
            if trial < s.next:
                raise Rejected(409, f"trial {trial} is already answered (the next is {s.next}); nothing recorded")
            if trial != s.next:
                raise Rejected(409, f"trial {trial} is not the current trial ({s.next}); nothing recorded")
            t = s.record["plan"][trial]
            rec = {"participant": s.record["participant"], "algorithm": s.record["algorithm"], "trial": trial,
                   "practice": t["practice"], "image": t["image"], "fake_side": t["fake_side"],
                   "sides": {side: (s.record["algorithm"] if side == t["fake_side"] else "real")
                             for side in SIDES},
                   "choice": choice, "labelled_real": choice != t["fake_side"], **times, "received": now_iso()}
            self.trials_log.append(rec)
            s.answers.append(rec)
            return {"trial": trial, "next": s.next, "done": s.done,
                    "feedback": (("right" if choice == t["fake_side"] else "wrong") if t["practice"] else None)}

    def state(self, s: Session) -> dict:
        """What the page needs (nothing that says which side is fake or which algorithm is tested)."""
        r = s.record
        return {"participant": r["participant"], "trials": s.n_trials, "practice": r["practice"],
                "next": s.next, "done": s.done, "display_ms": r["display_ms"], "feedback_ms": r["feedback_ms"]}
