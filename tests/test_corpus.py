"""`whisper-cpu corpus`: a folder or manifest transcribed once, on this machine or a local Ray cluster, and completed
after a kill with every file exactly once in the records."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from whisper_cpu import audio, corpus
from whisper_cpu.bench import inputs

CLIPS = ["whisper_jfk", "deepspeech_LDC93S1", "coqui_LJ001-0001", "coqui_LJ001-0002", "coqui_LJ001-0003"]


@pytest.fixture
def folder(tmp_path, clips, mirror):
    """Real clips (one in a subfolder), a corrupt file and a silent one."""
    root = tmp_path / "corpus"
    (root / "more").mkdir(parents=True)
    for i, name in enumerate(CLIPS):
        source = inputs.locate(clips[name])
        (root / ("more" if i == 1 else ".") / source.name).write_bytes(source.read_bytes())
    (root / "broken.mp3").write_bytes(b"not audio")
    audio.write_wav(root / "silent.wav", np.zeros(2 * audio.SAMPLE_RATE, dtype=np.float32))
    (root / "notes.txt").write_text("not audio: skipped by extension")
    return root


def command(source, out, *flags):
    return [sys.executable, "-m", "whisper_cpu", "corpus", str(source), "--output-dir", str(out), "--model", "tiny.en",
            "--method", "fast-qint8-pc-batched", *flags]


def lines(out) -> list[dict]:
    path = out / corpus.RECORDS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check(records: list[dict], root, out) -> None:
    """Every audio file exactly once; the real ones transcribed with their outputs, the bad ones one error each."""
    assert sorted(r["source"] for r in records) == sorted(str(p) for p in corpus.sources(root))
    bad = {r["source"].rsplit("/", 1)[1]: r["error"] for r in records if r["error"]}
    assert set(bad) == {"broken.mp3", "silent.wav"} and "silence" in bad["silent.wav"] and "cannot decode" in bad["broken.mp3"]
    for r in records:
        if not r["error"]:
            assert r["text"] and r["duration_s"] > 1 and r["method"] == "fast-qint8-pc-batched" and len(r["sha256"]) == 64
            assert all((out / name).stat().st_size > 0 for name in r["outputs"]) and len(r["outputs"]) == 5
            assert all(name.startswith("more/") == ("/more/" in r["source"]) for name in r["outputs"])  # the sources' folders kept
    assert not [p for p in out.rglob(".*")]  # no temporary leftovers


def test_local_engine_survives_a_killed_driver_and_redoes_only_what_is_missing(folder, tmp_path):
    out = tmp_path / "out"
    run = subprocess.Popen(command(folder, out, "--batch-size", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while run.poll() is None and not [r for r in lines(out) if not r["error"]]:
        time.sleep(0.2)
    run.send_signal(signal.SIGKILL)
    run.wait()
    first = lines(out)
    assert 0 < len(first) < 7
    done = subprocess.run(command(folder, out), capture_output=True, text=True)
    assert done.returncode == 2 and "2 failed" in done.stdout  # the corrupt and the silent file
    check(lines(out), folder, out)
    assert f"7 files, {sum(1 for r in first if not r['error'])} already done" in done.stderr
    again = subprocess.run(command(folder, out), capture_output=True, text=True)
    assert "7 files, 5 already done, 2 to transcribe" in again.stderr  # only the failed ones are tried again
    check(lines(out), folder, out)


def test_manifest_source_and_ray_engine_after_a_killed_actor(folder, tmp_path):
    """A local Ray cluster (2 CPUs): one actor is killed mid-run; the rerun completes the corpus, each file once."""
    manifest = tmp_path / "corpus.csv"
    manifest.write_text("path,note\n" + "".join(f"{p.relative_to(tmp_path)},x\n" for p in corpus.sources(folder)))
    out = tmp_path / "out"
    flags = ("--engine", "ray", "--batch-size", "1", "--threads", "2")
    run = subprocess.Popen(command(manifest, out, *flags), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while run.poll() is None and not lines(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = subprocess.run(["pkill", "-9", "-f", "MapWorker"]).returncode == 0
    try:
        run.wait(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
        run.wait()
    done = subprocess.run(command(manifest, out, *flags), capture_output=True, text=True, timeout=400)
    assert killed and done.returncode == 2, done.stderr[-2000:]
    check(lines(out), folder, out)
