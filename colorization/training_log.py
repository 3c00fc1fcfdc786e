"""Parse a Caffe training log (glog lines from ``caffe train``) into train and test CSV tables.

Same output as BVLC Caffe's ``tools/extra/parse_log.py``: ``<log name>.train`` and ``<log name>.test`` in
the output directory, comma-separated (``--delimiter``), with the columns ``NumIters``, ``Seconds``,
``LearningRate`` and then one column per net output (``loss``, ``accuracy``...) in the order the log
prints them.  ``Seconds`` counts from the line that says ``Solving``; the year comes from the log file's
change time, as Caffe's ``extract_seconds.py`` does (glog lines carry no year).

Usage: ``python tools/parse_log.py LOGFILE OUTPUT_DIR [--delimiter ,] [--verbose]``; or, from Python,
``train_rows, test_rows = parse_log(path)`` (lists of OrderedDicts).

``python tools/plot_training_log.py LOG IMAGE [--output loss8_313]`` plots the train and test losses against
the iteration: every net output (each loss of the colorization net's four heads) gets a curve, train solid,
test dashed, unless ``--output`` picks some.

A missing or unreadable log, or a missing output folder, is one line naming it and exit status 1.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import re
import sys
from collections import OrderedDict
from typing import Iterable, List, Optional, Tuple

__all__ = ["parse_log", "parse_lines", "save_csv_files", "line_datetime", "parse_main", "plot_main",
           "LogError"]

_ITERATION = re.compile(r"Iteration (\d+)")
_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+|[-+]?nan|[-+]?inf)")
_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+|[-+]?nan|[-+]?inf)")
_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
_GLOG = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})\s")
_META = {"NumIters", "Seconds", "LearningRate"}


class LogError(OSError):
    """A log that cannot be read or an output that cannot be written: the message names the file."""


def line_datetime(line: str, year: int) -> Optional[datetime.datetime]:
    """The time stamp of a glog line (``I1126 12:00:00.123456 ...``) in ``year``; None for other lines."""
    m = _GLOG.match(line.strip())
    if not m:
        return None
    month, day, hour, minute, second, micro = (int(g) for g in m.groups())
    return datetime.datetime(year, month, day, hour, minute, second, micro)


def _log_year(path: str) -> int:
    return datetime.datetime.fromtimestamp(os.path.getctime(path)).year


def _add_output(regex, row, rows: list, line: str, iteration: float, seconds: float, lr: float):
    """Put one ``... net output #k: name = value`` into the current row; a row is complete when it has as
    many columns as the first row (then it is appended) or when the iteration changes."""
    m = regex.search(line)
    if m:
        if row is None or row["NumIters"] != iteration:
            if row is not None:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds), ("LearningRate", lr)])
        row[m.group(2)] = float(m.group(3))
    if row is not None and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row


def parse_lines(lines: Iterable[str], year: int) -> Tuple[List[OrderedDict], List[OrderedDict]]:
    """Parse log lines; returns ``(train_rows, test_rows)``."""
    lines = list(lines)
    start = None
    for line in lines:
        if "Solving" in line:
            start = line_datetime(line, year)
            if start is not None:
                break
    iteration = -1.0
    lr = float("nan")
    train_rows: List[OrderedDict] = []
    test_rows: List[OrderedDict] = []
    train_row = test_row = None
    last_time = start
    for line in lines:
        m = _ITERATION.search(line)
        if m:
            iteration = float(m.group(1))
        if iteration == -1:
            continue  # nothing counts before the first "Iteration" line
        when = line_datetime(line, year)
        if when is None:
            when = last_time  # a line that is not glog's (a Python warning...): keep the last time
        else:
            last_time = when
        if when is not None and start is not None:
            if when < start:  # the log crossed a new year
                when = when.replace(year=when.year + 1)
            seconds = (when - start).total_seconds()
        else:
            seconds = float("nan")
        m = _LEARNING_RATE.search(line)
        if m:
            lr = float(m.group(1))
        train_row = _add_output(_TRAIN_OUTPUT, train_row, train_rows, line, iteration, seconds, lr)
        test_row = _add_output(_TEST_OUTPUT, test_row, test_rows, line, iteration, seconds, lr)
    # rows still being filled at the end of the log
    for row, rows in ((train_row, train_rows), (test_row, test_rows)):
        if row is not None and (not rows or len(row) == len(rows[0])):
            rows.append(row)
    # The first rows come before any "lr = " line: take the rate of the second row, as Caffe's parser does.
    for rows in (train_rows, test_rows):
        if len(rows) > 1 and isinstance(rows[0]["LearningRate"], float) and math.isnan(rows[0]["LearningRate"]):
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train_rows, test_rows


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def parse_log(path: str) -> Tuple[List[OrderedDict], List[OrderedDict]]:
    """Parse the log file at ``path``; returns ``(train_rows, test_rows)``.  Raises :class:`LogError` naming
    the file when it cannot be read."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise LogError(f"{path}: is a directory, not a log file")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_lines(f, _log_year(path))
    except OSError as e:
        raise LogError(f"{path}: cannot read the log: {_why(e)}") from None


