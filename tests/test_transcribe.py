import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from whisper_cpu import UserError, audio, machine, registry, transcribe
from whisper_cpu.bench import inputs, tables
from whisper_cpu.runner import DecodeOptions, Runner, Transcript

HERE, ISA = machine.cpu_name(), machine.isa()
FORMATS = ("txt", "srt", "vtt", "json", "tsv")
DECODING = DecodeOptions().tag


def write_choices(path, rows):
    """rows: (method, threads, seconds per 30 s, faithful[, cpu]) for base."""
    path.write_text(json.dumps({"choices": [
        {"cpu": r[4] if len(r) > 4 else HERE, "isa": ISA, "model": "base", "threads": r[1], "method": r[0], "s_per_30s": r[2],
         "timing_run": f"t{r[1]}", "faithful": r[3], "gated": r[0] != "fp32", "why": "short clips: ...; long recordings: ..."} for r in rows]}))
    return path


def test_auto_picks_the_fastest_faithful_method_of_ours(tmp_path):
    path = write_choices(tmp_path / "choices.json", [("fp32", 2, 3.0, True), ("qint8", 2, 1.0, False), ("qint8-logits", 2, 1.5, True),
                                                     ("faster-whisper-int8", 2, 0.5, True), ("no-such-method", 2, 0.2, True)])
    name, why = transcribe.choose_method("base", 2, path)
    assert name == "qint8-logits"  # qint8 is faster but not faithful; peers and unknown names never run
    assert HERE in why and "1.50 s per 30 s" in why and "run t2" in why and "long recordings" in why


def test_auto_ranks_by_the_long_recordings_where_a_faithful_method_was_timed_on_them(tmp_path):
    path = write_choices(tmp_path / "choices.json", [("fp32", 2, 3.0, True), ("fast-qint8-pc", 2, 1.0, True),
                                                     ("fast-qint8-pc-batched", 2, 1.1, True), ("fast-fp32-batched", 2, 2.0, True)])
    rows = json.loads(path.read_text())
    long = {"fast-qint8-pc": 1.3, "fast-qint8-pc-batched": 0.5, "fast-fp32-batched": 0.9}
    for row in rows["choices"]:
        row |= {"long_s_per_30s": long.get(row["method"]), "long_run": "L"}
    path.write_text(json.dumps(rows))
    name, why = transcribe.choose_method("base", 2, path)
    assert name == "fast-qint8-pc-batched" and "0.50 s per 30 s on long recordings" in why and "run L" in why


def test_auto_falls_back_to_fp32_when_no_faster_method_is_faithful(tmp_path):
    path = write_choices(tmp_path / "choices.json", [("fp32", 2, 3.0, True), ("qint8", 2, 1.0, False)])
    assert transcribe.choose_method("base", 2, path)[0] == "fp32"


def test_auto_ignores_another_cpu_and_prefers_the_thread_count_asked_for(tmp_path):
    other = HERE + " (another)"
    path = write_choices(tmp_path / "choices.json", [("fp32", 1, 3.0, True), ("fp32-nn", 1, 1.0, True), ("qint8-logits", 1, 1.5, True),
                                                     ("fp32", 2, 2.0, True), ("qint8-logits", 2, 1.0, True), ("qint8", 2, 0.1, True, other)])
    assert transcribe.choose_method("base", 1, path)[0] == "fp32-nn"
    assert transcribe.choose_method("base", 2, path)[0] == "qint8-logits"
    assert transcribe.choose_method("base", 8, path)[0] == "qint8-logits"  # not measured: the highest count measured


def test_auto_tells_cpus_of_one_name_apart_by_their_instruction_sets(tmp_path):
    path = write_choices(tmp_path / "choices.json", [("fp32", 2, 3.0, True), ("qint8-logits", 2, 1.0, True)])
    text = path.read_text().replace(json.dumps(ISA), json.dumps(ISA + " avx512_vnni_other"), 1)
    path.write_text(text)  # fp32's row now belongs to a CPU of the same name with other instruction sets
    assert transcribe.choose_method("base", 2, path)[0] == "qint8-logits"


