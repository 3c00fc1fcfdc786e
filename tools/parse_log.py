#!/usr/bin/env python3
"""Parse a Caffe training log (glog lines from ``caffe train``) into train and test CSV tables.

Same output as BVLC Caffe's ``tools/extra/parse_log.py``: ``<log name>.train`` and ``<log name>.test`` in
the output directory, comma-separated (``--delimiter``), with the columns ``NumIters``, ``Seconds``,
``LearningRate`` and then one column per net output (``loss``, ``accuracy``...) in the order the log
prints them.  ``Seconds`` counts from the line that says ``Solving``; the year comes from the log file's
change time, as Caffe's ``extract_seconds.py`` does (glog lines carry no year).

Usage: ``python tools/parse_log.py LOGFILE OUTPUT_DIR [--delimiter ,] [--verbose]``; or, from Python,
``train_rows, test_rows = parse_log(path)`` (lists of OrderedDicts).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import re
from collections import OrderedDict
from typing import Iterable, List, Optional, Tuple

__all__ = ["parse_log", "parse_lines", "save_csv_files", "line_datetime"]

_ITERATION = re.compile(r"Iteration (\d+)")
_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+|[-+]?nan|[-+]?inf)")
_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+|[-+]?nan|[-+]?inf)")
_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
_GLOG = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})\s")


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


def parse_log(path: str) -> Tuple[List[OrderedDict], List[OrderedDict]]:
    """Parse the log file at ``path``; returns ``(train_rows, test_rows)``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_lines(f, _log_year(path))


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
    train_path = os.path.join(output_dir, base + ".train")
    test_path = os.path.join(output_dir, base + ".test")
    _write_csv(train_path, train_rows, delimiter)
    _write_csv(test_path, test_rows, delimiter)
    if verbose:
        print(f"Wrote {train_path}")
        print(f"Wrote {test_path}")
    return train_path, test_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Parse a Caffe training log into train and test CSV files")
    ap.add_argument("logfile_path", help="the log file")
    ap.add_argument("output_dir", help="directory for <log>.train and <log>.test")
    ap.add_argument("--verbose", action="store_true", help="print the files written")
    ap.add_argument("--delimiter", default=",", help="column delimiter (default ',')")
    args = ap.parse_args(argv)
    train_rows, test_rows = parse_log(args.logfile_path)
    save_csv_files(args.logfile_path, args.output_dir, train_rows, test_rows, args.delimiter, args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
