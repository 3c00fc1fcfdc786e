"""``turing_test.py report``: the paper's "labelled real" score of each algorithm, with a bootstrap interval.

Score (the paper, Sec. 3.1): the percentage of test trials (practice excluded) in which the participant
picked the ground-truth photo as the fake one, i.e. labelled the recolorization real.  Pooled over trials:
``100 * sum(fooled) / sum(test trials)``.  Only completed sessions count (an abandoned session is listed as
incomplete and left out, as the paper analysed finished sessions).

95 % confidence interval: a percentile bootstrap over participants (participants, not trials, are the
independent units): ``resamples`` (default 10,000) samples of the participants with replacement, drawn by
NumPy's PCG64 generator seeded with ``seed`` (default 0), the pooled score of each, and its 2.5th and 97.5th
percentiles (NumPy's linear interpolation).  The paper's 32.3 % (its full method) is shown beside each score.
"""
from __future__ import annotations

import json
import math
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .study import PAPER_LABELLED_REAL, SESSIONS, TRIALS, StudyError, load_manifest, read_jsonl

DEFAULT_RESAMPLES = 10000


def bootstrap_ci(fooled: Sequence[int], trials: Sequence[int], resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0, level: float = 0.95) -> Tuple[float, float]:
    """Percentile-bootstrap interval (in %) of ``100 * sum(fooled) / sum(trials)``, resampling participants."""
    f = np.asarray(fooled, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if f.size == 0 or n.sum() == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    step = max(1, 2_000_000 // f.size)
    for a in range(0, resamples, step):
        idx = rng.integers(0, f.size, size=(min(step, resamples - a), f.size))
        stats[a:a + idx.shape[0]] = 100.0 * f[idx].sum(axis=1) / n[idx].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.percentile(stats, [100 * alpha, 100 * (1 - alpha)])
    return (float(lo), float(hi))


def load_results(study: Path) -> Tuple[dict, "OrderedDict[str, dict]"]:
    """The manifest and, per participant, the session record with its answered trials (in order)."""
    manifest = load_manifest(study)
    sessions: "OrderedDict[str, dict]" = OrderedDict()
    for rec in read_jsonl(study / SESSIONS):
        if "participant" not in rec or "algorithm" not in rec or not isinstance(rec.get("plan"), list):
            raise StudyError(f"{study / SESSIONS}: a session record lacks participant, algorithm or plan")
        sessions[rec["participant"]] = {**rec, "answers": []}
    for rec in read_jsonl(study / TRIALS):
        s = sessions.get(rec.get("participant"))
        if s is None or rec.get("trial") != len(s["answers"]):
            raise StudyError(f"{study / TRIALS}: record for participant {rec.get('participant')!r} trial "
                             f"{rec.get('trial')!r} does not follow {SESSIONS}")
        s["answers"].append(rec)
    return manifest, sessions


def summarize(manifest: dict, sessions: Dict[str, dict], resamples: int = DEFAULT_RESAMPLES,
              seed: int = 0) -> List[dict]:
    names = [a["name"] for a in manifest["algorithms"]]
    names += [n for n in dict.fromkeys(s["algorithm"] for s in sessions.values()) if n not in names]
    kinds = {a["name"]: a.get("kind") for a in manifest["algorithms"]}
    rows = []
    for name in names:
        mine = [s for s in sessions.values() if s["algorithm"] == name]
        done = [s for s in mine if len(s["answers"]) == len(s["plan"])]
        per = []
        for s in done:
            test = [a for a in s["answers"] if not a["practice"]]
            per.append({"participant": s["participant"], "test_trials": len(test),
                        "labelled_real": sum(bool(a["labelled_real"]) for a in test)})
        f = [p["labelled_real"] for p in per]
        n = [p["test_trials"] for p in per]
        score = 100.0 * sum(f) / sum(n) if sum(n) else math.nan
        lo, hi = bootstrap_ci(f, n, resamples, seed)
        protocols = sorted({(s["practice"], s["test"], s["display_ms"]) for s in done})
        rows.append({"algorithm": name, "kind": kinds.get(name), "participants": len(done),
                     "incomplete_sessions": len(mine) - len(done), "test_trials": sum(n),
                     "labelled_real": sum(f), "labelled_real_percent": score, "ci95": [lo, hi],
                     "paper_percent": PAPER_LABELLED_REAL,
                     "protocols": [{"practice": p, "test": t, "display_ms": d} for p, t, d in protocols],
                     "per_participant": per})
    return rows


def _fmt(x: float) -> str:
    return "   n/a" if x != x else f"{x:6.1f}"


def table(rows: List[dict]) -> str:
    head = (f"{'algorithm':<20} {'participants':>12} {'test trials':>11} {'labelled real %':>15} "
            f"{'95% CI (bootstrap)':>19} {'paper %':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lo, hi = r["ci95"]
        ci = "n/a" if lo != lo else f"[{lo:.1f}, {hi:.1f}]"
        lines.append(f"{r['algorithm']:<20} {r['participants']:>12} {r['test_trials']:>11} "
                     f"{_fmt(r['labelled_real_percent']):>15} {ci:>19} {r['paper_percent']:>8.1f}")
    lines.append("paper %: 'Ours (full)', Zhang et al. ECCV 2016, Table 1 (ground truth vs itself: 50 %).")
    for r in rows:
        if r["incomplete_sessions"]:
            lines.append(f"{r['algorithm']}: {r['incomplete_sessions']} incomplete session(s) left out")
        for p in r["protocols"]:
            if (p["practice"], p["test"], p["display_ms"]) != (10, 40, 1000):
                lines.append(f"{r['algorithm']}: sessions with {p['practice']} practice + {p['test']} test trials "
                             f"and {p['display_ms']} ms display, not the paper's 10 + 40 and 1000 ms")
    return "\n".join(lines)


def plot(row: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchcaffe.protoio import atomic_write

    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=100)
    per = [100.0 * p["labelled_real"] / p["test_trials"] for p in row["per_participant"] if p["test_trials"]]
    rng = np.random.default_rng(0)
    if per:
        ax.scatter(0.25 + 0.1 * rng.uniform(-1, 1, len(per)), per, s=12, color="0.55", label="participants")
    score, (lo, hi) = row["labelled_real_percent"], row["ci95"]
    if score == score:
        ax.errorbar([0], [score], yerr=[[score - lo], [hi - score]], fmt="o", color="C0", capsize=6,
                    label=f"{score:.1f} % (95 % CI {lo:.1f}-{hi:.1f})")
    ax.axhline(row["paper_percent"], color="C3", ls="--", label=f"paper, full method: {row['paper_percent']} %")
    ax.axhline(50, color="k", ls=":", lw=1, label="chance: 50 %")
    ax.set_xlim(-0.5, 0.6)
    ax.set_xticks([])
    ax.set_ylim(0, 100)
    ax.set_ylabel("labelled real (% of test trials)")
    ax.set_title(f"{row['algorithm']}: {row['participants']} participants, {row['test_trials']} test trials", fontsize=10)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def run(args) -> int:
    study = Path(args.study)
    manifest, sessions = load_results(study)
    rows = summarize(manifest, sessions, args.resamples, args.seed)
    out = Path(args.out) if args.out else study / "report"
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        r["plot"] = str(out / f"{r['algorithm']}.png")
        plot(r, Path(r["plot"]))
    result = {"study": str(study.resolve()), "bootstrap": {"resamples": args.resamples, "seed": args.seed,
                                                           "level": 0.95, "unit": "participant",
                                                           "method": "percentile"},
              "paper": {"labelled_real_percent": PAPER_LABELLED_REAL, "method": "Ours (full)",
                        "source": "Zhang, Isola, Efros, ECCV 2016, Sec. 3.1 and Table 1"},
              "algorithms": rows}
    from torchcaffe.protoio import atomic_write

    with atomic_write(out / "report.json", "w") as f:
        f.write(json.dumps(_nan_to_none(result), indent=1))
        f.write("\n")
    print(table(rows))
    print(f"JSON: {out / 'report.json'}; plots: {', '.join(r['plot'] for r in rows)}", file=sys.stderr)
    return 0


def _nan_to_none(obj):
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj
