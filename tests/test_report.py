import json

import pandas as pd
import pytest
import torch
from matplotlib.pyplot import imread

from whisper_cpu import UserError, machine, registry, transcribe
from whisper_cpu.bench import figures, publish, results, tables
from whisper_cpu.runner import DecodeOptions

ENV = {"cpu": "Test CPU", "threads": 2, "physical_cores": 2, "isa": "avx2", "torch": "2.13.0", "openai_whisper": "20250625",
       "git_commit": "abc", "timestamp": "2026-11-25T00:00:00+00:00", "system": "whisper_cpu", "device": "cpu",
       "beam_size": 1, "audio_id": "w", "audio_s": 30.0, "load_s": 1.0, "window_tokens": 100, "contended": False}
WALLS = {("tiny.en", "fp32"): 2.0, ("tiny.en", "fp32-nn"): 2.0, ("tiny.en", "qint8"): 2.5,
         ("base", "fp32"): 4.0, ("base", "fp32-nn"): 4.0, ("base", "qint8"): 2.0}
WERS = {("tiny.en", "fp32"): 0.08, ("tiny.en", "fp32-nn"): 0.08, ("tiny.en", "qint8"): 0.09,
        ("base", "fp32"): 0.06, ("base", "fp32-nn"): 0.06, ("base", "qint8"): 0.07}


@pytest.fixture
def csvs(tmp_path):
    timings = pd.DataFrame([
        {"run_id": "r1", **ENV, "model": m, "method": k, "repeat": i, "wall_s": w * (1 + 0.1 * (i - 1)),
         "encoder_s": w / 4, "decoder_s": w / 2, "arithmetic": "int8" if "int8" in k else "fp32",
         "encoder_gflop": 36.94 if m == "tiny.en" else 87.4, "decoder_gflop": 6.6}
        for (m, k), w in WALLS.items() for i in range(3)
    ])
    accuracy = pd.DataFrame([
        {"run_id": "a1", "model": m, "method": k, "language": "en", "beam_size": 1, "wer": w,
         **({"wer_delta": w - WERS[(m, "fp32")], "ci_low": -0.01, "ci_high": 0.03} if k != "fp32" else {})}
        for (m, k), w in WERS.items()
    ])
    return timings, accuracy


def test_original_table_puts_ours_beside_the_published_rows(csvs):
    timings, _ = csvs
    table = tables.original_table(timings, tables.published())
    base = table[table.model == "base"].set_index(["source", "device", "dtype", "linear_layer"])
    assert len(base) == 6
    assert base.loc[("ours", "cpu", "qint8", "nn.Linear"), "speedup"] == 2.0
    assert base.loc[("ours", "cpu", "qint8", "nn.Linear"), "x_realtime"] == 15.0
    assert base.loc[("published", "cpu", "qint8", "nn.Linear"), "speedup"] == round(5.2 / 3.2, 2)
    assert pd.isna(base.loc[("published", "gpu", "fp32", "Linear"), "speedup"])


def test_figures_are_written_and_missing_measurements_are_skipped(csvs, tmp_path):
    timings, accuracy = csvs
    written = figures.write_figures(timings, accuracy, tables.published(), tmp_path / "figures")
    assert sorted(p.name for p in written) == ["speed_vs_wer.png", "speedup_vs_published.png", "time_split.png"]
    assert {p.name: imread(p).shape for p in written} == {"speed_vs_wer.png": (495, 880, 4), "speedup_vs_published.png": (495, 880, 4),
                                                          "time_split.png": (550, 660, 4)}  # inches x 110 dpi, as drawn
    assert figures.plot_thread_scaling(timings) is None and figures.plot_memory(pd.DataFrame()) is None
    scaling = figures.plot_thread_scaling(pd.concat([timings, timings.assign(threads=1, wall_s=2 * timings.wall_s)])).axes[0]
    assert {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in scaling.get_lines()} == {
        f"{m} {k}": ([1, 2], [2 * w, w]) for (m, k), w in WALLS.items()}  # medians over the repeats, per thread count
    memory = pd.DataFrame([{"run_id": "r1", **ENV, "model": "base", "method": "fp32", "peak_rss_mb": 900.0, "weights_disk_mb": 140.0}])
    bars = figures.plot_memory(memory).axes[0]
    assert [bar.get_height() for bar in bars.patches] == [900.0, 140.0]
    assert [t.get_text() for t in bars.get_legend().get_texts()] == ["peak resident memory (one transcribe)", "weights on disk"]