def _write_csv(path: str, rows: List[OrderedDict], delimiter: str) -> None:
    with open(path, "w", newline="") as f:
        if not rows:
            return
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()), delimiter=delimiter, lineterminator="\n",
                           extrasaction="ignore", restval="")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def save_csv_files(logfile_path: str, output_dir: str, train_rows, test_rows, delimiter: str = ",",
                   verbose: bool = False) -> Tuple[str, str]:
    """Write ``<output_dir>/<log basename>.train`` and ``.test``; returns their paths."""
    base = os.path.basename(logfile_path)
    if not os.path.isdir(output_dir):
        raise LogError(f"{output_dir}: the output folder does not exist" if not os.path.exists(output_dir)
                       else f"{output_dir}: the output folder is not a directory")
    train_path = os.path.join(output_dir, base + ".train")
    test_path = os.path.join(output_dir, base + ".test")
    for path, rows in ((train_path, train_rows), (test_path, test_rows)):
        try:
            _write_csv(path, rows, delimiter)
        except OSError as e:
            raise LogError(f"{path}: cannot write: {_why(e)}") from None
    if verbose:
        print(f"Wrote {train_path}")
        print(f"Wrote {test_path}")
    return train_path, test_path


def parse_main(argv=None) -> int:
    """``tools/parse_log.py LOGFILE OUTPUT_DIR``: the two CSV tables."""
    ap = argparse.ArgumentParser(prog="parse_log",
                                 description="Parse a Caffe training log into train and test CSV files")
    ap.add_argument("logfile_path", help="the log file")
    ap.add_argument("output_dir", help="directory for <log>.train and <log>.test")
    ap.add_argument("--verbose", action="store_true", help="print the files written")
    ap.add_argument("--delimiter", default=",", help="column delimiter (default ',')")
    args = ap.parse_args(argv)
    try:
        train_rows, test_rows = parse_log(args.logfile_path)
        save_csv_files(args.logfile_path, args.output_dir, train_rows, test_rows, args.delimiter, args.verbose)
    except LogError as e:
        print(f"parse_log: error: {e}", file=sys.stderr)
        return 1
    return 0


def plot_main(argv=None) -> int:
    """``tools/plot_training_log.py LOG IMAGE``: the loss curves as an image."""
    ap = argparse.ArgumentParser(prog="plot_training_log",
                                 description="Plot the train and test losses of a caffe train log")
    ap.add_argument("log")
    ap.add_argument("image", help="output image (.png, .pdf, .svg)")
    ap.add_argument("--output", action="append", help="net output(s) to plot (default: all)")
    args = ap.parse_args(argv)
    try:
        train, test = parse_log(args.log)
    except LogError as e:
        print(f"plot_training_log: error: {e}", file=sys.stderr)
        return 1
    if not train and not test:
        print(f"plot_training_log: error: {args.log}: no 'Iteration' lines with net outputs", file=sys.stderr)
        return 1
    folder = os.path.dirname(os.path.abspath(args.image))
    if not os.path.isdir(folder):
        print(f"plot_training_log: error: {args.image}: the output folder {os.path.dirname(args.image) or '.'} "
              f"does not exist", file=sys.stderr)
        return 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rows, style, phase in ((train, "-", "train"), (test, "--", "test")):
        names = [k for k in (rows[0].keys() if rows else []) if k not in _META]
        for name in names:
            if args.output and name not in args.output:
                continue
            pts = [(r["NumIters"], r[name]) for r in rows if r.get(name) is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=f"{phase} {name}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(os.path.basename(args.log))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(args.image, dpi=120)
    except (OSError, ValueError) as e:
        print(f"plot_training_log: error: {args.image}: cannot write: "
              f"{e.strerror if isinstance(e, OSError) and e.strerror else e}", file=sys.stderr)
        return 1
    finally:
        plt.close(fig)
    print(f"wrote {args.image}")
    return 0
