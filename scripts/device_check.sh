#!/usr/bin/env bash
# The GPU column and the many-core CPU rows of `bench --sizes`, on a lent machine with a GPU and no internet.
#   here:  scripts/device_check.sh prepare   (bundles into .dev/, git-ignored: wheels, openai-whisper, the window's clips)
#   there: scripts/device_check.sh run       (with .dev carried; rows land in $OUT/results, to be copied into results/)
# Weights are timing-only (random, official shapes), made there: real checkpoints do not fit in what a call carries.
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

"$@"
