import csv
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from whisper_cpu import UserError, machine, models, pipeline, runner, transcribe, workspace
from whisper_cpu.cli import main
from whisper_cpu.runner import DecodeOptions
from whisper_cpu.bench import harness, inputs, publish, results, scaleout


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "whisper_cpu", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--models", "huge"], "unknown model 'huge'"),
        (["bench", "--methods", "int3"], "unknown method 'int3'"),
        (["bench", "--audio", "no-such-file.wav"], "audio file not found"),
        (["compare"], "no timings under"),
        (["bench", "--resume", "typo-123"], "no run 'typo-123'"),
        (["longform", "--models", "tiny.en", "--manifest", "no-such.csv"], "manifest not found"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(args, message, tmp_path):
    done = cli("--workspace", str(tmp_path), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_oversubscribed_threads_are_refused():
    done = cli("bench", "--threads", "999")
    assert done.returncode == 2 and "oversubscribing" in done.stderr


def test_corrupt_audio_is_one_line(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 100)
    done = cli("bench", "--models", "tiny.en", "--audio", str(bad))
    assert done.returncode == 2 and "bad.flac" in done.stderr and "Traceback" not in done.stderr


TINY_WINDOW = 27_201_024  # bytes a tiny.en window holds in the batched decoder: fp32 self and cross caches and its audio features


def test_batch_size_is_8_windows_fewer_where_a_quarter_of_the_free_memory_cannot_hold_them(monkeypatch):
    free = {}
    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": free["bytes"], "SC_PAGE_SIZE": 1}[name])
    tiny = SimpleNamespace(dims=models.dims("tiny.en"))
    for free["bytes"], size in ((2**40, 8), (4 * 3 * TINY_WINDOW, 3), (4 * 3 * TINY_WINDOW - 1, 2), (0, 1)):
        assert pipeline.default_batch_size(tiny) == size


def test_batch_size_flag_overrides_the_memory_rule(monkeypatch, tmp_path, clips, mirror):
    sizes, run, sysconf = [], pipeline.Batcher.run, os.sysconf
    monkeypatch.setattr(pipeline.Batcher, "run", lambda self, *args: sizes.append(self.batch_size) or run(self, *args))
    monkeypatch.setattr(os, "sysconf", lambda name: 0 if name == "SC_AVPHYS_PAGES" else sysconf(name))  # no memory free: 1 window
    argv = ["transcribe", str(inputs.locate(clips["deepspeech_LDC93S1"])), "--model", "tiny.en", "--method", "fast-fp32-batched",
            "--threads", "1", "--output-dir", str(tmp_path)]
    assert main(argv) == main([*argv, "--batch-size", "3"]) == 0
    assert sizes == [1, 3]


def test_ctrl_c_in_a_bench_run_keeps_its_rows_names_the_run_to_resume_and_exits_130(scratch, monkeypatch, capsys, clips, mirror):
    def interrupted(opts, clip, run_id, log):
        results.append("timings", [{"run_id": run_id, "model": "tiny.en", "method": "fp32", "wall_s": 1.0}])
        raise KeyboardInterrupt

    monkeypatch.setattr(harness, "_run", interrupted)
    monkeypatch.setattr(results, "new_run_id", lambda: "20261130T000000Z-c0de")
    status = main(["bench", "--models", "tiny.en", "--methods", "fp32", "--audio", str(inputs.locate(clips["deepspeech_LDC93S1"]))])
    assert (status, capsys.readouterr().err) == (130, "\nwhisper-cpu: interrupted; rows written so far are kept: rerun with --resume 20261130T000000Z-c0de\n")
    assert results.read("timings").run_id.tolist() == ["20261130T000000Z-c0de"]
    harness.check_resume("20261130T000000Z-c0de")  # what it says to run is accepted


def test_ctrl_c_in_a_transcription_exits_130_keeping_the_outputs(monkeypatch, capsys):
    def interrupted(opts, files):
        raise KeyboardInterrupt

    monkeypatch.setattr(transcribe, "run", interrupted)
    assert main(["transcribe", "any.wav"]) == 130
    assert capsys.readouterr().err == "\nwhisper-cpu: interrupted; outputs already written are kept\n"


def test_transcribe_help_names_each_option_once_and_says_where_our_defaults_differ(capsys):
    with pytest.raises(SystemExit):
        main(["transcribe", "--help"])
    text = capsys.readouterr().out
    for names in re.findall(r"^  (-.+?)(?:  |$)", text, re.M):  # an option's spellings, before its help
        flags = [name.split()[0] for name in names.split(", ")]
        assert len(set(flags)) == len(flags), names
    text = " ".join(text.split()).replace("openai- whisper", "openai-whisper")  # as argparse wraps it
    for ours in ("default: base (openai-whisper's: turbo", "default: txt; openai-whisper's: all", "default: greedy, several times faster on "
                 "a CPU; openai-whisper's: 5", "default: False, only the files written and a progress bar; openai-whisper's: True"):
        assert ours in text


def transcribe_options(monkeypatch, *flags):
    """The transcriber's options that `transcribe a.wav FLAGS` would run with (it is not run)."""
    runs = []
    monkeypatch.setattr(transcribe, "run", lambda opts, files: runs.append(opts) or 0)
    assert main(["transcribe", "a.wav", *flags]) == 0
    return runs[0]


def test_openai_whispers_spellings_and_options_are_accepted_with_its_meanings(monkeypatch, tmp_path, capsys):
    opts = transcribe_options(monkeypatch, "-o", str(tmp_path), "-f", "srt", "--verbose", "True", "--threads", "0", "--device", "cpu",
                              "--fp16", "False", "--patience", "2", "--beam_size", "2", "--length_penalty", "0.5", "--suppress_tokens=-1,50256",
                              "--carry_initial_prompt", "True", "--prepend_punctuations", "(", "--append_punctuations", ".")
    assert (opts.output_dir, opts.output_format, opts.verbose, opts.threads) == (tmp_path, "srt", True, torch.get_num_threads())  # 0: torch's own
    assert opts.decoding == DecodeOptions(temperature=opts.decoding.temperature, beam_size=2, patience=2.0, length_penalty=0.5,
                                          suppress_tokens="-1,50256", carry_initial_prompt=True, prepend_punctuations="(", append_punctuations=".")
    opts = transcribe_options(monkeypatch, "--output_dir", str(tmp_path / "x"), "--output_format", "all")
    assert (opts.output_dir, opts.output_format, opts.verbose, opts.threads) == (tmp_path / "x", "all", False, 0)
    assert capsys.readouterr().err == ""


def test_what_a_cpu_cannot_do_is_refused_in_one_line_and_fp16_falls_back_as_in_openai_whisper(monkeypatch, capsys):
    monkeypatch.setattr(transcribe, "run", lambda opts, files: pytest.fail("transcribed"))
    assert main(["transcribe", "a.wav", "--device", "cuda"]) == 2
    assert capsys.readouterr().err == "whisper-cpu: error: --device cuda: whisper-cpu runs on the CPU only; openai-whisper itself runs on a GPU\n"
    assert transcribe_options(monkeypatch, "--fp16", "True").decoding == DecodeOptions()
    assert capsys.readouterr().err == "whisper-cpu: note: --fp16 True: FP16 is not supported on CPU; using FP32 instead, as openai-whisper does\n"


@pytest.mark.parametrize("flags, message", [
    (("--beam_size", "0"), "--beam_size 0: must be at least 1"),
    (("--best_of", "-2", "--temperature", "0.5"), "--best_of -2: must be at least 1"),
    (("--beam_size", "2", "--patience", "-1"), "--patience -1.0: must be above 0"),
    (("--beam_size", "2", "--length_penalty", "5"), "--length_penalty 5.0: must be between 0 and 1"),
    (("--temperature", "-1"), "--temperature -1.0: must be 0 or above"),
    (("--temperature", "nan"), "--temperature nan: must be 0 or above"),
    (("--temperature_increment_on_fallback", "-0.2"), "--temperature_increment_on_fallback -0.2: 0 (no fallback) or above"),
    (("--suppress_tokens", "abc"), "--suppress_tokens 'abc': token ids separated by commas, such as -1,1350"),
    (("--clip_timestamps", "abc"), "--clip_timestamps 'abc': start,end,... in seconds, such as 0,30,60"),
    (("--clip_timestamps", "5,4"), "--clip_timestamps '5,4': seconds from 0, in increasing order"),
])
def test_values_openai_whisper_fails_or_loops_on_are_refused_in_one_line_before_the_model_loads(flags, message, monkeypatch, capsys):
    monkeypatch.setattr(transcribe, "load", lambda *args, **kwargs: pytest.fail("loaded"))
    assert main(["transcribe", "a.wav", "--model", "tiny.en", "--method", "fast-fp16w", *flags]) == 2
    assert capsys.readouterr().err == f"whisper-cpu: error: {message}\n"


@pytest.mark.parametrize("flags", [("--batch-size", "-3"), ("--batch_size", "0"), ("--threads", "-1")])
def test_counts_below_one_are_refused_by_the_parser(flags, capsys):
    """A negative batch size never filled a batch: the transcriber waited for ever."""
    with pytest.raises(SystemExit) as stop:
        main(["transcribe", "a.wav", *flags])
    assert stop.value.code == 2 and capsys.readouterr().err.endswith(f": {flags[1]}: at least 1\n")


def test_clips_are_cut_to_the_audio_where_openai_whispers_seek_loop_would_run_for_ever(monkeypatch):
    """Its seek stops moving at the last whole frame: a clip ending after it (the file's length rounded up, a typo)
    looped until killed; a clip starting after it is left out, and none left is an error."""
    eleven = 11 * 16000 + 100  # samples: 1100 whole frames
    assert runner.clip_seconds("5,100", eleven) == [5.0, 11.0] and runner.clip_seconds("3", eleven) == [3.0, 11.0]
    assert runner.clip_seconds("0,4,5,6,12,20", eleven) == [0.0, 4.0, 5.0, 6.0] and runner.clip_seconds([1.5, 2], eleven) == [1.5, 2.0]
    with pytest.raises(UserError, match=r"every clip starts after the end of the audio \(11.00 s\)"):
        runner.clip_seconds("100,200", eleven)
    seen = {}
    model = SimpleNamespace(is_multilingual=False, transcribe=lambda samples, **kwargs: seen.update(kwargs) or {"segments": [], "language": "en"})
    runner.TorchRunner(model, []).transcribe(np.zeros(eleven, dtype=np.float32), DecodeOptions(clip_timestamps="5,100"))
    assert seen["clip_timestamps"] == [5.0, 11.0]


def test_a_true_or_false_option_takes_its_value_and_says_so_when_it_swallowed_a_file(tmp_path, capsys):
    clip = tmp_path / "clip.wav"
    clip.touch()
    with pytest.raises(SystemExit):
        main(["transcribe", "--word_timestamps", str(clip)])
    assert capsys.readouterr().err.splitlines()[1:] == [
        f"whisper-cpu transcribe: error: argument --word-timestamps/--word_timestamps: takes True or False, not '{clip}'; did you mean "
        f"`--word_timestamps True {clip}`?"]  # after one line of usage


OFFICIAL = ("tiny.en, tiny, base.en, base, small.en, small, medium.en, medium, large-v1, large-v2, large-v3, large, large-v3-turbo, "
            "turbo")


def test_models_lists_the_official_names_and_what_loads_here(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("WHISPER_CPU_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(models, "OFFLINE_PACKAGES", {})
    assert main(["models"]) == 0 and capsys.readouterr().out == f"official names: {OFFICIAL}\nloadable here: none\n"
    checkpoint = tmp_path / "models" / "base.pt"
    checkpoint.parent.mkdir()
    checkpoint.touch()
    assert main(["models"]) == 0 and capsys.readouterr().out == f"official names: {OFFICIAL}\nloadable here: base\n"
    assert main(["models", str(checkpoint)]) == 0 and capsys.readouterr().out == f"{checkpoint}: {checkpoint}\n"
    assert main(["models", "nope"]) == 2 and capsys.readouterr().err.startswith("whisper-cpu: error: unknown model 'nope': use one of tiny.en, ")


def test_report_writes_the_figures_the_generated_sections_and_choices_from_the_rows(scratch, tmp_path, monkeypatch, capsys):
    env = {"run_id": "r1", "cpu": "Test CPU", "threads": 2, "physical_cores": 2, "isa": "avx2", "torch": "2.13.0", "openai_whisper": "20250625",
           "git_commit": "abc", "timestamp": "2026-11-25T00:00:00+00:00", "system": "whisper_cpu", "device": "cpu", "beam_size": 1,
           "decoding": "fallback+cond", "audio_id": "w", "audio_s": 30.0, "load_s": 1.0, "window_tokens": 100, "contended": False, "repeat": 0}
    monkeypatch.setattr(workspace, "_current", workspace.get())  # --workspace switches it: the next tests get the checkout's back
    scratch.mkdir()
    (scratch / "published.csv").write_bytes((workspace.get().home / "results" / "published.csv").read_bytes())
    pd.DataFrame([{**env, "model": "tiny.en", "method": k, "wall_s": w, "encoder_s": w / 4, "decoder_s": w / 2}
                  for k, w in (("fp32", 2.0), ("fp32-nn", 2.0), ("qint8", 1.0))]).to_csv(scratch / "timings.csv", index=False)
    pd.DataFrame([{**env, "run_id": "a1", "model": "tiny.en", "method": k, "language": "en", "wer": w,
                   **({"wer_delta": w - 0.1, "ci_low": -0.01, "ci_high": 0.05} if k != "fp32" else {})}
                  for k, w in (("fp32", 0.1), ("fp32-nn", 0.1), ("qint8", 0.12))]).to_csv(scratch / "accuracy.csv", index=False)
    (tmp_path / "docs").mkdir()
    for section, name in publish.SECTIONS.items():
        (tmp_path / name).write_text(f"# x\n<!-- {section}:start -->\nold\n<!-- {section}:end -->\nafter\n")
    assert main(["--workspace", str(tmp_path), "report", "--no-notebooks"]) == 0
    figures = scratch / "figures"
    assert capsys.readouterr().out == "".join(f"figure: {figures / name}.png\n" for name in ("speedup_vs_published", "time_split", "speed_vs_wer")) + (
        "README.md: headline section regenerated\ndocs/results.md: results section regenerated\ndocs/accuracy.md: harder section regenerated\n"
        f"choices for `transcribe --method auto`: {scratch / 'choices.json'}\n")
    text = (tmp_path / "docs" / "results.md").read_text()
    assert text.startswith("# x\n<!-- results:start -->\nRun `r1` on Test CPU, 2 threads on 2 cores [avx2]") and text.endswith("<!-- results:end -->\nafter\n")
    assert "| tiny.en | qint8    |          1 |                 2 |                    2 |            30 |" in text and "old" not in text
    assert "| Test CPU [avx2], 2 threads | tiny.en | fast-fp16w (default: nothing gated here) | not timed here" in (tmp_path / "README.md").read_text()
    assert "not measured yet" in (tmp_path / "docs" / "accuracy.md").read_text()
    choices = json.loads((scratch / "choices.json").read_text())["choices"]
    assert [(c["method"], c["s_per_30s"], c["faithful"]) for c in choices] == [("fp32", 2.0, True), ("fp32-nn", 2.0, False), ("qint8", 1.0, False)]


def test_accuracy_reads_the_manifests_files_from_audio_dir(scratch, tmp_path, capsys, clips, mirror):
    clip = clips["deepspeech_LDC93S1"]
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "renamed.wav").write_bytes(inputs.locate(clip).read_bytes())  # a name neither the mirror nor the cache has
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("id", "file", "sha256", "duration_s", "language", "reference"),
                                 ("ldc", "renamed.wav", clip.sha256, clip.duration_s, "en", clip.reference)])
    argv = ["accuracy", "--models", "tiny.en", "--methods", "fp32-nn", "--threads", "1", "--manifest", str(manifest)]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"whisper-cpu: error: no clip of {manifest} is here (set AUDIO_MIRROR or --audio-dir) or downloadable\n"
    assert main([*argv, "--audio-dir", str(tmp_path / "elsewhere")]) == 0
    rows = results.read("accuracy").set_index("method")
    assert rows[["n_utterances", "audio_s", "wer", "cer"]].values.tolist() == [[1, 2.925, 0.18182, 0.09615]] * 2  # "dog suit and": 2 of 11 words
    assert (rows.loc["fp32-nn", "wer_delta"], rows.loc["fp32-nn", "identical_to_fp32"]) == (0.0, 1.0)
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        "tiny.en fp32-nn       en            1   2.925    wer  18.18  9.62       0.0    0.0     0.0               1.0 ")


