# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; set TORCH_SPEC=torch (or a CUDA wheel) on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test wheel bench prototxt clean

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# Ends by printing the path of demo_out/report.html (one offline page); `make demo DEMO_ARGS=--open` also opens it.
demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) tools/benchmark.py --json benchmark.json --markdown benchmark.md

# A wheel for `pip install` elsewhere (data and prototxt files inside; console commands cic-* and caffe).
wheel: install
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

prototxt: install
	$(PY) tools/make_prototxt.py

clean:
	rm -rf $(VENV) *.egg-info layers/*.egg-info demo_out build dist
