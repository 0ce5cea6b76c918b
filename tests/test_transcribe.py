import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from whisper_cpu import UserError, audio, methods, results, transcribe

HERE = results.cpu_name()
FORMATS = ("txt", "srt", "vtt", "json", "tsv")


def system_of(method):
    return methods.REGISTRY[method].system if method in methods.REGISTRY else "whisper_cpu"


def write_timings(path, runs, model="base"):
    """runs: (run_id, cpu, threads, {method: seconds per 30 s window})."""
    rows = [
        {"run_id": run_id, "timestamp": "2026-01-01T00:00:00+00:00", "cpu": cpu, "physical_cores": 2, "threads": threads,
         "system": system_of(method), "model": model, "method": method, "device": "cpu", "beam_size": 1,
         "audio_id": "lj-window-30s", "audio_s": 30.0, "repeat": repeat, "load_s": 1.0, "wall_s": wall + 0.1 * (repeat - 1),
         "encoder_s": 0.1, "decoder_s": 0.2, "window_tokens": 80, "contended": False}
        for run_id, cpu, threads, walls in runs for method, wall in walls.items() for repeat in range(3)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def write_accuracy(path, ci_lows, model="base"):
    """ci_lows: {method: lower end of the WER change's 95% CI against fp32}; fp32 has none."""
    rows = [
        {"run_id": "a1", "cpu": HERE, "beam_size": 1, "model": model, "method": method, "system": system_of(method),
         "language": "en", "wer": 0.06, "metric": "wer", "wer_delta": None if low is None else low + 0.01,
         "ci_low": low, "ci_high": None if low is None else low + 0.02}
        for method, low in {"fp32": None, **ci_lows}.items()
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


@pytest.fixture
def csvs(tmp_path):
    write_accuracy(tmp_path / "accuracy.csv", {"fp32-nn": 0.0, "qint8": 0.002, "qint8-logits": -0.01,
                                               "faster-whisper-int8": -0.01, "no-such-method": -0.01})
    return tmp_path / "timings.csv", tmp_path / "accuracy.csv"


def test_auto_picks_the_fastest_method_not_measurably_less_accurate(csvs):
    timings, accuracy = csvs
    walls = {"fp32": 3.0, "fp32-nn": 2.9, "qint8": 1.0, "qint8-logits": 1.5, "faster-whisper-int8": 0.5, "no-such-method": 0.2}
    write_timings(timings, [("r1", HERE, 2, walls)])
    name, why = transcribe.choose_method("base", 2, timings, accuracy)
    assert name == "qint8-logits"  # qint8 is faster but its CI lies above zero; peers and unknown names never run
    assert HERE in why and "1.50 s per 30 s" in why and "run r1" in why and "WER +0.00 [-1.00, +1.00] points" in why


def test_auto_falls_back_to_fp32_when_every_faster_method_loses_accuracy(csvs):
    timings, accuracy = csvs
    write_timings(timings, [("r1", HERE, 2, {"fp32": 3.0, "qint8": 1.0, "faster-whisper-int8": 0.5})])
    assert transcribe.choose_method("base", 2, timings, accuracy)[0] == "fp32"


def test_auto_ignores_rows_from_another_cpu(csvs):
    timings, accuracy = csvs
    other = "Other CPU" if HERE != "Other CPU" else "Another CPU"
    write_timings(timings, [("r1", HERE, 2, {"fp32": 3.0, "fp32-nn": 2.9, "qint8-logits": 1.5}),
                            ("r2", other, 2, {"fp32": 3.0, "fp32-nn": 0.1, "qint8-logits": 1.5})])
    name, why = transcribe.choose_method("base", 2, timings, accuracy)
    assert name == "qint8-logits" and "run r1" in why


def test_auto_prefers_rows_at_the_thread_count_asked_for(csvs):
    timings, accuracy = csvs
    write_timings(timings, [("r1", HERE, 1, {"fp32": 3.0, "fp32-nn": 1.0, "qint8-logits": 1.5}),
                            ("r1", HERE, 2, {"fp32": 2.0, "fp32-nn": 1.9, "qint8-logits": 1.0})])
    assert transcribe.choose_method("base", 1, timings, accuracy)[0] == "fp32-nn"
    assert transcribe.choose_method("base", 2, timings, accuracy)[0] == "qint8-logits"
    assert transcribe.choose_method("base", 8, timings, accuracy)[0] == "qint8-logits"  # not measured: the run's highest


def test_auto_uses_the_documented_default_when_nothing_was_measured_here(csvs):
    timings, accuracy = csvs
    write_timings(timings, [("r1", HERE, 2, {"fp32": 3.0, "qint8-logits": 1.5})], model="tiny.en")
    for path in (timings, timings.with_name("missing.csv")):
        name, why = transcribe.choose_method("base", 2, path, accuracy)
        assert name == methods.DEFAULT and "documented default" in why
    transcribe.ours(name)  # the default is one of ours and runs here


def test_languages():
    assert transcribe.language_for("tiny.en", None) == "en"
    assert transcribe.language_for("base", None) is None
    assert transcribe.language_for("base", "German") == "de"
    for model, language in (("tiny.en", "fr"), ("base", "klingon")):
        with pytest.raises(UserError):
            transcribe.language_for(model, language)


def test_empty_transcripts_are_written_with_a_note_and_clashing_names_refused(monkeypatch, tmp_path, clips, mirror, capsys):
    empty = {"text": "", "segments": [], "language": "en"}
    fake = SimpleNamespace(model=SimpleNamespace(transcribe=lambda samples, **options: empty))
    monkeypatch.setitem(methods.REGISTRY, "fake", methods.Method("fake", "returns nothing", lambda model, threads: fake))
    monkeypatch.setattr(transcribe.torch, "set_num_threads", lambda n: None)  # leave the other tests' threads alone
    clip = audio.locate(clips["deepspeech_LDC93S1"])
    (tmp_path / "again").mkdir()
    again = tmp_path / "again" / clip.name
    again.write_bytes(clip.read_bytes())
    lines = []
    opts = transcribe.Options(model="tiny.en", method="fake", output_format="txt", output_dir=tmp_path / "out", threads=1)
    assert transcribe.run(opts, [clip, again], log=lines.append) == 1
    assert (tmp_path / "out" / f"{clip.stem}.txt").read_text() == ""
    assert capsys.readouterr().out.split() == [str(tmp_path / "out" / f"{clip.stem}.txt")]
    assert len(lines) == 2 and "no speech recognized" in lines[0] and "same name" in lines[1]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "whisper_cpu", "transcribe", *args], capture_output=True, text=True, cwd=cwd)


