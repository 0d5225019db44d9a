# One command each: `make demo` runs the whole product on the embedded synthetic world,
# `make test` builds the virtualenv from nothing and runs lint + the test suite.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TF2    := $(VENV)/.tf2_msgs
PYTEST_ARGS ?=
PYTEST_WORKERS ?= -n 2 --dist worksteal  # empty: one process; worksteal: a worker that runs out takes the other's

.PHONY: venv test lint bench demo clean

$(STAMP): requirements.txt setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# tf2_msgs/TFMessage (for /tf) is not on PyPI: generated from the rosidl wheels and compiled (gcc, g++).
$(TF2): $(STAMP) tools/build_tf2_msgs.py
	$(PY) tools/build_tf2_msgs.py
	touch $(TF2)

venv: $(STAMP) $(TF2)

lint: venv
	$(VENV)/bin/ruff check .

# PYTHONDONTWRITEBYTECODE cleared: the node and CLI processes the tests start then read the package's bytecode
# instead of each compiling it again, and pytest keeps its rewritten test modules (one run each on 2 cores,
# 2026-11-29: 8 min 8 s -> 7 min 56 s)
test: lint
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

bench: venv
	$(VENV)/bin/disam-bench all

demo: venv
	$(VENV)/bin/disam-demo --workdir runs/demo

clean:
	rm -rf $(VENV) build install log .pytest_cache
