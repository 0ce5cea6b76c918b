import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd
import pytest

from whisper_cpu import UserError, machine, registry
from whisper_cpu.bench import harness, inputs, results, tables


def test_probe_sees_other_processes_using_the_cpu():
    burn = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)
        with harness.Probe() as probe:
            time.sleep(1.0)
    finally:
        burn.kill()
    assert 0.95 < probe.wall_s < 1.5
    assert probe.other_cpu_s > 0.5 and probe.contended()


def test_bench_writes_whole_rows_and_resumes_an_interrupted_run(scratch, clips, mirror, plugins):
    clip = inputs.file_input(inputs.locate(clips["deepspeech_LDC93S1"]))
    opts = harness.Options(models=("tiny.en",), methods=("fp32", "instant"), repeats=2, threads=1)
    run_id = harness.run(opts, clip, log=lambda *_: None)
    rows = results.read("timings")
    assert len(rows) == 4 and set(rows.run_id) == {run_id} and set(rows.status) == {"ok"}
    fp32 = rows[rows.method == "fp32"]
    assert (fp32.wall_s > 0).all() and (fp32.encoder_s > 0).all() and (fp32.decoder_s > 0).all()  # times: measured, not known
    assert set(fp32.transcript) == {"She had your dog suit and greasy wash water all year."} and set(fp32.fallbacks) == {0}
    assert {"cpu", "isa", "torch", "openai_whisper", "quantized_engine", "other_cpu_s", "build"} <= set(rows.columns)
    # what the report used to recompute by importing models is recorded with the row
    assert set(fp32.encoder_gflop) == {harness.window_gflop("tiny.en", 1, 1)[0]} and set(rows.decoding) == {"fallback+cond"}
    assert sorted(zip(rows.method, rows.window_tokens)) == [("fp32", 15), ("fp32", 15), ("instant", 1), ("instant", 1)]

    harness.run(replace(opts, repeats=3), clip, run_id=run_id, log=lambda *_: None)
    rows = results.read("timings")
    assert len(rows) == 6 and sorted(rows[rows.method == "fp32"].repeat) == [0, 1, 2] and sorted(rows[rows.method == "instant"].repeat) == [0, 1, 2]


def test_resuming_a_run_that_never_existed_is_refused(scratch):
    with pytest.raises(UserError, match="no run 'typo-123'"):
        harness.check_resume("typo-123")
    harness.check_resume(None)


def test_ctrl_c_names_the_run_to_resume(scratch, monkeypatch, clips, mirror):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness, "_run", interrupt)
    with pytest.raises(harness.Interrupted) as stop:
        harness.run(harness.Options(models=("tiny.en",), methods=("fp32",)), None, run_id="r-given")
    assert stop.value.run_id == "r-given"


def fixture_timings():
    rows = []
    for method, walls in {"fp32": [2.0, 4.0, 3.0], "fp32-nn": [3.0, 3.0, 3.0], "qint8": [1.0, 1.5, 2.0]}.items():
        for repeat, wall in enumerate(walls):
            rows.append({
                "run_id": "r1", "model": "base", "method": method, "device": "cpu", "beam_size": 1, "threads": 2,
                "audio_id": "w", "system": "whisper_cpu", "audio_s": 30.0, "load_s": 1.0, "wall_s": wall,
                "encoder_s": 0.5, "decoder_s": 1.0, "window_tokens": 100, "contended": False, "repeat": repeat,
            })
    return pd.DataFrame(rows)


def test_summary_takes_medians_and_same_run_speedups():
    table = tables.summary(fixture_timings()).set_index("method")
    assert table.loc["fp32", "wall_s"] == 3.0 and table.loc["qint8", "wall_s"] == 1.5
    assert table.loc["qint8", "speedup_vs_fp32"] == 2.0
    assert table.loc["qint8", "x_realtime"] == 20.0
    assert table.loc["qint8", "decoder_ms_per_token"] == 10.0


def test_contended_repeats_are_left_out_of_the_medians_and_counted_apart():
    rows = fixture_timings()
    rows.loc[(rows.method == "qint8") & (rows.wall_s == 2.0), ["contended", "wall_s"]] = [True, 9.0]  # one slowed repeat
    rows.loc[rows.method == "fp32-nn", "contended"] = True  # every repeat contended: kept, all counted
    table = tables.summary(rows).set_index("method")
    assert table.loc["qint8", "wall_s"] == 1.25 and table.loc["qint8", "repeats"] == 2 and table.loc["qint8", "contended"] == 1
    assert table.loc["fp32-nn", "wall_s"] == 3.0 and table.loc["fp32-nn", "contended"] == 3 and table.loc["fp32", "contended"] == 0


def test_compare_puts_ours_beside_the_published_speedup():
    table = tables.compare(fixture_timings(), tables.published()).set_index("model")
    assert table.loc["base", "qint8_speedup"] == 2.0 and table.loc["base", "run_id"] == "r1"
    assert table.loc["base", "published_qint8_speedup"] == round(5.2 / 3.2, 2)
    assert table.loc["base", "published_qint8_x_realtime"] == round(30 / 3.2, 2)


