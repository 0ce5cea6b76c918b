"""`whisper-cpu corpus`: a folder or manifest transcribed once, on this machine or a local Ray cluster, and completed
after a kill with every file exactly once in the records."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def map_workers(root: int) -> list[int]:
    """The Ray Data actors (`ray::MapWorker` processes) among the descendants of process ROOT."""
    parents, commands = {}, {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            commands[int(proc.name)] = (proc / "cmdline").read_bytes()
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    below, found = {root}, {root}
    while found:
        found = {pid for pid, parent in parents.items() if parent in found} - below
        below |= found
    return [pid for pid in sorted(below - {root}) if b"MapWorker" in commands.get(pid, b"")]


def check(records: list[dict], root, out) -> None:
    """Every audio file exactly once; the real ones transcribed with their outputs, the bad ones one error each."""
    assert sorted(r["source"] for r in records) == sorted(str(p) for p in corpus.sources(root))
    bad = {r["source"].rsplit("/", 1)[1]: r["error"] for r in records if r["error"]}
    assert set(bad) == {"broken.mp3", "silent.wav"} and "silence" in bad["silent.wav"] and "cannot decode" in bad["broken.mp3"]
    durations = {r["source"].rsplit("/", 1)[1]: r["duration_s"] for r in records if r["error"]}
    assert durations == {"broken.mp3": None, "silent.wav": 2.0}  # unknown where it did not read; a silent file's is known
    for r in records:
        if not r["error"]:
            assert r["text"] and r["duration_s"] > 1 and r["method"] == "fast-qint8-pc-batched" and len(r["sha256"]) == 64
            assert r["elapsed_s"] is None  # decoded in batches beside the others: no time of its own
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
    actors = map_workers(run.pid)
    for pid in actors:  # this run's own actor: never another Ray's on the machine
        os.kill(pid, signal.SIGKILL)
    try:
        run.wait(timeout=300)
    except subprocess.TimeoutExpired:
        run.kill()
        run.wait()
    done = subprocess.run(command(manifest, out, *flags), capture_output=True, text=True, timeout=400)
    assert len(actors) == 1 and done.returncode == 2, done.stderr[-2000:]
    assert "ray: 1 actor x 2 threads" in done.stderr.splitlines()  # 2 CPUs at 2 threads each
    assert not [line for line in done.stderr.splitlines() if "core_worker.cc" in line or "Warning:" in line]  # no alarm: all went well
    check(lines(out), folder, out)


@pytest.mark.parametrize("cpus, actors, threads, layout", [
    (16, 0, 0, (8, 2)), (3, 0, 0, (1, 2)), (1, 0, 0, (1, 1)),  # 2 threads per actor, as many actors as the CPUs hold
    (16, 0, 4, (4, 4)), (16, 3, 0, (3, 5)), (2, 4, 0, (4, 1)), (16, 4, 2, (4, 2)),  # what is asked, the CPUs shared out for the rest
])
def test_actor_layout_shares_the_cpus_out_without_oversubscribing(cpus, actors, threads, layout):
    assert corpus.actor_layout(cpus, actors, threads) == layout


def test_a_jsonl_manifest_lists_the_sources_relative_to_itself(tmp_path, clips, mirror):
    clip = inputs.locate(clips["deepspeech_LDC93S1"])
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / clip.name).write_bytes(clip.read_bytes())
    missing = tmp_path / "elsewhere" / "gone.wav"
    manifest = tmp_path / "corpus.jsonl"
    manifest.write_text(f'{{"path": "audio/{clip.name}", "speaker": "a"}}\n\n{{"path": "{missing}"}}\n'
                        f'{{"path": "audio/../audio/{clip.name}"}}\n')  # the first again, spelled otherwise
    assert corpus.sources(manifest) == [tmp_path / "audio" / clip.name, missing]
    records = corpus.run(corpus.Options(model="tiny.en", method="fp32", output_format="txt", threads=1), manifest, tmp_path / "out",
                         log=lambda line: None)
    assert {source: (r["text"], r["error"], r["outputs"]) for source, r in records.items()} == {
        str(tmp_path / "audio" / clip.name): ("She had your dog suit and greasy wash water all year.", None, [f"audio/{clip.stem}.txt"]),
        str(missing): (None, f"audio file not found: {missing}", [])}
    (tmp_path / "bad.jsonl").write_text('{"file": "a.wav"}\n')
    with pytest.raises(corpus.UserError, match="bad.jsonl: the manifest has no `path` column"):
        corpus.sources(tmp_path / "bad.jsonl")


def test_files_of_one_name_keep_their_outputs_and_any_spelling_of_the_source_is_one_corpus(tmp_path, clips, mirror, monkeypatch):
    """talk.wav and talk.flac in one folder write talk.wav.txt and talk.flac.txt; rerun by a relative path, the corpus is done;
    records.jsonl has the umask's mode, as any file the user makes."""
    (tmp_path / "corp").mkdir()
    for name, clip in (("talk.wav", "deepspeech_LDC93S1"), ("talk.flac", "coqui_LJ001-0002")):
        (tmp_path / "corp" / name).write_bytes(inputs.locate(clips[clip]).read_bytes())
    monkeypatch.chdir(tmp_path)
    said, umask = [], os.umask(0o022)
    try:
        for source in (tmp_path / "corp", Path("corp"), Path("corp/../corp")):
            records = corpus.run(corpus.Options(model="tiny.en", method="fp32", output_format="txt", threads=1), source, tmp_path / "out",
                                 log=said.append)
    finally:
        os.umask(umask)
    assert [line for line in said if " files, " in line] == ["2 files, 0 already done, 2 to transcribe (local engine)"] + [
        "2 files, 2 already done, 0 to transcribe (local engine)"] * 2
    assert {source: r["outputs"] for source, r in records.items()} == {
        str(tmp_path / "corp" / "talk.wav"): ["talk.wav.txt"], str(tmp_path / "corp" / "talk.flac"): ["talk.flac.txt"]}
    assert "greasy wash water" in (tmp_path / "out" / "talk.wav.txt").read_text()
    assert "comparatively modern" in (tmp_path / "out" / "talk.flac.txt").read_text()
    assert len(lines(tmp_path / "out")) == 2 and (tmp_path / "out" / corpus.RECORDS).stat().st_mode & 0o777 == 0o644


