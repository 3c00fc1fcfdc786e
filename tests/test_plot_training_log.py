"""tools/plot_training_log.py draws a PNG from a caffe train log."""
import subprocess
import sys

from conftest import REPO

LOG = """I1126 12:00:00.000000  1 solver.cpp:57] Solving demo
I1126 12:00:01.000000  1 solver.cpp:218] Iteration 0 (0 iter/s, 0.1s/50 iters), loss = 6.5
I1126 12:00:01.000000  1 solver.cpp:237]     Train net output #0: loss = 6.5 (* 1 = 6.5 loss)
I1126 12:00:01.000000  1 sgd_solver.cpp:106] Iteration 0, lr = 0.001
I1126 12:00:02.000000  1 solver.cpp:218] Iteration 50 (50 iter/s, 1s/50 iters), loss = 5.5
I1126 12:00:02.000000  1 solver.cpp:237]     Train net output #0: loss = 5.5 (* 1 = 5.5 loss)
I1126 12:00:02.000000  1 sgd_solver.cpp:106] Iteration 50, lr = 0.001
I1126 12:00:03.000000  1 solver.cpp:337] Iteration 50, Testing net (#0)
I1126 12:00:03.000000  1 solver.cpp:404]     Test net output #0: loss = 5.9 (* 1 = 5.9 loss)
"""


def test_plot_writes_a_png(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    out = tmp_path / "loss.png"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "plot_training_log.py"), str(log), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    r = subprocess.run([sys.executable, str(REPO / "tools" / "plot_training_log.py"), str(empty), str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no 'Iteration' lines" in r.stderr