def errors(done):
    return [line for line in done.stderr.splitlines() if line.startswith("whisper-cpu: error:")]


def test_transcribes_a_real_clip_into_every_format(tmp_path, clips, mirror):
    clip = audio.locate(clips["deepspeech_LDC93S1"])
    done = cli(str(clip), "--model", "tiny.en", "--method", "qint8-logits", "--output-format", "all", "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    written = {tmp_path / "out" / f"{clip.stem}.{f}" for f in FORMATS}
    assert {p for p in (tmp_path / "out").iterdir()} == written  # and no temporary leftovers
    assert set(done.stdout.split()) == {str(p) for p in written}
    assert "greasy wash" in (tmp_path / "out" / f"{clip.stem}.txt").read_text().lower()
    assert any("-->" in line for line in (tmp_path / "out" / f"{clip.stem}.srt").read_text().splitlines())
    assert not errors(done) and "Traceback" not in done.stderr


def test_a_bad_file_fails_alone(tmp_path, clips, mirror):
    clip = audio.locate(clips["deepspeech_LDC93S1"])
    silent = tmp_path / "silent.wav"
    audio.write_wav(silent, np.zeros(3 * audio.SAMPLE_RATE, dtype=np.float32))
    missing = tmp_path / "missing.wav"
    done = cli(str(missing), str(silent), str(clip), "--model", "tiny.en", "--method", "qint8-logits", "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 2
    bad = errors(done)
    assert len(bad) == 2 and str(missing) in bad[0] and str(silent) in bad[1] and "silence" in bad[1]
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{clip.stem}.txt"]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("method, message", [("faster-whisper-int8", "use `bench` to time peers"), ("int3", "unknown method 'int3'")])
def test_methods_we_do_not_run_are_one_line(method, message, tmp_path):
    done = cli("whatever.wav", "--model", "tiny.en", "--method", method, "--output-dir", str(tmp_path))
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
