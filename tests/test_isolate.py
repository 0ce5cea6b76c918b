import time

import pytest

from whisper_cpu.bench import accuracy, harness, inputs, isolate, results, tables

ABORTED = "crashed: SIGABRT (Fatal Python error: Aborted)"


def test_a_native_crash_is_a_reason_not_the_end():
    assert isolate.call("ctypes:string_at", 0).startswith("crashed: SIGSEGV (Fatal Python error: Segmentation fault)")


def test_a_hang_is_cut_at_its_time_limit():
    start = time.perf_counter()
    assert isolate.call("time:sleep", 60, timeout=2) == "timed out after 2 s"
    assert time.perf_counter() - start < 6


def test_an_error_is_its_last_line_and_progress_reaches_the_parent():
    assert isolate.call("json:loads", "{") == "JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    done, notes = [], []
    assert isolate.call("whisper_cpu.bench.isolate:report", 3, progress=done.append, note=notes.append) is None
    assert done == [3] and notes == []


def test_a_peer_that_aborts_is_a_failed_row_and_the_run_goes_on(scratch, clips, mirror, plugins, manifest_of):
    clip = inputs.file_input(inputs.locate(clips["deepspeech_LDC93S1"]))
    opts = harness.Options(models=("tiny.en",), methods=("aborts", "fp32"), repeats=1, threads=1, warmup=False)
    run_id = harness.run(opts, clip, log=lambda *_: None)
    rows = results.read("timings").set_index("method")
    assert rows.loc["aborts", "status"] == results.FAILED and rows.loc["aborts", "error"] == ABORTED
    assert rows.loc["fp32", "status"] == "ok" and "greasy wash" in rows.loc["fp32", "transcript"].lower()
    assert list(tables.load_timings().method) == ["fp32"]  # left out of every table
    failed = tables.run_failures(run_id)
    assert failed[["stage", "method", "error"]].values.tolist() == [["timings", "aborts", ABORTED]]

    # resumed: the failed configuration is tried again (and fails again), fp32 is not timed twice
    harness.run(opts, clip, run_id=run_id, log=lambda *_: None)
    rows = results.read("timings")
    assert sorted(zip(rows.method, rows.status)) == [("aborts", "failed"), ("aborts", "failed"), ("fp32", "ok")]

    # the accuracy gate: the same, fp32 scored, the aborting method a row with its reason
    gate = accuracy.Options(models=("tiny.en",), methods=("aborts",), threads=1, manifest=manifest_of("deepspeech_LDC93S1"))
    accuracy.run(gate, run_id, log=lambda *_: None)
    scores = results.read("accuracy").set_index("method")
    assert scores.loc["aborts", "error"] == ABORTED and scores.loc["fp32", "status"] == "ok"
    assert scores.loc["fp32", "wer"] == pytest.approx(2 / 11, abs=1e-5)
