"""The seed's Section 4 (VGG evaluation) end to end, from the per-image predictions that ``evaluate`` caches.

    vgg_analysis --cache OUT.cache --out DIR [--synsets synset_words.txt] [--html DIR]
    vgg_analysis --prototxt P --caffemodel W --lmdb VGG_SPLIT --classifier-prototxt C --classifier-caffemodel CW
                 --out DIR [...]                      # runs (or resumes) evaluate's pass first, into DIR/cache

The paper ran VGG16 on the last 48,000 ImageNet validation images (``tools/build_lmdb.py --split vgg``).

4.1 Classification performance: per category c the top-5 accuracy of the grayscale and the recolorized images,
    ``a_gray[c]`` and ``a_recolor[c]`` (the fraction of its images whose label is among the classifier's first
    five classes); categories sorted by ``a_recolor - a_gray`` (descending; ties by category index).  Figure 1:
    ``a_recolor`` against ``a_gray`` with the top and bottom ``--highlight`` (50) categories marked;
    ``categories.csv``.  Example rows for the top categories sort their images by ascending rank of the label
    for the recolorized image, ties by descending rank for the grayscale image; the bottom categories in the
    reverse order (where recolorization hurts).
4.2 Common confusions: the top-5 confusion rates ``C_orig`` (ground-truth colours) and ``C_recolor``,
    ``C[c, d]`` = the fraction of the images of c with d among the first five classes;
    ``A = C_recolor - C_orig``; its off-diagonal entries sorted (descending; ties by (c, d)); the top
    ``--top-pairs`` (100) in ``confusions.csv``.  Figure 2: all C x (C - 1) off-diagonal entries, ``C_recolor``
    against ``C_orig``, the top entries of A marked.  Figure 3: for the first ``--grid-pairs`` pairs (c, d),
    the images of c that have d in the top 5 after recolorization but not with their original colours, sorted
    by the recolorized image's score for d (descending): ground truth above recolorized.

Outputs in ``--out``: ``fig1_category_accuracy.png``, ``fig2_confusions.png``, ``fig3_pair_NNN.png``,
``categories.csv``, ``confusions.csv``, ``analysis.json``; with ``--html DIR`` the page ``DIR/report.html``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from colorization import evaluate as ev

# ---------------------------------------------------------------------------------------------------------
# The analysis on arrays (labels (n,), top5 (n, 5) class indices)
# ---------------------------------------------------------------------------------------------------------


def confusion_rates(labels, top5, num_classes: int):
    """``C (K, K)``: ``C[c, d]`` = fraction of the images labelled c with d among their ``top5``; rows of
    categories without images are NaN.  Also the image count per category ``(K,)``."""
    labels = np.asarray(labels)
    top5 = np.asarray(top5)
    keep = (labels >= 0) & (labels < num_classes)
    labels, top5 = labels[keep], top5[keep]
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.zeros((num_classes, num_classes))
    np.add.at(hits, (np.repeat(labels, top5.shape[1]), top5.reshape(-1)), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = hits / counts[:, None]
    rates[counts == 0] = np.nan
    return rates, counts.astype(np.int64)


def category_accuracy(labels, top5, num_classes: int):
    """Top-5 accuracy per category ``(K,)`` (NaN without images) and the counts: the diagonal of
    :func:`confusion_rates`."""
    rates, counts = confusion_rates(labels, top5, num_classes)
    return np.diagonal(rates).copy(), counts


def sort_categories(a_gray, a_recolor):
    """Categories with images, sorted by ``a_recolor - a_gray`` descending (ties: lower index first)."""
    diff = np.asarray(a_recolor) - np.asarray(a_gray)
    present = np.nonzero(~np.isnan(diff))[0]
    return present[np.lexsort((present, -diff[present]))]


def top_confusions(c_orig, c_recolor, k: int = 100):
    """The ``k`` largest off-diagonal entries of ``A = C_recolor - C_orig`` (rows with images), descending,
    ties by (c, d): a list of ``(c, d, A, C_orig, C_recolor)``."""
    A = np.asarray(c_recolor) - np.asarray(c_orig)
    K = A.shape[0]
    c, d = np.nonzero(~np.eye(K, dtype=bool) & ~np.isnan(A))
    vals = A[c, d]
    order = np.lexsort((d, c, -vals))[:k]
    return [(int(c[i]), int(d[i]), float(vals[i]), float(c_orig[c[i], d[i]]), float(c_recolor[c[i], d[i]]))
            for i in order]


def new_confusion_images(labels, top5_orig, top5_recolor, score_recolor, c: int, d: int):
    """Indices of the images labelled c with d in the recolorized top 5 but not in the original's, sorted by the
    recolorized image's score for d (descending; ties by index)."""
    labels = np.asarray(labels)
    has_r = (np.asarray(top5_recolor) == d)
    idx = np.nonzero((labels == c) & has_r.any(axis=1) & ~(np.asarray(top5_orig) == d).any(axis=1))[0]
    score = np.asarray(score_recolor)[idx][has_r[idx]]  # the score of d, one per image
    return idx[np.lexsort((idx, -score))]


