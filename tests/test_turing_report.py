"""turing_test.py report: scores, counts and bootstrap intervals on hand-made answer logs."""
import json

import numpy as np
import pytest

from colorization.turing import main
from colorization.turing.report import bootstrap_ci, load_results, summarize
from colorization.turing.study import FORMAT


def write_study(folder, sessions):
    """A study folder by hand: ``sessions`` maps participant -> (algorithm, practice answers, test answers,
    finished?) with answers as 1 (labelled real: the ground truth was picked as fake) or 0."""
    folder.mkdir()
    images = [f"{i:05d}" for i in range(20)]
    (folder / "study.json").write_text(json.dumps({
        "format": FORMAT, "version": 1, "size": 256, "images": images,
        "algorithms": [{"name": "ours", "kind": "model"}, {"name": "gray", "kind": "gray"}]}))
    slines, tlines = [], []
    for who, (alg, practice, test, finished) in sessions.items():
        answers = practice + test
        n_plan = len(answers) + (0 if finished else 1)
        plan = [{"image": images[k], "fake_side": "left", "practice": k < len(practice)} for k in range(n_plan)]
        slines.append({"participant": who, "algorithm": alg, "practice": len(practice),
                       "test": n_plan - len(practice), "display_ms": 1000, "feedback_ms": 1000, "plan": plan})
        for k, real in enumerate(answers):
            tlines.append({"participant": who, "algorithm": alg, "trial": k, "practice": k < len(practice),
                           "image": images[k], "fake_side": "left", "choice": "right" if real else "left",
                           "labelled_real": bool(real), "display_ms": 1000.0, "response_ms": 700.0})
    tlines.sort(key=lambda r: r["trial"])  # interleaved participants, as a live server writes them
    (folder / "sessions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in slines))
    (folder / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tlines))
    return folder


HAND = {
    # ours: practice answers (all "labelled real") must not count; p1 1 of 4, p2 3 of 4 -> 4 / 8 = 50 %
    "p1": ("ours", [1, 1], [1, 0, 0, 0], True),
    "p2": ("ours", [1, 1], [1, 1, 0, 1], True),
    "p3": ("ours", [1, 1], [1, 1], False),          # abandoned: left out
    # gray: three identical participants, 1 of 4 each -> 25 %, and every resample is 25 % too
    "g1": ("gray", [0, 0], [0, 1, 0, 0], True),
    "g2": ("gray", [0, 0], [0, 0, 1, 0], True),
    "g3": ("gray", [1, 1], [0, 0, 0, 1], True),
}


def test_scores_counts_and_exact_intervals(tmp_path):
    manifest, sessions = load_results(write_study(tmp_path / "s", HAND))
    rows = {r["algorithm"]: r for r in summarize(manifest, sessions)}
    ours, gray = rows["ours"], rows["gray"]
    assert (ours["participants"], ours["test_trials"], ours["labelled_real"]) == (2, 8, 4)
    assert ours["incomplete_sessions"] == 1
    assert ours["labelled_real_percent"] == 50.0
    # two participants at 25 % and 75 %: the resampled score is 25, 50 or 75 % with probabilities 1/4, 1/2,
    # 1/4, so the 2.5th and 97.5th percentiles are exactly 25 and 75
    assert ours["ci95"] == [25.0, 75.0]
    assert (gray["participants"], gray["test_trials"], gray["labelled_real"]) == (3, 12, 3)
    assert gray["labelled_real_percent"] == 25.0 and gray["ci95"] == [25.0, 25.0]
    assert ours["paper_percent"] == 32.3
    assert [p["labelled_real"] for p in ours["per_participant"]] == [1, 3]


def test_pooling_weights_participants_by_their_trials():
    # 1 of 2 and 9 of 10: pooled 10 / 12, not the mean of 50 % and 90 %
    lo, hi = bootstrap_ci([5], [10])
    assert lo == hi == 50.0
    lo, hi = bootstrap_ci([1, 9], [2, 10], resamples=20000)
    # resamples: {1,1} -> 50 %, {9,9} -> 90 %, mixed -> 10/12: percentiles fall on the extremes
    assert lo == 50.0 and hi == 90.0
    # the median resample mixes the two: pooled 10 / 12 = 83.3 %, where averaging percentages would give 70 %
    med = bootstrap_ci([1, 9], [2, 10], resamples=20000, level=0.0)
    assert med == pytest.approx((100 * 10 / 12, 100 * 10 / 12))


def test_bootstrap_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    n = np.full(400, 40)
    f = rng.binomial(40, rng.uniform(0.1, 0.6, 400))
    lo, hi = bootstrap_ci(f, n, resamples=10000, seed=3)
    p = 100 * f / n
    se = p.std() / np.sqrt(len(p))  # the bootstrap's own standard error of a mean of 400 equal-size units
    mean = p.mean()
    assert abs(lo - (mean - 1.96 * se)) < 0.15 * se and abs(hi - (mean + 1.96 * se)) < 0.15 * se
    assert bootstrap_ci(f, n, seed=3) == (lo, hi)  # seeded: the same interval every time
    assert bootstrap_ci(f, n, seed=4) != (lo, hi)


def test_report_command_writes_table_json_and_plots(tmp_path, capsys):
    study = write_study(tmp_path / "s", HAND)
    assert main(["report", str(study)]) == 0
    out = capsys.readouterr().out
    assert "labelled real %" in out and "32.3" in out
    line = next(l for l in out.splitlines() if l.startswith("ours"))
    assert line.split()[1:5] == ["2", "8", "50.0", "[25.0,"]
    assert "ours: 1 incomplete session(s) left out" in out
    rep = json.loads((study / "report" / "report.json").read_text())
    assert rep["bootstrap"] == {"resamples": 10000, "seed": 0, "level": 0.95, "unit": "participant",
                                "method": "percentile"}
    assert [r["labelled_real_percent"] for r in rep["algorithms"]] == [50.0, 25.0]
    for r in rep["algorithms"]:
        png = (study / "report" / f"{r['algorithm']}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_sessions_and_bad_logs(tmp_path, capsys):
    study = write_study(tmp_path / "s", {})
    assert main(["report", str(study)]) == 0
    rep = json.loads((study / "report" / "report.json").read_text())
    assert rep["algorithms"][0]["participants"] == 0 and rep["algorithms"][0]["ci95"] == [None, None]
    (study / "trials.jsonl").write_text('{"participant": "ghost", "trial": 0}\n')
    assert main(["report", str(study)]) == 1
    assert "trials.jsonl: record for participant 'ghost'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "no study manifest" in capsys.readouterr().err


def test_protocol_other_than_the_papers_is_noted(tmp_path, capsys):
    assert main(["report", str(write_study(tmp_path / "s", HAND))]) == 0
    assert "not the paper's 10 + 40 and 1000 ms" in capsys.readouterr().out