def test_output_stems_are_unique_in_each_folder():
    a, b = Path("/c/a"), Path("/c/b")
    assert corpus.output_stems([a / "talk.wav", a / "talk.mp3", a / "talk.wav.mp3", a / "solo.wav", b / "talk.wav"]) == {
        a / "talk.wav": "talk.wav", a / "talk.mp3": "talk.mp3", a / "talk.wav.mp3": "talk.wav.mp3",  # its stem is talk.wav's name
        a / "solo.wav": "solo", b / "talk.wav": "talk"}


def test_bad_manifests_records_and_output_folders_are_one_line_errors(tmp_path):
    def refused(name: str, content: bytes, message: str):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(corpus.UserError, match=f"^{re.escape(str(tmp_path / name))}: {message}$"):
            corpus.sources(tmp_path / name)

    refused("cut.jsonl", b'{"path": "a.wav"}\n{"path": "b.w', "line 2 is not JSON")
    refused("list.jsonl", b'{"path": "a.wav"}\n[1, 2]\n', "line 2 is not a JSON object")
    refused("none.jsonl", b'{"path": "a.wav"}\n{"path": null}\n', "row 2 has no path")
    refused("number.jsonl", b'{"path": 7}\n', "row 1 has no path")
    refused("empty.csv", b"path,speaker\n,a\n", "row 1 has no path")
    refused("latin1.csv", "path\ncaf\u00e9.wav\n".encode("latin-1"), "the manifest is not UTF-8 text")
    (tmp_path / "bom.csv").write_bytes("path\nclip.wav\n".encode("utf-8-sig"))  # as spreadsheets save CSV
    assert corpus.sources(tmp_path / "bom.csv") == [tmp_path / "clip.wav"]

    out = tmp_path / "out"
    out.mkdir()
    (out / corpus.RECORDS).write_text('{}\n[1, 2]\n"text"\n{"source": "/a.wav", "error": null}\n\xff\n')
    assert list(corpus.read_records(out)) == ["/a.wav"]

    (tmp_path / "a-file").write_text("")
    with pytest.raises(corpus.UserError, match="^--output-dir .*a-file/sub: cannot be made a folder"):
        corpus.run(corpus.Options(model="tiny.en", method="fp32"), tmp_path / "bom.csv", tmp_path / "a-file" / "sub")
    with pytest.raises(corpus.UserError, match="^unknown model 'tiny.eng'"):
        corpus.run(corpus.Options(model="tiny.eng", method="fp32"), tmp_path / "bom.csv", tmp_path / "never")
    assert not (tmp_path / "never").exists()  # refused before anything was written
    with pytest.raises(corpus.UserError, match=r"^--address 127.0.0.1:1: no Ray cluster answers there"):  # not a hang
        corpus.run(corpus.Options(model="tiny.en", method="fp32", engine="ray", address="127.0.0.1:1"), tmp_path / "bom.csv", tmp_path / "never")
    with pytest.raises(corpus.UserError, match=r"^--address cluster: a Ray cluster's HOST:PORT"):
        corpus.reachable("cluster")