def category_examples(labels, rank_recolor, rank_gray, c: int, top: bool = True):
    """The images of category c in the seed's order: ascending rank of the label for the recolorized image,
    ties by descending rank for the grayscale image (then by index); reversed for a bottom category."""
    labels = np.asarray(labels)
    idx = np.nonzero(labels == c)[0]
    order = idx[np.lexsort((idx, -np.asarray(rank_gray)[idx], np.asarray(rank_recolor)[idx]))]
    return order if top else order[::-1]


# ---------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    return buf.getvalue()


def figure1(a_gray, a_recolor, order, highlight: int = 50) -> bytes:
    """Per-category top-5 accuracy, recolorized against grayscale (seed Fig. 1)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    g, r = 100 * np.asarray(a_gray), 100 * np.asarray(a_recolor)
    ax.scatter(g[order], r[order], s=6, c="0.6", label="categories", rasterized=True)
    h = min(highlight, len(order) // 2)
    if h:
        top, bottom = order[:h], order[-h:]
        ax.scatter(g[top], r[top], s=12, c="tab:blue", label=f"top {h} (recolorized - gray)")
        ax.scatter(g[bottom], r[bottom], s=12, c="tab:red", label=f"bottom {h}")
    return _percent_scatter_png(fig, ax, "top-5 accuracy on grayscale images (%)",
                                "top-5 accuracy on recolorized images (%)", "Classification per category")


def figure2(c_orig, c_recolor, top) -> bytes:
    """All off-diagonal confusion rates, recolorized against original colours, the top entries of A marked
    (seed Fig. 2)."""
    plt = _plt()
    K = c_orig.shape[0]
    off = ~np.eye(K, dtype=bool) & ~np.isnan(c_orig)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(100 * c_orig[off], 100 * c_recolor[off], s=2, c="0.6", label=f"{int(off.sum())} off-diagonal entries",
               rasterized=True)
    if top:
        t = np.array([(c, d) for c, d, *_ in top])
        ax.scatter(100 * c_orig[t[:, 0], t[:, 1]], 100 * c_recolor[t[:, 0], t[:, 1]], s=10, c="tab:red",
                   label=f"top {len(top)} of A = C_recolor - C_orig")
    return _percent_scatter_png(fig, ax, "top-5 confusion rate, original colours (%)",
                                "top-5 confusion rate, recolorized (%)", "Category confusions")


def _percent_scatter_png(fig, ax, xlabel: str, ylabel: str, title: str) -> bytes:
    """Finish a scatter of percentages against percentages (the diagonal, 0-100 axes, labels, legend) as PNG."""
    ax.plot([0, 100], [0, 100], "k--", lw=0.8)
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def image_grid(top_row, bottom_row, titles, suptitle, row_labels=("ground truth", "recolorized")) -> bytes:
    """Two rows of RGB images (seed Fig. 3: ground truth above recolorized)."""
    import textwrap

    plt = _plt()
    m = max(len(top_row), 1)
    width = max(1.9 * m + 0.4, 4.0)
    suptitle = textwrap.fill(suptitle, int(width * 11))
    lines = suptitle.count("\n") + 1
    fig, axes = plt.subplots(2, m, figsize=(width, 4.0 + 0.18 * lines), squeeze=False)
    for j in range(m):
        for i, row in enumerate((top_row, bottom_row)):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j])
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=8)
        if j < len(titles):
            axes[0, j].set_title(titles[j], fontsize=7)
    fig.suptitle(suptitle, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.05 * lines))
    return _png(fig)


# ---------------------------------------------------------------------------------------------------------
# The analysis of evaluate's results
# ---------------------------------------------------------------------------------------------------------

def category_names(synsets, num_classes: int):
    """Display names (``synset_words.txt``: the first word after the wnid; ``synsets.txt``: the wnid) and
    wnids, in label order; None without a list."""
    if not synsets:
        return None, None
    lines = ev.read_synsets(synsets)
    if len(lines) < num_classes:
        raise ev.EvaluationError(f"{synsets}: {len(lines)} categories, but the classifier has {num_classes}")
    wnids = [ln.split(" ", 1)[0] for ln in lines]
    names = [ln.split(" ", 1)[1].split(",")[0].strip() if " " in ln else ln for ln in lines]
    return names, wnids


class Analysis:
    """Section 4 computed from :class:`colorization.evaluate.Results` (which must hold classifier results)."""

    def __init__(self, res, num_classes: int, highlight: int = 50, top_pairs: int = 100):
        self.res = res
        self.K = num_classes
        v = res.variant
        self.labels = res.labels
        self.top5 = {name: res.top5[:, v(name)] for name in ev.VARIANTS}
        self.c_orig, self.counts = confusion_rates(self.labels, self.top5["ground_truth"], self.K)
        self.c_recolor, _ = confusion_rates(self.labels, self.top5["model"], self.K)
        self.c_gray, _ = confusion_rates(self.labels, self.top5["gray"], self.K)
        self.a_gray = np.diagonal(self.c_gray).copy()
        self.a_recolor = np.diagonal(self.c_recolor).copy()
        self.a_orig = np.diagonal(self.c_orig).copy()
        self.order = sort_categories(self.a_gray, self.a_recolor)
        self.highlight = min(highlight, len(self.order) // 2)
        self.top = top_confusions(self.c_orig, self.c_recolor, top_pairs)

    def pair_images(self, c: int, d: int):
        r = self.res
        vm = r.variant("model")
        return new_confusion_images(self.labels, self.top5["ground_truth"], self.top5["model"],
                                    r.top5_score[:, vm], c, d)

    def category_rows(self, names=None, wnids=None):
        rank_of = {int(c): i for i, c in enumerate(self.order)}
        top = set(self.order[:self.highlight].tolist())
        bottom = set(self.order[len(self.order) - self.highlight:].tolist()) if self.highlight else set()
        rows = []
        for c in self.order:
            c = int(c)
            rows.append({"rank": rank_of[c] + 1, "category": c, "wnid": wnids[c] if wnids else "",
                         "name": names[c] if names else "", "images": int(self.counts[c]),
                         "a_gray": self.a_gray[c], "a_recolor": self.a_recolor[c], "a_orig": self.a_orig[c],
                         "a_recolor_minus_a_gray": self.a_recolor[c] - self.a_gray[c],
                         "group": "top" if c in top else "bottom" if c in bottom else ""})
        return rows

    def confusion_rows(self, names=None):
        rows = []
        for i, (c, d, a, co, cr) in enumerate(self.top, 1):
            rows.append({"rank": i, "category": c, "name": names[c] if names else "", "confused_with": d,
                         "confused_name": names[d] if names else "", "C_orig": co, "C_recolor": cr, "A": a,
                         "new_images": int(len(self.pair_images(c, d)))})
        return rows


def write_csv(path, rows, float_fmt="{:.6f}") -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: float_fmt.format(v) if isinstance(v, float) else v for k, v in r.items()})
    ev.atomic_write_text(path, buf.getvalue())


def _label(names, c):
    return f"{names[c]} ({c})" if names else str(c)


def pair_grids(an: Analysis, names, pairs: int, per_pair: int):
    """[(png, caption)] for the first ``pairs`` confusions (images recolorized again from the dataset)."""
    res = an.res
    out = []
    vm = res.variant("model")
    for rank, (c, d, a, co, cr) in enumerate(an.top[:pairs], 1):
        idx = an.pair_images(c, d)[:per_pair]
        if len(idx) == 0:
            continue
        ims = ev.example_images(res, idx)
        scores = [float(res.top5_score[i, vm][res.top5[i, vm] == d][0]) for i in idx]
        cap = (f"({rank}) ground truth: {_label(names, c)}; confused after recolorization: {_label(names, d)} "
               f"(top-5 rate {100 * co:.1f} % -> {100 * cr:.1f} %)")
        png = image_grid([x[3] for x in ims], [x[2] for x in ims], [f"{names[d] if names else d}: {s:.3f}"
                                                                    for s in scores], cap)
        out.append((png, cap))
    return out


def category_grids(an: Analysis, names, categories: int, per_category: int):
    """[(png, caption)]: gray above recolorized for the first and last ``categories`` categories, images in the
    seed's order."""
    res = an.res
    vm, vg = res.variant("model"), res.variant("gray")
    out = []
    n = min(categories, an.highlight)
    picks = [(c, True) for c in an.order[:n]] + [(c, False) for c in an.order[len(an.order) - n:]] if n else []
    for c, top in picks:
        c = int(c)
        idx = category_examples(an.labels, res.label_rank[:, vm], res.label_rank[:, vg], c, top)[:per_category]
        ims = ev.example_images(res, idx)
        titles = [f"rank {int(res.label_rank[i, vm]) + 1} / gray {int(res.label_rank[i, vg]) + 1}" for i in idx]
        cap = (f"{'top' if top else 'bottom'} category {_label(names, c)}: top-5 accuracy gray "
               f"{100 * an.a_gray[c]:.1f} %, recolorized {100 * an.a_recolor[c]:.1f} %")
        out.append((image_grid([x[1] for x in ims], [x[2] for x in ims], titles, cap,
                               ("grayscale", "recolorized")), cap))
    return out


