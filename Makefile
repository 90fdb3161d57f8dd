# `make demo` runs the whole pipeline on generated demo data; `make test` runs the tests.
# Both create .venv and install the requirements first, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-export.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The seed README's commands, in order, then the three resumed PDD stages and the comparison. Training refuses a
# --ckpt_dir holding a finished run, so a second demo stops before it starts, instead of half-way.
demo: $(VENV)/.installed
	@for dir in baseline_ckpt pdd_ckpt; do if [ -e $$dir ]; then echo "make demo: $$dir/ holds an earlier run, which training will not replace; run make clean first (it deletes results, baseline_ckpt, pdd_ckpt and the generated raw_data)" >&2; exit 2; fi; done
	$(PY) make_demo_data.py --out_dir raw_data --with_500hz
	$(PY) preprocess.py --input_dir raw_data --meta_csv labels.csv --out_dir results/baseline --length 5000 --test_frac 0.1 --val_frac 0.1
	$(PY) train_1d_baseline.py --data_dir results/baseline --epochs 30 --batch_size 32 --ckpt_dir baseline_ckpt --augment
	$(PY) compute_difficulty.py
	$(PY) pdd_split.py
	$(PY) pdd_folder_generator.py
	$(PY) train_1d_baseline.py --data_dir results/pdd/stage1 --ckpt_dir pdd_ckpt/stage1
	$(PY) train_1d_baseline.py --data_dir results/pdd/stage2 --ckpt_dir pdd_ckpt/stage2 --resume pdd_ckpt/stage1/last.pt
	$(PY) train_1d_baseline.py --data_dir results/pdd/stage3 --ckpt_dir pdd_ckpt/stage3 --resume pdd_ckpt/stage2/last.pt
	$(PY) tools/compare_runs.py baseline_ckpt pdd_ckpt/stage3

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The inner loop while changing code: everything but the tests marked slow (pytest.ini says which).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# raw_data/ goes only when it holds the generated demo set: the seed README puts a real PTB-XL there.
clean:
	@if [ -f raw_data/demo_dataset.json ]; then rm -rf raw_data; \
	elif [ -e raw_data ]; then echo "raw_data/ kept: it is not the generated demo data"; fi
	rm -rf results baseline_ckpt pdd_ckpt