def test_speedup_figure_names_both_machines(csvs):
    timings, _ = csvs
    ax = figures.plot_speedup(timings, tables.published()).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith("ours: Test CPU") and "Ryzen 5 5600X" in legend[1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tiny.en", "base", "small", "medium"]
    assert ax.get_ylabel() and ax.get_xlabel() and ax.get_title()


def test_pareto_front_keeps_only_unbeaten_points():
    points = pd.DataFrame({"x": [1.0, 2.0, 3.0, 1.5, 4.0], "y": [9.0, 5.0, 4.0, 9.5, 4.5]})
    assert tables.pareto_front(points, "x", "y").index.tolist() == [0, 1, 2]


def test_speed_accuracy_joins_time_and_wer(csvs):
    table = tables.speed_accuracy(*csvs).set_index(["model", "method"])
    assert table.loc[("base", "qint8"), "s_per_30s"] == 2.0 and table.loc[("base", "qint8"), "wer_pct"] == 7.0


def test_a_generated_section_is_replaced_between_its_markers_only(csvs, tmp_path):
    timings, accuracy = csvs
    markdown = publish.results_markdown(timings, accuracy, tables.published())
    assert "Test CPU" in markdown and "| base" in markdown and "+1.00 [-1.00, +3.00]" in markdown
    page = tmp_path / "results.md"
    page.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\n<!-- harder:start -->\nkept\n<!-- harder:end -->\n")
    publish.update_section(page, "results", markdown)
    publish.update_section(page, "results", markdown)
    text = page.read_text()
    assert text.count("| base") == markdown.count("| base") >= 4 and "old" not in text
    assert text.endswith("<!-- results:end -->\n<!-- harder:start -->\nkept\n<!-- harder:end -->\n")
    with pytest.raises(UserError, match="headline:start"):
        publish.update_section(page, "headline", markdown)
    for section, name in publish.SECTIONS.items():  # the checkout's pages hold the markers the report writes between
        assert f"<!-- {section}:start -->" in (publish.workspace.get().home / name).read_text()


def test_overlapping_points_share_one_label():
    points = pd.DataFrame({"model": ["a", "a", "a", "b"], "method": ["fp32", "fp32-nn", "qint8", "fp32"],
                           "s_per_30s": [1.0, 1.05, 0.8, 1.0], "wer_pct": [6.0, 6.0, 7.0, 6.0]})
    assert figures._labels(points) == {(0.8, 7.0, "a"): "a qint8", (1.0, 6.0, "a"): "a fp32 / fp32-nn", (1.0, 6.0, "b"): "b fp32"}


def test_fastest_at_equal_accuracy_ignores_measurably_worse_methods(csvs):
    timings, accuracy = csvs
    accuracy.loc[(accuracy.model == "base") & (accuracy.method == "qint8"), ["ci_low", "ci_high"]] = [0.005, 0.02]
    table = tables.fastest_at_equal_accuracy(timings, accuracy).set_index("model")
    assert table.loc["base", "method"] in ("fp32", "fp32-nn")
    assert table.loc["tiny.en", "method"] in ("fp32", "fp32-nn") and table.loc["tiny.en", "speedup_vs_fp32"] >= 1.0


def test_headline_tables_ignore_thread_scaling_and_longform_rows(csvs):
    timings, accuracy = csvs
    everything = pd.concat([timings, timings.assign(threads=1, wall_s=2 * timings.wall_s),
                            timings.assign(audio_id="longform-x", audio_s=300.0, wall_s=10 * timings.wall_s)])
    assert tables.original_table(everything, tables.published()).equals(tables.original_table(timings, tables.published()))
    assert tables.speed_accuracy(everything, accuracy).equals(tables.speed_accuracy(timings, accuracy))
    scaling = figures.plot_thread_scaling(everything).axes[0]
    assert {line.get_label(): list(line.get_ydata()) for line in scaling.get_lines()} == {f"{m} {k}": [2 * w, w] for (m, k), w in WALLS.items()}


def test_headline_compares_our_fastest_equal_method_with_each_peers_fastest():
    walls = {("fast-qint8", "whisper_cpu"): 1.0, ("qint8", "whisper_cpu"): 0.5, ("fp32", "whisper_cpu"): 3.0,
             ("faster-whisper-int8", "faster-whisper"): 1.5, ("faster-whisper-fp32", "faster-whisper"): 2.0,
             ("whisper.cpp-q8_0", "whisper.cpp"): 1.2}
    timings = pd.DataFrame([
        {"run_id": "r1", **ENV, "system": system, "model": "tiny.en", "method": method, "beam_size": beam, "repeat": 0,
         "wall_s": wall * beam ** 0.5, "encoder_s": 0.1, "decoder_s": 0.5}
        for (method, system), wall in walls.items() for beam in (1, 5)
    ])
    accuracy = pd.DataFrame([
        {"model": "tiny.en", "method": method, "language": "en", "beam_size": beam, "wer": 0.06,
         "wer_delta": 0.0 if method != "qint8" else 0.02, "ci_low": -0.01 if method != "qint8" else 0.005, "ci_high": 0.02}
        for method, _ in walls for beam in (1, 5)
    ])
    table = tables.headline(timings, accuracy).set_index("beam")
    assert list(table.index) == [1, 5]
    assert table.loc[1, "ours"] == "fast-qint8"  # qint8 is faster but measurably less accurate
    assert table.loc[1, "faster-whisper_best"] == "faster-whisper-int8" and table.loc[1, "vs_faster-whisper"] == 1.5
    assert table.loc[5, "vs_whisper.cpp"] == 1.2


def test_peak_share_uses_the_peak_of_each_methods_number_format(csvs):
    timings, _ = csvs
    peaks = pd.DataFrame([{"run_id": "r1", "threads": 2, "arithmetic": a, "gflops": g} for a, g in (("fp32", 100.0), ("int8", 400.0))])
    table = tables.peak_share(timings, peaks).set_index(["model", "method"])
    fp32, qint8 = table.loc[("tiny.en", "fp32")], table.loc[("tiny.en", "qint8")]
    assert fp32.arithmetic == "fp32" and qint8.arithmetic == "int8"
    assert fp32.encoder_pct_peak == pytest.approx(100 * fp32.encoder_gflops / 100, abs=0.1)
    assert qint8.encoder_pct_peak == pytest.approx(100 * qint8.encoder_gflops / 400, abs=0.1)
    assert fp32.encoder_gflops == pytest.approx(36.94 / 0.5, rel=1e-3)  # tiny's 36.94 GFLOP encoder in 0.5 s


def test_tables_of_a_beam_width_the_run_lacks_are_empty_not_errors(csvs):
    timings, accuracy = csvs
    assert tables.fastest_at_equal_accuracy(timings, accuracy, beam=5).empty


def test_a_batched_job_leaves_the_window_tables_to_the_window_run_and_gets_its_own(csvs):
    timings, accuracy = csvs
    recording = tables.inputs.LONGFORM[0][0]
    long = pd.DataFrame([
        {"run_id": "r2", **ENV, "audio_id": recording, "audio_s": 300.0, "model": "base", "method": k, "system": s, "batch_size": b,
         "threads": t, "repeat": 0, "wall_s": w, "encoder_s": 0.5}
        for k, s, b, t, w in [("fast-qint8-pc-batched", "whisper_cpu", 8, 2, 10.0), ("faster-whisper-int8-batched", "faster-whisper", 8, 2, 15.0),
                              ("fast-qint8-pc-batched", "whisper_cpu", 2, 2, 20.0), ("fast-qint8-pc-batched", "whisper_cpu", 8, 1, 15.0),
                              ("fast-qint8-pc", "whisper_cpu", 1, 2, 30.0), ("fast-qint8-pc", "whisper_cpu", 1, 1, 50.0),
                              ("whisper.cpp-q8_0-parallel", "whisper.cpp", 8, 2, 40.0)]])
    both = pd.concat([timings.assign(batch_size=1), long], ignore_index=True)  # batch 1 where none is said, as results.read fills it
    assert tables.latest_run(both) == "r1"  # the README's window tables stay on the window run
    table = tables.batched_table(both, pd.DataFrame()).set_index(["method", "batch_size"])
    assert table.loc[("fast-qint8-pc-batched", 8), "vs_fw_int8_batched"] == 1.5
    assert table.loc[("fast-qint8-pc-batched", 8), "x_realtime"] == 30.0 and ("fast-qint8-pc", 1) in table.index
    assert table.windows.isna().all()  # no long-form gate in the run: nothing said about windows
    gate = pd.DataFrame([{"run_id": "r2", "model": "base", "method": k, "audio_id": a, "windows": n, "wer": 0.1,
                          "wer_delta": 0.0, "ci_low": -0.01, "ci_high": 0.01}
                         for k, n in [("fast-qint8-pc-batched", 18), ("faster-whisper-int8-batched", 12), ("whisper.cpp-q8_0-parallel", None)]
                         for a in (recording, "all")])
    table = tables.batched_table(both, gate).set_index(["method", "batch_size"])
    assert table.loc[("fast-qint8-pc-batched", 8), "windows"] == 18 and table.loc[("fast-qint8-pc-batched", 8), "encoder_pct"] == 90
    assert table.loc[("faster-whisper-int8-batched", 8), "encoder_pct"] == 40 and table.loc[("fast-qint8-pc-batched", 2), "encoder_pct"] == 45
    assert pd.isna(table.loc[("whisper.cpp-q8_0-parallel", 8), "windows"]) and pd.isna(table.loc[("whisper.cpp-q8_0-parallel", 8), "encoder_pct"])
    threads = tables.batched_threads(both).set_index("method")
    assert threads.loc["fast-qint8-pc-batched", "x real time, 1 thread"] == 20.0 and threads.loc["fast-qint8-pc", "x real time, 2 threads"] == 10.0
    speed, peak = figures.plot_batching(both).axes  # at 2 threads: a sweep is a line, one batch size a level
    assert {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in speed.get_lines()} == {
        "base fast-qint8-pc-batched": ([2, 8], [15.0, 30.0]), "base faster-whisper-int8-batched (batch 8 only)": ([0, 1], [20.0, 20.0]),
        "base fast-qint8-pc (batch 1 only)": ([0, 1], [10.0, 10.0]), "base whisper.cpp-q8_0-parallel (batch 8 only)": ([0, 1], [7.5, 7.5])}
    assert peak.get_lines() == []  # no memory measured


def test_a_batched_run_on_another_machine_gets_its_own_tables_and_replaces_nothing(csvs, scratch):
    timings, _ = csvs
    recording = tables.inputs.LONGFORM[0][0]
    xeon = {**ENV, "cpu": "Intel(R) Xeon(R) Processor", "isa": "avx2 avx512_vnni amx_int8", "physical_cores": 16}

    def rows(run, env, threads, ours, peer):
        return [{"run_id": run, **env, "audio_id": recording, "audio_s": 300.0, "model": "base", "method": k, "system": s, "batch_size": 8,
                 "threads": threads, "repeat": 0, "wall_s": w, "encoder_s": 0.5}
                for k, s, w in [("fast-qint8-pc-batched", "whisper_cpu", ours), ("faster-whisper-int8-batched", "faster-whisper", peer)]]

    both = pd.concat([timings, pd.DataFrame(rows("r2", ENV, 2, 10.0, 15.0) + rows("r3", xeon, 16, 3.0, 2.0))], ignore_index=True)
    assert tables.batched_runs(both) == ["r2", "r3"]  # the window run's machine first, though r3 is newer
    assert tables.batched_table(both, pd.DataFrame()).set_index("method").loc["fast-qint8-pc-batched", "vs_fw_int8_batched"] == 1.5
    assert tables.batched_table(both, pd.DataFrame(), "r3").set_index("method").loc["fast-qint8-pc-batched", "vs_fw_int8_batched"] == 0.67
    for run, env, wer in (("r2", ENV, 0.1), ("r3", xeon, 0.2)):  # the same configuration gated on two machines
        results.append("longform", [{"run_id": run, **env, "model": "base", "method": "fast-qint8-pc-batched", "audio_id": "all",
                                     "decoding": "fallback+cond", "wer": wer, "wer_delta": 0.0, "ci_low": -0.01, "ci_high": 0.01}])
    gate = tables.load_longform()
    assert sorted(gate.run_id) == ["r2", "r3"]  # neither machine's row hides the other's
    assert list(tables.on_machine(gate, tables.reference_machine(both)).wer) == [0.1]
    markdown = publish.batched_markdown(both, gate, "r3", first=False)
    assert "another machine" in markdown and "Intel(R) Xeon(R) Processor, 16 threads on 16 cores" in markdown


def test_floor_counts_the_peers_windows_our_encoder_and_each_tokens_cross_attention(csvs):
    from whisper_cpu import models
    from whisper_cpu.bench import floor

    assert floor.cross_attention_ms(models.dims("tiny.en"), torch.float32, windows=2, repeats=2) > 0
    assert floor.decoder_step_ms("tiny.en", 1, windows=2, repeats=2) > 0
    timings, _ = csvs
    recording, other = (name for name, _, _ in tables.inputs.LONGFORM)
    long = pd.DataFrame([{"run_id": "r2", **ENV, "audio_id": a, "audio_s": 300.0, "model": "base", "method": k, "system": "s", "batch_size": 8,
                          "threads": 2, "repeat": r, "wall_s": w + r, "encoder_s": e, "tokens": 500}
                         for a in (recording, other) for r in (0, 1, 2)
                         for k, w, e in ((floor.OURS, 10.0, 0.5), (floor.PEER, 12.0, 0.7))])
    gate = pd.DataFrame([{"run_id": "r2", "model": "base", "method": floor.PEER, "audio_id": a, "windows": 12} for a in (recording, other, "all")])
    seen = floor._batched_rows(pd.concat([timings, long], ignore_index=True), gate, "r2", "base")
    assert seen == {"fw_s": 26.0, "fw_windows": 24, "encoder_s_per_window": 0.5, "tokens": 1000, "threads": 2}
    assert floor._batched_rows(pd.concat([timings, long], ignore_index=True), gate.iloc[:0], "r2", "base") is None  # no gate: no windows


DECODING = DecodeOptions().tag
HERE = {**ENV, "cpu": machine.cpu_name(), "isa": machine.isa(), "decoding": DECODING, "batch_size": 1, "repeat": 0}


def category_rows(run, model, method, wer_low, ins_low):
    """Rows of the harder material as `accuracy.score_categories` writes them: a category with speech and one without."""
    return [{"run_id": run, **HERE, "material": tables.inputs.HARDER, "model": model, "method": method, "language": "en",
             "category": category, "n_utterances": 4, "wer": 0.1 if speech else None, "nonspeech_words_per_min": None if speech else 2.0,
             "tail_insertions": 1, **({} if method == "fp32" else {
                 **({"wer_delta": wer_low + 0.01, "wer_ci_low": wer_low, "wer_ci_high": wer_low + 0.02} if speech else {}),
                 "ins_per_min_delta": ins_low + 0.5, "ins_ci_low": ins_low, "ins_ci_high": ins_low + 1.0})}
            for category, speech in (("noise", True), (tables.inputs.NONSPEECH, False))]


def gate_rows(run, rows, **extra):
    return pd.DataFrame([{"run_id": run, **HERE, "model": "base", "method": k, "wer": 0.1, "wer_delta": lo, "ci_low": lo,
                          "ci_high": None if lo is None else lo + 0.014, **extra, **more} for k, lo, more in rows])


def test_the_headline_is_what_auto_runs_against_fp32_and_the_peers_of_the_same_run(tmp_path):
    recordings = [name for name, _, _ in tables.inputs.LONGFORM]
    timings = pd.DataFrame(
        [{**HERE, "run_id": "w", "model": "base", "method": k, "system": s, "wall_s": w}
         for k, s, w in (("fp32", "whisper_cpu", 4.0), ("fast-qint8-pc", "whisper_cpu", 2.0), ("faster-whisper-int8", "faster-whisper", 3.0),
                         ("whisper.cpp-q8_0", "whisper.cpp", 5.0))]
        + [{**HERE, "run_id": "l", "audio_id": a, "audio_s": 150.0, "model": "base", "method": k, "system": s, "batch_size": b, "wall_s": w}
           for a in recordings for k, s, b, w in (("fast-qint8-pc-batched", "whisper_cpu", 8, 5.0), ("fast-qint8-pc-batched", "whisper_cpu", 1, 50.0),
                                                  ("faster-whisper-int8-batched", "faster-whisper", 8, 6.0), ("fast-qint8-pc", "whisper_cpu", 1, 8.0))]
        + [{**HERE, "cpu": "Other CPU", "run_id": "o", "model": "base", "method": registry.DEFAULT, "wall_s": 1.0}])
    measured = [("fp32", None, {}), ("fast-qint8-pc", -0.01, {}), ("fast-qint8-pc-batched", -0.002, {})]
    short = gate_rows("a", measured, language="en")
    long = gate_rows("l", [(k, lo, {"wall_s": w}) for (k, lo, _), w in zip(measured, (30.0, 16.0, 10.0))], audio_id="all")
    categories = pd.DataFrame([r for k in ("fp32", "fast-qint8-pc", "fast-qint8-pc-batched") for r in category_rows("c", "base", k, -0.01, -0.5)])
    hard = gate_rows("h", measured, audio_id="all")
    table = tables.auto_table(timings, short, long, DECODING, categories, hard).set_index("CPU")
    here = table.loc[f"{HERE['cpu']} [{HERE['isa']}], 2 threads"]
    assert here.to_dict() == {"model": "base", "`auto` runs": "fast-qint8-pc-batched", "s per 30 s": "1.00 (long recordings)",
                              "vs fp32": "3.00x (gate)",  # fp32 was not timed on the recordings: both from the run's long-form gate
                              "vs faster-whisper": "1.20x (int8-batched)", "vs whisper.cpp": "",  # the sweep's batch 1 is not auto's
                              "ΔWER short clips": "-0.20 [-0.20, +1.20]", "ΔWER long recordings": "-0.20 [-0.20, +1.20]",
                              "harder gates": "passes", "timed in run": "l"}
    other = table.loc["Other CPU [avx2], 2 threads" if HERE["isa"] == "avx2" else f"Other CPU [{HERE['isa']}], 2 threads"]
    assert other["`auto` runs"] == "fast-fp16w (default: nothing gated here)" and other["s per 30 s"] == "1.00 (30 s window)"

    path = tmp_path / "choices.json"  # what the transcriber itself chooses from the same rows
    path.write_text(json.dumps({"choices": tables.choices(timings, short, long, DECODING, categories, hard)}))
    assert transcribe.choose_method("base", 2, path)[0] == "fast-qint8-pc-batched"

    later = gate_rows("z", [("fp32", None, {"wall_s": 29.0})], audio_id="all")  # a later gate run of fp32 and another method
    newest = pd.concat([long, later], ignore_index=True).drop_duplicates(["model", "method"], keep="last")
    again = tables.auto_table(timings, short, newest, DECODING, categories, hard, pd.concat([long, later], ignore_index=True))
    assert again.set_index("CPU").loc[here.name, "vs fp32"] == "3.00x (gate)"  # still the timing run's own gate
    assert tables.auto_table(timings, short, newest, DECODING, categories, hard).set_index("CPU").loc[here.name, "vs fp32"] == ""

    unproven = tables.auto_table(timings, short, long, DECODING).set_index("CPU").loc[here.name]  # no harder gate measured yet
    path.write_text(json.dumps({"choices": tables.choices(timings, short, long, DECODING)}))
    assert transcribe.choose_method("base", 2, path)[0] == "fp32"
    assert unproven.to_dict() == {"model": "base", "`auto` runs": "fp32 (no faster method passes every gate here)", "s per 30 s": "4.00 (30 s window)",
                                  "vs fp32": "1.00x", "vs faster-whisper": "0.75x (int8)", "vs whisper.cpp": "1.25x (q8_0)",
                                  "ΔWER short clips": "baseline", "ΔWER long recordings": "baseline", "harder gates": "baseline", "timed in run": "w"}


def test_the_harder_gates_say_per_category_where_a_method_loses_or_adds_words(scratch):
    assert publish.harder_markdown() == ("The harder material (`harder-seed0`): not measured yet (`make harder`).\n\n"
                                         "Long recordings of real hard speech (`hard`): not measured yet (`make harder`).\n")
    for run, methods in (("h1", ("fp32", "fast-qint8-pc")), ("h2", ("fp32", "fast-fp16w"))):  # each run scored against its own fp32
        results.append("longform", [{"run_id": run, **ENV, "model": "base", "method": m, "audio_id": "all", "material": "hard",
                                     "decoding": "fallback+cond", "beam_size": 1, "wall_s": 10.0, "audio_s": 100.0, "wer": 0.3, "wer_delta": 0.0,
                                     "ci_low": -0.01, "ci_high": 0.01, "fallbacks": 0, "windows": 4, "deletions": 1, "insertions": 1,
                                     "substitutions": 1, "repeated_ngrams": 0} for m in methods])
    hard = publish.harder_markdown().split("Long recordings of real hard speech")[1:]
    assert [part.split("`")[3] for part in hard] == ["h2", "h1"]  # newest first
    assert "| fast-fp16w " in hard[0] and "| fp32 " in hard[0] and "| fast-qint8-pc " in hard[1]
    results.append("categories", category_rows("c1", "base", "fp32", 0, 0) + category_rows("c1", "base", "fast-qint8-pc", -0.01, -0.5)
                   + category_rows("c1", "base", "fast-qint8", -0.01, 0.5))
    rows = tables.load_categories()
    table = tables.categories_table(rows).set_index(["model", "category"])
    assert list(table.columns) == ["clips", "fp32 WER %", "fp32 words/min on non-speech", "fast-qint8-pc ΔWER", "fast-qint8-pc Δwords/min",
                                   "fast-qint8 ΔWER", "fast-qint8 Δwords/min"]
    assert table.loc[("base", "noise")].fillna("").to_dict() == {
        "clips": 4, "fp32 WER %": 10.0, "fp32 words/min on non-speech": "", "fast-qint8-pc ΔWER": "+0.00 [-1.00, +1.00]",
        "fast-qint8-pc Δwords/min": "+0.00 [-0.50, +0.50]", "fast-qint8 ΔWER": "+0.00 [-1.00, +1.00]", "fast-qint8 Δwords/min": "+1.00 [+0.50, +1.50]"}
    assert table.loc[("base", "nonspeech"), "fp32 words/min on non-speech"] == 2.0 and table.loc[("base", "nonspeech"), "fast-qint8 ΔWER"] == ""
    assert tables.category_verdicts(rows).to_dict("records") == [
        {"model": "base", "method": "fast-qint8-pc", "verdict": "passes every category"},
        {"model": "base", "method": "fast-qint8", "verdict": "fails on noise, nonspeech"}]  # more words written past the reference in both
    results.append("longform", gate_rows("h1", [("fp32", None, {}), ("fast-qint8-pc", -0.01, {})], audio_id="all", material=tables.inputs.HARD,
                                         audio_s=600.0, wall_s=60.0, fallbacks=0, windows=20, deletions=1, insertions=2, substitutions=3,
                                         repeated_ngrams=0, system="whisper_cpu").to_dict("records"))
    markdown = publish.harder_markdown()
    assert "run `c1` on" in markdown and "| base    | noise" in markdown and "- `base` `fast-qint8`: fails on noise, nonspeech\n" in markdown
    assert "not measured" not in markdown and "run `h1`" in markdown and "| base    | fast-qint8-pc | whisper_cpu" in markdown
