"""Log lines in glog's format (what Caffe's log parsers expect)."""
import datetime
import io
import re

from torchcaffe import glog


def test_line_format_matches_glog():
    when = datetime.datetime(2016, 11, 26, 12, 0, 0, 123456)
    line = glog.format_line(glog.INFO, "Iteration 100, lr = 3e-05", "sgd_solver.cpp:106", when, 1234)
    assert line == "I1126 12:00:00.123456  1234 sgd_solver.cpp:106] Iteration 100, lr = 3e-05"
    assert glog.format_line(glog.WARNING, "w", "x.cpp:1", when, 123456).startswith("W1126 12:00:00.123456 123456 ")
    assert glog.format_line(glog.FATAL, "f", "x.cpp:1", when, 7)[0] == "F"


def test_numbers_print_as_cpp_ostream():
    assert glog.fmt(3e-05) == "3e-05"
    assert glog.fmt(6.8) == "6.8"
    assert glog.fmt(0.001) == "0.001"
    assert glog.fmt(1234567.0) == "1.23457e+06"
    assert glog.fmt(100) == "100"
    assert glog.fmt(float("nan")) == "nan"
    assert glog.fmt(2.0) == "2"


def test_levels_sinks_and_caller_location(capfd):
    sink = io.StringIO()
    level = glog.get_level()
    glog.add_sink(sink)
    try:
        glog.init(1)
        glog.info("dropped")
        glog.warning("kept")
        glog.set_level(0)
        glog.info("here")
    finally:
        glog.remove_sink(sink)
        glog.set_level(level)
    err = capfd.readouterr().err
    assert "dropped" not in err and "kept" in err
    lines = sink.getvalue().splitlines()
    assert len(lines) == 2
    assert re.match(r"^W\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ test_glog\.py:\d+\] kept$", lines[0])
    assert re.match(r"^I\d{4} .* test_glog\.py:\d+\] here$", lines[1])


def test_fatal_logs_then_raises(capfd):
    try:
        glog.fatal("Check failed: x", src="solver.cpp:1")
    except glog.FatalError as e:
        assert str(e) == "Check failed: x"
    else:  # pragma: no cover
        raise AssertionError("fatal must raise")
    assert "solver.cpp:1] Check failed: x" in capfd.readouterr().err


def test_log_dir_file(tmp_path, capfd):
    path = glog.log_to_dir(str(tmp_path), program="caffe")
    try:
        glog.info("into the file", src="caffe.cpp:1")
    finally:
        for s in list(glog._sinks):
            if getattr(s, "name", None) == path:
                glog.remove_sink(s)
                s.close()
    text = open(path).read()
    assert text.startswith("Log file created at: ")
    assert "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg" in text
    assert "caffe.cpp:1] into the file" in text
    assert (tmp_path / "caffe.INFO").exists()
