# `make demo` runs the whole pipeline on generated demo data; `make test` runs the tests.
# Both create .venv and install the requirements first, so they work on a fresh machine.
# The recipes live in tasks.py, which machines without make run directly (`python tasks.py demo`).
PYTHON ?= python3
VENV ?= .venv
TASKS := $(PYTHON) $(dir $(lastword $(MAKEFILE_LIST)))tasks.py --venv $(VENV)

.PHONY: demo test test-fast test-portable clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-export.txt
	$(TASKS) venv

# The seed README's commands, in order, then the three resumed PDD stages and the comparison. Training refuses a
# --ckpt_dir holding a finished run, so a second demo stops before it starts, instead of half-way.
demo:
	$(TASKS) demo

test:
	$(TASKS) test

# The inner loop while changing code: everything but the tests marked slow (pytest.ini says which).
test-fast:
	$(TASKS) test-fast

# The suite with the Linux-only facilities taken away (tests/portable/sitecustomize.py), as on Windows or macOS.
test-portable:
	$(TASKS) test-portable

# raw_data/ goes only when it holds the generated demo set: the seed README puts a real PTB-XL there.
clean:
	$(TASKS) clean