def test_scaleout_times_each_layout_on_the_same_clips_into_corpus_csv(scratch, monkeypatch, capsys, clips, mirror):
    monkeypatch.setattr(scaleout, "english_clips", lambda: [inputs.locate(clips["deepspeech_LDC93S1"])])
    monkeypatch.setattr(scaleout, "LAYOUTS", (("local", 0, 1), ("local", 0, 0)))  # Ray's layouts cost a cluster each: test_corpus.py runs one
    assert main(["scaleout", "--model", "tiny.en", "--method", "fp32"]) == 0
    rows = results.read("corpus")
    assert rows[["engine", "actors", "threads_per_actor", "files", "files_ok", "files_failed", "audio_s"]].values.tolist() == [
        ["local", 1, 1, 1, 1, 0, 2.92], ["local", 1, machine.default_threads(), 1, 1, 0, 2.92]]
    assert rows.overhead_s_per_file.tolist() == [0.0, round(rows.wall_s[1] - rows.wall_s[0], 3)]
    assert (abs(rows.audio_h_per_h * rows.wall_s - 2.925) <= 0.005 * (rows.audio_h_per_h + rows.wall_s) + 1e-3).all()  # 2.925 s over the wall, both rounded
    cores, said = machine.default_threads(), capsys.readouterr().out.splitlines()
    assert [line.split(" s of audio")[0] for line in said[:3]] == ["local x1 (1 thread each): 1/1 files, 3",
                                                                  f"local x1 ({cores} thread{'s' if cores > 1 else ''} each): 1/1 files, 3",
                                                                  f"run {rows.run_id[0]}: 1 English clips per layout; rows added to results/corpus.csv"]


