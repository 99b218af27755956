# Two set-up commands do everything on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel is local on our dev/CI machines; on a GPU box override, e.g. TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv test lint format demo ui bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: venv lint
	$(PY) -m pytest -m "not gpu" -q --durations=15

# The whole product end to end (~15 min on 2 CPUs); DEMO_ARGS="--scale smoke" for a 5-minute check.
demo: venv
	$(VENV)/bin/geolip demo $(DEMO_ARGS)

ui: venv
	$(VENV)/bin/geolip ui

bench: venv
	$(PY) benchmarks/bench_aleph_attention.py
	$(PY) benchmarks/bench_aleph_heads.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