def analyse(res, out_dir, synsets=None, html=None, highlight=50, top_pairs=100, grid_pairs=8, grid_images=6,
            category_examples_n=3):
    """Write the analysis (figures, CSVs, JSON; the HTML page with ``html``); returns the summary dict."""
    if not res.has_classifier:
        raise ev.EvaluationError("the VGG analysis needs classifier results: run evaluate with "
                                 "--classifier-prototxt and --classifier-caffemodel")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    K = getattr(res, "num_classes", None) or int(max(res.top5.max(), res.labels.max()) + 1)
    names, wnids = category_names(synsets, K)
    an = Analysis(res, K, highlight, top_pairs)
    cat_rows = an.category_rows(names, wnids)
    conf_rows = an.confusion_rows(names)
    write_csv(out / "categories.csv", cat_rows)
    write_csv(out / "confusions.csv", conf_rows)
    f1 = figure1(an.a_gray, an.a_recolor, an.order, an.highlight)
    f2 = figure2(an.c_orig, an.c_recolor, an.top)
    ev.atomic_write_bytes(out / "fig1_category_accuracy.png", f1)
    ev.atomic_write_bytes(out / "fig2_confusions.png", f2)
    grids = pair_grids(an, names, grid_pairs, grid_images)
    for i, (png, _) in enumerate(grids, 1):
        ev.atomic_write_bytes(out / f"fig3_pair_{i:03d}.png", png)
    present = an.order
    summary = {"images": int(len(res)), "labelled": int(an.counts.sum()), "categories": int(K),
               "categories_with_images": int(len(present)),
               "mean_top5": {name: float(np.nanmean(np.diagonal(rates)[present]))
                             for name, rates in (("gray", an.c_gray), ("recolorized", an.c_recolor),
                                                 ("ground_truth", an.c_orig))},
               "top_categories": [r["category"] for r in cat_rows[:an.highlight]],
               "bottom_categories": [r["category"] for r in cat_rows[len(cat_rows) - an.highlight:]]
               if an.highlight else [],
               "top_confusions": [[c, d, a] for c, d, a, _, _ in an.top]}
    ev.atomic_write_text(out / "analysis.json", json.dumps(summary, indent=1) + "\n")
    if html:
        from colorization import report

        rep = report.Report("VGG category analysis (supplementary Section 4)")
        rep.paragraph(f"{len(res)} images ({summary['labelled']} labelled) of {res.config['source']}, "
                      f"{len(present)} of {K} categories present; classifier {res.config['classifier_prototxt']}.")
        summary_eval = ev.summarize(res)
        ev.add_table1(rep, summary_eval, True)
        rep.heading("4.1 Classification performance per category (Figure 1)")
        rep.image(f1, "Top-5 accuracy per category, recolorized against grayscale; the top and bottom "
                      f"{an.highlight} categories by a_recolor - a_gray are marked.")
        show = cat_rows[:10] + (cat_rows[-10:] if len(cat_rows) > 20 else cat_rows[10:])
        rep.table(["rank", "category", "images", "a_gray (%)", "a_recolor (%)", "difference"],
                  [[r["rank"], _label(names, r["category"]), r["images"], f"{100 * r['a_gray']:.1f}",
                    f"{100 * r['a_recolor']:.1f}", f"{100 * r['a_recolor_minus_a_gray']:+.1f}"] for r in show])
        grids_c = category_grids(an, names, category_examples_n, grid_images)
        if grids_c:
            rep.paragraph("Examples of the top and bottom categories (grayscale above recolorized), sorted as in "
                          "the seed: ascending rank of the label for the recolorized image, ties by descending "
                          "rank for the grayscale image; reversed for the bottom categories.")
            for png, cap in grids_c:
                rep.image(png, cap)
        rep.heading("4.2 Common confusions (Figures 2 and 3)")
        rep.image(f2, f"Top-5 confusion rates, recolorized against original colours; the top {len(an.top)} "
                      "entries of A = C_recolor - C_orig are marked.")
        rep.table(["rank", "category", "confused with", "C_orig (%)", "C_recolor (%)", "A (%)", "new images"],
                  [[r["rank"], _label(names, r["category"]), _label(names, r["confused_with"]),
                    f"{100 * r['C_orig']:.1f}", f"{100 * r['C_recolor']:.1f}", f"{100 * r['A']:.1f}",
                    r["new_images"]] for r in conf_rows[:25]])
        for png, cap in grids:
            rep.image(png, cap)
        summary["html"] = str(rep.write(Path(html) / "report.html"))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="vgg_analysis", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_arguments(ap)
    ap.add_argument("--out", required=True, help="folder for the figures, CSVs and analysis.json")
    ap.add_argument("--synsets", help="category names: ILSVRC synset_words.txt (or synsets.txt), label order")
    ap.add_argument("--html", help="write the page DIR/report.html")
    ap.add_argument("--highlight", type=int, default=50, help="top/bottom categories marked (default 50)")
    ap.add_argument("--top-pairs", type=int, default=100, help="entries of A listed (default 100)")
    ap.add_argument("--grid-pairs", type=int, default=8, help="Figure-3 grids (default 8)")
    ap.add_argument("--grid-images", type=int, default=6, help="images per grid (default 6)")
    args = ap.parse_args(argv)
    with ev.quiet_runtime():
        return _main(args)


def _main(args) -> int:
    try:
        if args.cache and not args.caffemodel:  # the run that made the cache
            res = ev.open_results(args.cache, args.gpu)
        else:
            res = ev.run(args, args.cache or str(Path(args.out) / "cache"))
        s = analyse(res, args.out, args.synsets, args.html, args.highlight, args.top_pairs, args.grid_pairs,
                    args.grid_images)
    except ev.EvaluationError as e:
        print(f"vgg_analysis: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vgg_analysis: interrupted; run the same command again to resume from the cache", file=sys.stderr)
        return 130
    print(f"{s['images']} images, {s['categories_with_images']} categories; mean per-category top-5 accuracy: "
          + ", ".join(f"{k} {100 * v:.1f} %" for k, v in s["mean_top5"].items()))
    print(f"wrote {args.out}/ (fig1_category_accuracy.png, fig2_confusions.png, fig3_pair_*.png, categories.csv, "
          f"confusions.csv, analysis.json)")
    if "html" in s:
        print(f"report: {s['html']}")
    return 0
