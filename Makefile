# `make demo` runs the whole pipeline on generated demo data; `make test` runs the tests.
# Both create .venv and install the requirements first, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed
	$(PY) make_demo_data.py --out_dir raw_data --with_500hz
	$(PY) preprocess.py --input_dir raw_data --meta_csv labels.csv --out_dir results/baseline --length 5000 --test_frac 0.1 --val_frac 0.1

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf raw_data results baseline_ckpt pdd_ckpt