def test_auto_uses_the_documented_default_when_nothing_was_measured_here(tmp_path):
    only_timed = write_choices(tmp_path / "timed.json", [("fp32", 2, 3.0, True), ("qint8", 2, 1.0, False)])
    only_timed.write_text(only_timed.read_text().replace('"gated": true', '"gated": false'))  # `make bench` times, scores nothing
    for path in (write_choices(tmp_path / "choices.json", [("fp32", 2, 3.0, True, "Other CPU")]), tmp_path / "missing.json", only_timed):
        name, why = transcribe.choose_method("base", 2, path)
        assert name == registry.DEFAULT and "documented default" in why
    registry.ours(name)  # the default is one of ours and runs here
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(UserError, match="unreadable"):
        transcribe.choose_method("base", 2, tmp_path / "broken.json")


def test_without_fbgemm_the_default_is_the_fast_decoder_in_fp32(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(registry.REGISTRY, "fast-fp16w", replace(registry.REGISTRY["fast-fp16w"], unavailable=lambda: "no fbgemm"))
    assert transcribe.choose_method("base", 2, tmp_path / "missing.json")[0] == "fast-fp32"


def timing_rows(run_id, walls, decoding=DECODING, cpu=HERE):
    return [{"run_id": run_id, "cpu": cpu, "isa": ISA, "model": "base", "method": m, "device": "cpu", "beam_size": 1, "threads": 2, "decoding": decoding,
             "audio_id": "w", "audio_s": 30.0, "batch_size": 1, "wall_s": w} for m, w in walls.items()]


def score_rows(run_id, lows, decoding=DECODING, **extra):
    return [{"run_id": run_id, "cpu": HERE, "isa": ISA, "model": "base", "method": m, "language": "en", "beam_size": 1, "decoding": decoding,
             "wer_delta": lo, "ci_low": lo, "ci_high": lo + 0.02, **extra} for m, lo in lows.items()]


def test_choices_need_both_gates_and_take_each_methods_freshest_timing():
    timings = pd.DataFrame(timing_rows("old", {"fp32": 3.0, "fast-qint8": 0.5, "qint8": 1.0}) + timing_rows("new", {"fast-qint8": 1.2})
                           + timing_rows("t0-run", {"qint8": 0.1}, decoding="t0") + timing_rows("x", {"faster-whisper-int8": 0.1}))
    short = pd.DataFrame(score_rows("s1", {"fp32": float("nan"), "fast-qint8": -0.01, "qint8": -0.01}))
    long = pd.DataFrame(score_rows("l1", {"fp32": float("nan"), "fast-qint8": 0.02, "qint8": -0.005}, audio_id="all"))
    harder = pd.DataFrame([{**r, "category": "noise", "wer": 0.2, "wer_ci_low": r["ci_low"], "ins_ci_low": -0.1}
                           for r in score_rows("h1", {"fast-qint8": -0.01, "qint8": -0.01})])  # both pass the harder gates
    found = {c["method"]: c for c in tables.choices(timings, short, long, DECODING, harder, long)}
    assert set(found) == {"fp32", "fast-qint8", "qint8"}  # peers are never chosen
    assert found["fast-qint8"]["s_per_30s"] == 1.2 and found["fast-qint8"]["timing_run"] == "new"  # freshest, not fastest
    assert not found["fast-qint8"]["faithful"] and "run l1" in found["fast-qint8"]["why"]  # its long-form CI lies above zero
    assert found["qint8"]["faithful"] and found["qint8"]["s_per_30s"] == 1.0  # the t0 row is not what users run
    assert found["fp32"]["faithful"] and found["qint8"]["gated"] and not found["fp32"]["gated"]
    recording = inputs.LONGFORM[0][0]
    batched = pd.DataFrame([{**r, "audio_id": recording, "audio_s": 300.0, "batch_size": b}
                            for b, wall in ((8, 5.0), (2, 1.0)) for r in timing_rows("b", {"fast-qint8": wall})])  # the sweep's 2 is not auto's
    found = {c["method"]: c for c in tables.choices(pd.concat([timings, batched]), short, long, DECODING, harder, long)}
    assert found["fast-qint8"]["long_s_per_30s"] == 0.5 and found["fast-qint8"]["long_run"] == "b" and found["fast-qint8"]["s_per_30s"] == 1.2
    assert found["qint8"]["long_s_per_30s"] is None
    no_long = {c["method"]: c for c in tables.choices(timings, short, long.iloc[:0], DECODING)}
    assert not no_long["qint8"]["faithful"] and "not measured" in no_long["qint8"]["why"]


def test_languages():
    assert transcribe.language_for("tiny.en", None) == "en"
    assert transcribe.language_for("base", None) is None
    assert transcribe.language_for("base", "German") == "de"
    assert transcribe.language_for("base", "auto") is None and transcribe.language_for("tiny.en", "Auto") == "en"  # whisper.cpp's word
    for model, language in (("tiny.en", "fr"), ("base", "klingon")):
        with pytest.raises(UserError):
            transcribe.language_for(model, language)


class Empty(Runner):
    multilingual, weights = False, []

    def transcribe(self, source, options, progress=False):
        return Transcript("", [], "en")


def test_every_runner_runs_many_files_in_order_each_failure_as_its_result(tmp_path):
    sources = [tmp_path / "missing.wav", np.zeros(16000, dtype=np.float32), np.ones(16000, dtype=np.float32)]
    out = list(Empty().many(sources, DecodeOptions()))
    assert len(out) == 3 and all(s is source for (s, _), source in zip(out, sources))
    assert isinstance(out[0][1], UserError) and "silence" in str(out[1][1]) and isinstance(out[2][1], Transcript)


def test_empty_transcripts_are_written_with_a_note_and_clashing_names_refused(monkeypatch, tmp_path, clips, mirror, capsys):
    monkeypatch.setitem(registry.REGISTRY, "fake", registry.Entry("fake", registry.OURS, "returns nothing", lambda model, threads: Empty()))
    monkeypatch.setattr(transcribe.torch, "set_num_threads", lambda n: None)  # leave the other tests' threads alone
    clip = inputs.locate(clips["deepspeech_LDC93S1"])
    (tmp_path / "again").mkdir()
    again = tmp_path / "again" / clip.name
    again.write_bytes(clip.read_bytes())
    lines = []
    opts = transcribe.Options(model="tiny.en", method="fake", output_format="txt", output_dir=tmp_path / "out", threads=1)
    assert transcribe.run(opts, [clip, again], log=lines.append) == 1
    assert (tmp_path / "out" / f"{clip.stem}.txt").read_text() == ""
    assert capsys.readouterr().out.split() == [str(tmp_path / "out" / f"{clip.stem}.txt")]
    assert len(lines) == 2 and "same name" in lines[0] and "no speech recognized" in lines[1]  # the clash refused before any work


class Speaking(Runner):
    """Says the same two segments of every file that holds a signal."""
    multilingual, weights = False, []

    def transcribe(self, source, options, progress=False):
        return Transcript("Hello there.", [{"start": 0.0, "end": 1.5, "text": " Hello"}, {"start": 61.25, "end": 62.0, "text": " there."}], "en")


@pytest.fixture
def fake(monkeypatch):
    """A method `fake` whose runner is `Speaking`; the models it loaded are listed."""
    loaded = []
    monkeypatch.setitem(registry.REGISTRY, "fake", registry.Entry("fake", registry.OURS, "says hello",
                                                                  lambda model, threads: loaded.append(model) or Speaking()))
    monkeypatch.setattr(transcribe.torch, "set_num_threads", lambda n: None)  # leave the other tests' threads alone
    return loaded


def test_every_path_is_checked_before_the_model_loads(fake, tmp_path, capsys):
    opts = transcribe.Options(model="tiny.en", method="fake", output_dir=tmp_path / "out", threads=1)
    assert transcribe.run(opts, [tmp_path / "typo.wav", tmp_path]) == 2 and fake == []  # nothing to transcribe: no model loaded
    assert capsys.readouterr().err.splitlines() == [
        f"whisper-cpu: error: {tmp_path / 'typo.wav'}: no such file",
        f"whisper-cpu: error: {tmp_path}: a folder: `whisper-cpu corpus {tmp_path} --output-dir OUT` transcribes every audio file in it"]


def test_a_corrupt_file_is_one_line_naming_it_once(fake, tmp_path, capsys):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 100)
    assert transcribe.run(transcribe.Options(model="tiny.en", method="fake", output_dir=tmp_path, threads=1), [bad]) == 1
    assert capsys.readouterr().err == f"whisper-cpu: error: cannot decode audio {bad}: Invalid data found when processing input\n"


