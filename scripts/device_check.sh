#!/usr/bin/env bash
# The GPU column and the many-core CPU rows of `bench --sizes`, on a lent machine with a GPU and no internet.
#   here:  scripts/device_check.sh prepare   (bundles into .dev/, git-ignored: wheels, openai-whisper, the window's clips)
#   there: scripts/device_check.sh run       (with .dev carried; rows land in $OUT/results, to be copied into results/)
# Weights are timing-only (random, official shapes), made there: real checkpoints do not fit in what a call carries.
# The batched sweep on that machine's CPU needs real weights and faster-whisper, more than one call carries:
#   here:  scripts/device_check.sh prepare_batched   (.dev plus CTranslate2, faster-whisper, tiny.en, the English clips,
#                                                     as one tar cut into .devA .devB .devC, each under a call's limit)
#   there: three calls on one warm machine, carrying .devA, then .devB, then .devC with `run_batched`
# The per-CPU paths (bfloat16 where AMX / AVX-512-BF16, 8-bit activations where VNNI) on that Xeon at 2 threads, from the
# same bundle: `run_cpu_paths` in place of `run_batched` (their tests, the window, then the long recordings batched)
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    local py=.venv/bin/python site
    site=$($py -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf .dev && mkdir -p .dev/whl .dev/site .dev/audio
    for pkg in av rapidfuzz jiwer more-itertools; do  # what the machine's image lacks, for its Python 3.12
        $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .dev/whl "$pkg==$($py -m pip show "$pkg" | awk '/^Version/{print $2}')"
    done
    cp -r "$site/whisper" "$site"/openai_whisper-*.dist-info .dev/site/  # pure Python, published as an sdist only
    $py - <<'EOF'
import os, shutil
from whisper_cpu import workspace
from whisper_cpu.bench import inputs
for clip in inputs.window_clips(inputs.read_manifest()):
    source = inputs.locate(clip)
    target = os.path.join(".dev/audio", os.path.relpath(source, workspace.get().mirror))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(source, target)
EOF
    git rev-parse --short=12 HEAD > .dev/commit
    du -sh .dev
}

run() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .dev/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD/.dev/site:$PWD/src PYTHONUNBUFFERED=1 AUDIO_MIRROR=$PWD/.dev/audio \
        WHISPER_CPU_RESULTS=$OUT/results WHISPER_CPU_MODELS=/tmp/models WHISPER_CPU_GIT_COMMIT=$(cat .dev/commit)
    { nvidia-smi -L; lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket"; python3 -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
    timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_decoding.py -k every_device 2>&1 | tail -4 | tee "$OUT/pytest.txt"
    timeout 270 python3 -m whisper_cpu bench --sizes --models tiny:random base:random small:random medium:random turbo:random large-v3:random \
        --methods fp32-gpu fp16-gpu fast-fp32-gpu --repeats 3 --skip-memory 2>&1 | grep -v "run/s" | tail -14
    timeout 200 python3 -m whisper_cpu bench --sizes --models tiny:random base:random small:random medium:random \
        --methods fp32-nn qint8 fast-qint8-pc --repeats 3 --skip-memory 2>&1 | grep -v "run/s" | tail -8
}

prepare_batched() {
    prepare >/dev/null
    local py=.venv/bin/python
    for pkg in ctranslate2 faster-whisper; do
        $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .dev/whl "$pkg==$($py -m pip show "$pkg" | awk '/^Version/{print $2}')"
    done
    $py - <<'EOF'
import os, shutil
from whisper_cpu import models, workspace
from whisper_cpu.bench import inputs
for clip, source in inputs.available(inputs.read_manifest()):
    if clip.language == "en":
        target = os.path.join(".dev/audio", os.path.relpath(source, workspace.get().mirror))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy(source, target)
shutil.copytree(models.ct2_dir("tiny.en"), ".dev/models/ct2/tiny.en")  # the package's form: converted there as here
EOF
    rm -rf .devA .devB .devC && mkdir .devA .devB .devC
    tar cf .dev.tar -C .dev . && split -n 3 .dev.tar .dev.part. && rm .dev.tar
    mv .dev.part.aa .devA/part && mv .dev.part.ab .devB/part && mv .dev.part.ac .devC/part
    du -sh .devA .devB .devC
}

unbundle() {
    mkdir -p /tmp/dev && cat .devA/part .devB/part .devC/part | tar xf - -C /tmp/dev || exit 1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/dev/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:/tmp/dev/site:$PWD/src PYTHONUNBUFFERED=1 AUDIO_MIRROR=/tmp/dev/audio \
        WHISPER_CPU_RESULTS=/tmp/results WHISPER_CPU_MODELS=/tmp/dev/models WHISPER_CPU_GIT_COMMIT=$(cat /tmp/dev/commit)
    lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|Flags" > "$OUT/machine.txt"
}

run_cpu_paths() {  # tiny.en at 2 threads, as the project's hosts run: each per-CPU path beside the path it would replace
    unbundle
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_decoding.py -k "bfloat16 or full_range or word_timestamp" 2>&1 | tail -4 | tee "$OUT/pytest.txt"
    timeout 150 python3 -m whisper_cpu bench --models tiny.en --threads 2 --repeats 3 --methods fast-qint8-pc fast-qint8-vnni fast-bf16enc \
        faster-whisper-int8 2>&1 | grep -v "/s\]" | tail -12
    timeout "${BENCH_S:-300}" python3 -m whisper_cpu bench --batched --models tiny.en --threads 2 --repeats 1 --batch-sizes 8 --methods \
        fast-qint8-pc-batched fast-qint8-vnni-batched fast-fp16w-batched fast-bf16-batched faster-whisper-int8-batched 2>&1 | grep -v "/s\]" | tail -30
    tar czf "$OUT/results.tgz" -C /tmp results
}

run_batched() {  # tiny.en, ours and faster-whisper batched int8, at the thread counts the harness scales through
    unbundle
    timeout "${BENCH_S:-420}" python3 -m whisper_cpu bench --batched --models tiny.en --methods fast-qint8-pc-batched \
        faster-whisper-int8-batched --repeats 2 --batch-sizes 4 8 16 2>&1 | grep -v "/s\]" | tail -30
    tar czf "$OUT/results.tgz" -C /tmp results
}

"$@"