def test_compare_takes_per_model_the_freshest_run_that_timed_both_sides():
    old = fixture_timings()
    partial = old[old.method.isin(["fp32", "qint8"])].assign(run_id="r2", wall_s=9.0)  # no fp32-nn: not complete
    tiny = old.assign(run_id="r3", model="tiny.en")
    table = tables.compare(pd.concat([old, partial, tiny]), tables.published()).set_index("model")
    assert table.loc["base", "run_id"] == "r1" and table.loc["base", "qint8_speedup"] == 2.0
    assert table.loc["tiny.en", "run_id"] == "r3"


def test_default_threads_are_the_usable_physical_cores(monkeypatch):
    two_cores_four_threads = tuple({"physical id": "0", "core id": str(i // 2), "flags": "avx2"} for i in range(4))
    monkeypatch.setattr(machine, "cpuinfo", lambda: two_cores_four_threads)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert (machine.physical_cores(), machine.default_threads()) == (2, 2)  # hyperthreads are not cores
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {3})
    assert machine.default_threads() == 1  # a process pinned to one CPU gets one thread


def test_the_cpu_is_named_with_its_generation(monkeypatch):
    zen4 = ({"model name": "AMD EPYC", "cpu family": "25", "model": "17"},)
    monkeypatch.setattr(machine, "cpuinfo", lambda: zen4)
    assert machine.cpu_name() == "AMD EPYC (family 25 model 17)"  # not the Zen 5's "AMD EPYC (family 26 model 2)"
    monkeypatch.setattr(machine, "cpuinfo", lambda: ({"model name": "Neoverse"},))
    assert machine.cpu_name() == "Neoverse"  # no numbers to add


def test_thread_scaling_adds_powers_of_two_below_the_cores():
    assert harness.fewer_threads(1) == ()
    assert harness.fewer_threads(2) == (1,)
    assert harness.fewer_threads(16) == (1, 2, 4, 8)
    assert harness.fewer_threads(12) == (1, 2, 4, 8)


def test_methods_that_cannot_run_here_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "bf16", replace(registry.REGISTRY["bf16"], unavailable=lambda: "needs a CPU with avx512_bf16 or amx_bf16"))
    pairs, notes = harness.plan(harness.Options(models=("tiny.en",), methods=("fp32", "bf16")))
    assert pairs == [("tiny.en", "fp32")]  # and nothing quietly added
    assert "note: bf16 skipped: needs a CPU with avx512_bf16 or amx_bf16" in notes


def test_memory_is_measured_in_a_fresh_process(scratch, clips, mirror):
    clip = inputs.file_input(inputs.locate(clips["deepspeech_LDC93S1"]))
    harness.measure_memory(harness.Options(models=("tiny.en",), methods=("fp32", "qint8"), threads=1), clip, "r1")
    rows = results.read("memory").set_index("method")
    assert rows.loc["fp32", "peak_rss_mb"] > rows.loc["fp32", "model_rss_mb"] > 100
    assert rows.loc["fp32", "peak_rss_mb"] < 2000  # the child's own peak, not its parent's
    assert rows.loc["qint8", "weights_disk_mb"] == rows.loc["fp32", "weights_disk_mb"] > 50


def test_bench_all_runs_every_stage_end_to_end(scratch, mirror, plugins, manifest_of, monkeypatch):
    """`make bench-all`'s stages and their hand-offs, on two short clips; what would take minutes is stubbed: the peak
    and floor measurements, and the timed methods (`instant` decodes nothing). fp32 is real: both gates score against it."""
    from whisper_cpu.bench import floor, peak

    stubbed = []
    monkeypatch.setattr(peak, "measure", lambda run_id, threads: stubbed.append(("peak", run_id)))
    monkeypatch.setattr(peak, "kernels", lambda run_id, threads: stubbed.append(("kernels", run_id)))
    monkeypatch.setattr(floor, "measure", lambda run_id: stubbed.append(("floor", run_id)) or [])
    opts = harness.Options(models=("tiny.en",), methods=("instant", "instant-batched"), repeats=1, threads=1, warmup=False,
                           manifest=manifest_of("deepspeech_LDC93S1", "whisper_jfk"))
    run_id = harness.run_all(opts, log=lambda *_: None)
    assert stubbed == [("peak", run_id), ("kernels", run_id), ("floor", run_id)]
    timings = results.read("timings")
    assert set(timings.run_id) == {run_id} and set(timings.status) == {"ok"}
    window = inputs.window().id
    assert sorted(zip(timings.audio_id, timings.method, timings.beam_size, timings.batch_size)) == sorted([
        *((window, m, beam, b) for m, b in (("instant", 1), ("instant-batched", 8)) for beam in (1, 5)),
        ("longform-en-a", "instant-batched", 1, 8), ("longform-en-b", "instant-batched", 1, 8)])
    assert sorted(results.read("memory").method) == ["instant", "instant-batched"]
    scores = results.read("accuracy")
    # beam 5 scores only the methods tagged `beam` (none here): no fp32-only baseline at that width
    assert sorted(zip(scores.method, scores.beam_size)) == [("fp32", 1), ("instant", 1), ("instant-batched", 1)]
    assert scores.set_index(["method", "beam_size"]).loc[("instant", 1), "wer"] == 1.0  # nothing decoded: every word deleted
    gate = results.read("longform")
    assert sorted(gate[gate.audio_id == "all"].method) == ["fp32", "instant-batched"]