def test_many_files_advance_a_bar_per_file_with_every_line_on_its_own_and_verbose_prints_segments(fake, tmp_path, capsys):
    paths = [tmp_path / f"{name}.wav" for name in ("a", "silent", "b")]
    for path, level in zip(paths, (0.5, 0.0, 0.5)):
        audio.write_wav(path, np.full(audio.SAMPLE_RATE, level, dtype=np.float32))
    opts = transcribe.Options(model="tiny.en", method="fake", output_dir=tmp_path / "out", threads=1, verbose=True)
    assert transcribe.run(opts, paths) == 1
    out, err = capsys.readouterr()
    said = [line.split("\r")[-1] for line in err.split("\n")]  # what stays on screen of each line: after its last carriage return
    assert f"whisper-cpu: error: {paths[1]}: no signal (silence)" in said  # not glued onto the bar
    assert err.startswith("\rfiles:   0%") and all(f"| {n}/3 [" in err for n in range(4))  # one step per file
    segments = ["[00:00.000 --> 00:01.500]  Hello", "[01:01.250 --> 01:02.000]  there."]  # openai-whisper's --verbose True lines
    assert out.splitlines() == [*segments, str(tmp_path / "out" / "a.txt"), *segments, str(tmp_path / "out" / "b.txt")]


