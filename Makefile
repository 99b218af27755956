# Two set-up commands do everything on a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel is local on our dev/CI machines; on a GPU box override, e.g. TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv test lint format demo ui bench gpu-check gpu-wheels clean

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

# On a GPU machine with only PyTorch (+ Triton): no venv, no Ray/MLflow/DuckDB; JSON + Markdown
# under $$OUT (else gpu-check/). `make gpu-wheels` here first lets numpy/einops/fla-core travel.
gpu-check:
	PYTHONPATH=. python3 benchmarks/gpu_check.py

# Two Pythons' numpy wheels keep the folder under the 64 MiB a device call may carry.
GPU_PYTHONS ?= 3.11 3.12
gpu-wheels: venv
	for v in $(GPU_PYTHONS); do \
	  $(VENV)/bin/pip download -q --only-binary=:all: --no-deps --python-version $$v \
	    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d gpu-wheels numpy; \
	done
	$(VENV)/bin/pip download -q --no-deps -d gpu-wheels einops fla-core

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
