"""colorization.vgg_analysis (tools/vgg_analysis.py): the seed's Section 4 on a synthetic classifier output whose
per-category accuracies, confusions, top entries and orderings are worked out by hand, and end to end on the
tiny classifier of eval_helpers (figures, CSVs and the HTML page)."""
import csv
import json

import numpy as np
import pytest

from colorization import evaluate as ev
from colorization import vgg_analysis as va
from colorization.report import check_html
from eval_helpers import CLASSES, Setup

# Five images, four categories (3 has no image); top-2 lists keep the arithmetic small.
LABELS = np.array([0, 0, 1, 1, 2])
ORIG = np.array([[0, 1], [0, 2], [1, 0], [1, 2], [2, 3]])
RECOLOR = np.array([[1, 2], [0, 2], [1, 3], [3, 0], [2, 3]])
GRAY = np.array([[1, 3], [2, 3], [1, 0], [0, 2], [3, 1]])
NAN = np.nan


def test_per_category_accuracy_by_hand():
    a_orig, counts = va.category_accuracy(LABELS, ORIG, 4)
    a_recolor, _ = va.category_accuracy(LABELS, RECOLOR, 4)
    a_gray, _ = va.category_accuracy(LABELS, GRAY, 4)
    np.testing.assert_array_equal(counts, [2, 2, 1, 0])
    np.testing.assert_array_equal(a_orig, [1, 1, 1, NAN])
    # category 0: image 0 misses 0 after recolorization, image 1 keeps it; category 1: image 3 loses it
    np.testing.assert_array_equal(a_recolor, [0.5, 0.5, 1, NAN])
    np.testing.assert_array_equal(a_gray, [0, 0.5, 0, NAN])
    # a_recolor - a_gray = [0.5, 0, 1]: category 2 first, then 0, then 1; category 3 (no images) left out
    np.testing.assert_array_equal(va.sort_categories(a_gray, a_recolor), [2, 0, 1])
    # ties keep the lower index first
    np.testing.assert_array_equal(va.sort_categories([0, 0, 0.2], [0.5, 0.5, 0.2]), [0, 1, 2])


def test_confusion_rates_and_top_entries_by_hand():
    c_orig, _ = va.confusion_rates(LABELS, ORIG, 4)
    c_recolor, _ = va.confusion_rates(LABELS, RECOLOR, 4)
    np.testing.assert_array_equal(c_orig, [[1, .5, .5, 0], [.5, 1, .5, 0], [0, 0, 1, 1], [NAN] * 4])
    np.testing.assert_array_equal(c_recolor, [[.5, .5, 1, 0], [.5, .5, 0, 1], [0, 0, 1, 1], [NAN] * 4])
    # A = C_recolor - C_orig off the diagonal: (1, 3) +1, (0, 2) +0.5, six zeros, (1, 2) -0.5
    top = va.top_confusions(c_orig, c_recolor, k=4)
    assert [(c, d, a) for c, d, a, _, _ in top] == [(1, 3, 1.0), (0, 2, 0.5), (0, 1, 0.0), (0, 3, 0.0)]
    assert top[0][3:] == (0.0, 1.0)
    everything = va.top_confusions(c_orig, c_recolor, k=100)
    assert len(everything) == 9 and everything[-1][:3] == (1, 2, -0.5)


def test_new_confusion_images_sorted_by_score():
    scores = np.array([[.5, .3], [.6, .2], [.7, .2], [.6, .3], [.8, .1]])  # scores of RECOLOR's entries
    # (1, 3): images 2 and 3 gain 3 after recolorization; image 3 scores it 0.6, image 2 0.2
    np.testing.assert_array_equal(va.new_confusion_images(LABELS, ORIG, RECOLOR, scores, 1, 3), [3, 2])
    # (0, 2): image 0 gains 2; image 1 had it already
    np.testing.assert_array_equal(va.new_confusion_images(LABELS, ORIG, RECOLOR, scores, 0, 2), [0])
    assert len(va.new_confusion_images(LABELS, ORIG, RECOLOR, scores, 2, 3)) == 0