def test_options_a_batched_method_cannot_honour_are_refused_before_the_model_loads(monkeypatch, tmp_path):
    batched = registry.REGISTRY["fast-qint8-pc-batched"]
    monkeypatch.setitem(registry.REGISTRY, batched.name, replace(batched, load=lambda *args: pytest.fail("a model was loaded")))
    for flags in ({"patience": 2.0, "beam_size": 2}, {"suppress_tokens": "-1,50256"}, {"append_punctuations": ""}):
        opts = transcribe.Options(model="tiny.en", method="fast-qint8-pc-batched", decoding=DecodeOptions(**flags), threads=1)
        with pytest.raises(UserError, match=f"^--{next(iter(flags))} belongs to openai-whisper's sequential transcribe, which "
                                            f"fast-qint8-pc-batched does not run: use a method without -batched"):
            transcribe.run(opts, [tmp_path / "any.wav"])
    with pytest.raises(UserError, match="^--patience requires --beam_size"):
        transcribe.run(transcribe.Options(model="tiny.en", method="fp32", decoding=DecodeOptions(patience=2.0)), [tmp_path / "any.wav"])


def test_openai_whispers_other_decoding_options_reach_its_transcribe(tmp_path, clips, mirror, capsys):
    from whisper_cpu.cli import main

    clip = inputs.locate(clips["deepspeech_LDC93S1"])
    assert main(["transcribe", str(clip), "--model", "tiny.en", "--method", "fp32", "--threads", "1", "-f", "json", "-o", str(tmp_path),
                 "--word_timestamps", "True", "--append_punctuations", "", "--beam_size", "2", "--patience", "2", "--length_penalty", "0.5",
                 "--suppress_tokens", "-1", "--initial_prompt", "Greasy.", "--carry_initial_prompt", "True"]) == 0
    words = [w["word"] for s in json.loads((tmp_path / f"{clip.stem}.json").read_text())["segments"] for w in s["words"]]
    assert words[-2:] == [" year", "."]  # no punctuation appended: the full stop is a word of its own
    assert capsys.readouterr().out == f"{tmp_path / clip.stem}.json\n"


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "whisper_cpu", "transcribe", *args], capture_output=True, text=True, cwd=cwd)


def errors(done):
    return [line for line in done.stderr.splitlines() if line.startswith("whisper-cpu: error:")]


