#!/usr/bin/env python3
"""The AuC half of ``tools/evaluate.py`` under its old name: the same command without a classifier.

    tools/evaluate_auc.py -prototxt P -caffemodel W -lmdb DIR [-prior F] [-batch N] [-limit N] [-gpu G]
"""
from colorization.evaluate import main

raise SystemExit(main())