def test_category_example_order_by_hand():
    labels = np.array([5, 5, 5, 4])
    rank_recolor = np.array([1, 1, 0, 0])
    rank_gray = np.array([0, 2, 1, 0])
    # ascending recolor rank: image 2 (rank 0); images 0 and 1 tie at 1: descending gray rank puts 1 first
    np.testing.assert_array_equal(va.category_examples(labels, rank_recolor, rank_gray, 5, top=True), [2, 1, 0])
    np.testing.assert_array_equal(va.category_examples(labels, rank_recolor, rank_gray, 5, top=False), [0, 1, 2])


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    s = Setup(tmp_path_factory.mktemp("vgg"))
    out = s.folder / "eval.json"
    assert ev.main(s.argv(out, "--chunk", 4)) == 0
    dest = s.folder / "analysis"
    assert va.main(["--cache", str(s.folder / "eval.cache"), "--out", str(dest), "--html", str(dest),
                    "--synsets", str(s.synsets), "--highlight", "2", "--top-pairs", "10", "--grid-pairs", "3",
                    "--no-progress"]) == 0
    return s, dest


def test_end_to_end_outputs(analysed):
    s, dest = analysed
    res = ev.load_cache(s.folder / "eval.cache")
    K = len(CLASSES)
    with open(dest / "categories.csv") as f:
        cats = list(csv.DictReader(f))
    # brute force from the cached top-5 lists, one image at a time
    for row in cats:
        c = int(row["category"])
        imgs = [i for i in range(len(res)) if res.labels[i] == c]
        for col, v in (("a_gray", 1), ("a_recolor", 0), ("a_orig", 2)):
            assert float(row[col]) == pytest.approx(np.mean([c in res.top5[i, v] for i in imgs]), abs=1e-6)
        assert row["name"] == CLASSES[c] and int(row["images"]) == len(imgs)
    diffs = [float(r["a_recolor_minus_a_gray"]) for r in cats]
    assert diffs == sorted(diffs, reverse=True)
    assert sorted(int(r["category"]) for r in cats) == sorted(set(res.labels.tolist()))
    with open(dest / "confusions.csv") as f:
        conf = list(csv.DictReader(f))
    assert len(conf) == 10
    for row in conf:
        c, d = int(row["category"]), int(row["confused_with"])
        imgs = [i for i in range(len(res)) if res.labels[i] == c]
        cr = np.mean([d in res.top5[i, 0] for i in imgs])
        co = np.mean([d in res.top5[i, 2] for i in imgs])
        assert c != d and float(row["A"]) == pytest.approx(cr - co, abs=1e-6)
        assert int(row["new_images"]) == sum(d in res.top5[i, 0] and d not in res.top5[i, 2] for i in imgs)
    a = [float(r["A"]) for r in conf]
    assert a == sorted(a, reverse=True)
    summary = json.loads((dest / "analysis.json").read_text())
    assert summary["categories"] == K and summary["images"] == len(s.items)
    n_grids = min(3, sum(int(r["new_images"]) > 0 for r in conf))
    assert len(list(dest.glob("fig3_pair_*.png"))) == n_grids
    for png in ["fig1_category_accuracy.png", "fig2_confusions.png"]:
        assert (dest / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_page(analysed):
    _, dest = analysed
    page = (dest / "report.html").read_text()
    assert check_html(page) == []
    assert "(Figure 1)" in page and "(Figures 2 and 3)" in page and page.count("data:image/png;base64,") >= 2


def test_needs_classifier_results(tmp_path, capsys):
    s = Setup(tmp_path)
    assert ev.main(s.argv(tmp_path / "e.json", "--limit", 2, classifier=False)) == 0
    capsys.readouterr()
    assert va.main(["--cache", str(tmp_path / "e.cache"), "--out", str(tmp_path / "a"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vgg_analysis: ") and "classifier" in err and "\n" not in err