def test_transcribes_a_real_clip_into_every_format(tmp_path, clips, mirror):
    clip = inputs.locate(clips["deepspeech_LDC93S1"])
    done = cli(str(clip), "--model", "tiny.en", "--method", "qint8-logits", "--output-format", "all", "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    written = {tmp_path / "out" / f"{clip.stem}.{f}" for f in FORMATS}
    assert {p for p in (tmp_path / "out").iterdir()} == written  # and no temporary leftovers
    assert set(done.stdout.split()) == {str(p) for p in written}
    assert "greasy wash" in (tmp_path / "out" / f"{clip.stem}.txt").read_text().lower()
    assert any("-->" in line for line in (tmp_path / "out" / f"{clip.stem}.srt").read_text().splitlines())
    assert not errors(done) and "Traceback" not in done.stderr


def test_a_bad_file_fails_alone(tmp_path, clips, mirror):
    clip = inputs.locate(clips["deepspeech_LDC93S1"])
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


def test_word_timestamps_from_the_command_line_on_the_default_method(tmp_path, clips, mirror):
    clip = inputs.locate(clips["whisper_jfk"])
    done = cli(str(clip), "--model", "tiny.en", "--method", registry.DEFAULT, "--word-timestamps", "True", "--output-format", "json",
               "--output-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    words = [w for s in json.loads((tmp_path / f"{clip.stem}.json").read_text())["segments"] for w in s["words"]]
    americans = next(w for w in words if w["word"].strip(" ,") == "Americans")
    assert americans["start"] <= 1.8 <= americans["end"] and len(words) >= 20


def test_openai_whispers_option_names_and_meanings():
    from whisper_cpu.cli import decoding_options, parser

    def parsed(*flags):
        return decoding_options(parser().parse_args(["transcribe", "a.wav", *flags]))

    assert parsed() == DecodeOptions()  # its defaults are openai-whisper's
    assert parsed("--temperature_increment_on_fallback", "0").temperature == (0.0,)
    assert parsed("--temperature", "0.4").temperature == (0.4, 0.6, 0.8, 1.0)
    options = parsed("--task", "translate", "--condition_on_previous_text", "False", "--initial_prompt", "Glossary: ONNX.",
                     "--word_timestamps", "True", "--no_speech_threshold", "0.5", "--best_of", "3", "--clip_timestamps", "1,4")
    assert (options.task, options.condition_on_previous_text, options.initial_prompt, options.word_timestamps) == ("translate", False, "Glossary: ONNX.", True)
    assert (options.no_speech_threshold, options.best_of, options.clip_timestamps) == (0.5, 3, "1,4")
    with pytest.raises(SystemExit):
        parser().parse_args(["transcribe", "a.wav", "--condition_on_previous_text", "maybe"])


@pytest.mark.parametrize("flags, message", [
    (("--max_line_width", "20"), "--max_line_width requires --word_timestamps True"),
    (("--task", "translate"), "tiny.en is English-only: --task translate needs a multilingual model"),
    (("--method", "fast-qint8-pc-batched", "--clip_timestamps", "0,5"), "use a method without -batched"),
])
def test_option_misuse_is_one_line(flags, message, tmp_path, clips, mirror):
    done = cli(str(inputs.locate(clips["whisper_jfk"])), "--model", "tiny.en", *flags, "--output-dir", str(tmp_path))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_subtitle_options_and_clips_through_openai_whispers_writers(tmp_path, clips, mirror):
    clip = inputs.locate(clips["whisper_jfk"])
    done = cli(str(clip), "--model", "tiny.en", "--method", registry.DEFAULT, "--word_timestamps", "True", "--max_line_width", "24",
               "--highlight_words", "True", "--clip_timestamps", "0,5.5", "--output-format", "all", "--output-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    srt = (tmp_path / f"{clip.stem}.srt").read_text()
    text = [line for line in srt.splitlines() if line and "-->" not in line and not line.isdigit()]
    assert "<u>" in srt and max(len(line.replace("<u>", "").replace("</u>", "")) for line in text) <= 24
    result = json.loads((tmp_path / f"{clip.stem}.json").read_text())
    assert "fellow Americans" in result["text"] and "country" not in result["text"]  # only the first 5.5 s
