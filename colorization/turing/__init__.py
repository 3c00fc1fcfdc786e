"""The paper's colorization Turing test (Zhang, Isola, Efros, ECCV 2016, Sec. 3.1), run locally in a browser.

    turing_test.py prepare STUDY --images DIR --prototxt P --caffemodel W [--name NAME] [--gray]
    turing_test.py serve STUDY [--host 127.0.0.1] [--port 8000]
    turing_test.py report STUDY

The protocol: a two-alternative forced choice.  Each trial shows a ground-truth colour photo and a
recolorization of it by one algorithm side by side (random order, 256 x 256 each) for one second; then the
images disappear and the participant, with unlimited time, clicks the one with fake colours (or presses the
left / right arrow key).  A session is 10 practice trials with feedback (not analysed) and 40 test trials
without; it tests one algorithm (sessions are assigned to the algorithm with the fewest sessions so far);
a participant takes part once.  Score: the percentage of test trials whose recolorization was labelled real
(the paper: 32.3 % for its full method; ground truth against itself would score 50 %).
"""
from __future__ import annotations

import argparse
import sys

from .study import PAPER_DISPLAY_MS, PAPER_PRACTICE, PAPER_TEST, Protocol, Rejected, Study, StudyError

__all__ = ["main", "Study", "Protocol", "Rejected", "StudyError"]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="turing_test.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="write a study folder: ground truth, recolorizations, manifest")
    p.add_argument("study", help="the study folder (created; later calls add algorithms to it)")
    src = p.add_argument_group("photos (the first prepare of a study only)")
    src.add_argument("--images", metavar="DIR", help="a folder of photos (searched recursively)")
    src.add_argument("--lmdb", metavar="DIR", help="an LMDB of Datums (as build_lmdb.py writes them)")
    src.add_argument("--limit", type=int, default=0, help="use N photos, a random sample (seed --seed)")
    src.add_argument("--seed", type=int, default=0)
    alg = p.add_argument_group("algorithms")
    alg.add_argument("--prototxt", "-prototxt", help="a colorization deploy net (e.g. colorization_deploy_v2)")
    alg.add_argument("--caffemodel", "-caffemodel", help="its weights")
    alg.add_argument("--name", help="the model's name in the study (default: the weights' file name)")
    alg.add_argument("--gray", action="store_true", help="add the gray baseline (L only, a = b = 0)")
    alg.add_argument("--gray-name", default="gray", help="its name (default: gray)")
    alg.add_argument("--ground-truth", action="store_true",
                     help="add a control: the ground truth against itself (expected 50 %%)")
    alg.add_argument("--gpu", "-gpu", type=int, default=-1, help="CUDA device for the model; -1: CPU")
    p.add_argument("--quiet", action="store_true", help="no progress lines")

    s = sub.add_parser("serve", help="run the study's web page and record the answers")
    s.add_argument("study")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: localhost only; 0.0.0.0 for a lab network)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--practice", type=int, default=PAPER_PRACTICE, help="practice trials (paper: 10)")
    s.add_argument("--test", type=int, default=PAPER_TEST, help="test trials (paper: 40)")
    s.add_argument("--display-ms", type=int, default=PAPER_DISPLAY_MS, help="display time (paper: 1000 ms)")
    s.add_argument("--feedback-ms", type=int, default=1000, help="how long practice feedback is shown")
    s.add_argument("--seed", type=int, default=0, help="seeds each participant's photos and sides")
    s.add_argument("--quiet", action="store_true", help="do not log requests")

    r = sub.add_parser("report", help="score each algorithm: table, JSON and plots")
    r.add_argument("study")
    r.add_argument("--out", help="folder for report.json and the plots (default: STUDY/report)")
    r.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    r.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    return ap


def serve(args) -> int:
    from .server import make_server

    study = Study(args.study, Protocol(args.practice, args.test, args.display_ms, args.feedback_ms), args.seed)
    if study.protocol.trials > len(study.images):
        raise ValueError(f"{args.study}: {len(study.images)} photos; a session of {study.protocol.trials} trials "
                         f"needs as many distinct photos")
    server = make_server(study, args.host, args.port, quiet=args.quiet)
    host, port = server.server_address[:2]
    done = sum(s.done for s in study.sessions.values())
    print(f"serving {args.study} at http://{host}:{port}/  ({len(study.algorithms)} algorithms, "
          f"{len(study.images)} photos, {done} sessions completed, {len(study.sessions) - done} in progress; "
          f"answers go to {study.trials_log.path}); Ctrl-C stops", file=sys.stderr)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(f"note: bound to {host}: anyone who can reach this machine on port {port} can take part",
              file=sys.stderr)
    if not study.protocol.is_paper():
        print("note: the protocol differs from the paper's (10 practice + 40 test trials, 1000 ms)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "prepare":
            from .prepare import run
            return run(args)
        if args.command == "serve":
            return serve(args)
        from .report import run
        if args.resamples < 1:
            raise ValueError("--resamples must be at least 1")
        return run(args)
    except (StudyError, ValueError, OSError) as e:
        print(f"turing_test {args.command}: {e}", file=sys.stderr)
        return 1