def test_a_command_without_its_extra_says_in_one_line_which_to_install(monkeypatch, capsys):
    from whisper_cpu import cli as command_line

    monkeypatch.setattr(command_line, "_bench", lambda: None)  # as where the bench extra is not installed
    monkeypatch.setitem(sys.modules, "fastapi", None)  # an import of either fails
    monkeypatch.setitem(sys.modules, "ray.data", None)
    for argv, extra in ((["bench", "--models", "tiny.en", "-h"], "bench"), (["serve", "--port", "0"], "serve"),
                        (["corpus", "in", "--output-dir", "out", "--engine", "ray"], "corpus")):
        assert main(argv) == 2
        command = "corpus --engine ray" if extra == "corpus" else argv[0]
        assert capsys.readouterr().err == f"whisper-cpu: error: {command} needs the {extra} extra: pip install 'whisper-cpu[{extra}]'\n"


def test_the_commands_said_to_need_the_bench_extra_are_the_benchmarks():
    import argparse

    from whisper_cpu.bench import cli as bench_cli
    from whisper_cpu.cli import BENCH_COMMANDS

    sub = argparse.ArgumentParser().add_subparsers()
    bench_cli.add_commands(sub)
    assert set(sub.choices) == set(BENCH_COMMANDS)


def test_the_library_commands_import_no_package_of_an_extra(tmp_path):
    code = ("import sys; from whisper_cpu.cli import main; main(['transcribe', 'missing.wav', '--model', 'tiny.en', '--method', 'fp32']); "
            "print(sorted({'pandas', 'jiwer', 'matplotlib', 'fastapi', 'uvicorn', 'ray', 'faster_whisper', 'ctranslate2'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.stdout == "[]\n" and done.stderr == "whisper-cpu: error: missing.wav: no such file\n"


@pytest.mark.parametrize("flags, message", [
    (("bench", "--beam-size", "0"), "0: at least 1"), (("bench", "--repeats", "0"), "0: at least 1"),
    (("bench", "--timeout", "-5"), "-5: a number above 0"), (("accuracy", "--beam-size", "-1"), "-1: at least 1"),
    (("serve", "--max-mb", "nan"), "nan: a number above 0"), (("serve", "--max-mb", "-2"), "-2: a number above 0"),
    (("loadtest", "--seconds", "inf"), "inf: a number above 0"), (("loadtest", "--clients", "0"), "0: at least 1"),
])
def test_counts_and_limits_of_every_command_are_checked_by_the_parser(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(list(flags))
    assert stop.value.code == 2 and capsys.readouterr().err.endswith(f": {message}\n")


def test_runs_that_do_not_exist_or_scored_nothing_are_one_line_errors(tmp_path, monkeypatch, capsys):
    for command in ("compare", "floor"):
        done = cli(command, "--run-id", "nope")  # the checkout's committed results
        assert done.returncode == 2 and done.stderr == "whisper-cpu: error: --run-id nope: no such run in the timings\n"
    from whisper_cpu.bench import accuracy

    monkeypatch.setattr(accuracy, "run", lambda opts, run_id=None: "20260101T000000Z-none")  # every configuration failed
    monkeypatch.setattr(workspace, "_current", workspace.get())  # --workspace switches it: the next tests get the checkout's back
    assert main(["--workspace", str(tmp_path), "accuracy", "--models", "tiny.en", "--methods", "fp32"]) == 2
    assert capsys.readouterr().err.endswith("whisper-cpu: error: run 20260101T000000Z-none: no configuration was scored\n")
    done = cli("corpus", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--threads", "99")
    assert done.returncode == 2 and "--threads 99 on" in done.stderr and "oversubscribing" in done.stderr


def test_each_gates_help_names_its_own_default_methods(capsys):
    with pytest.raises(SystemExit):
        main(["longform", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: every method the gate is meant for (" in text and "the original experiment's" not in text


def test_model_dir_is_where_official_checkpoints_are_read_as_in_openai_whisper(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen = []
    monkeypatch.setattr(transcribe, "run", lambda opts, files: seen.append(models.whisper_cache()))
    assert main(["transcribe", "a.wav", "--model_dir", str(tmp_path / "weights")]) == 0
    assert main(["transcribe", "a.wav"]) == 0
    assert seen == [tmp_path / "weights", tmp_path / "cache" / "whisper"]
