import pandas as pd
import pytest
import torch
from matplotlib.pyplot import imread

from whisper_cpu import UserError
from whisper_cpu.bench import figures, publish, results, tables

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


def test_readme_table_is_replaced_between_markers(csvs, tmp_path):
    timings, accuracy = csvs
    markdown = publish.readme_table(timings, accuracy, tables.published())
    assert "Test CPU" in markdown and "| base" in markdown and "+1.00 [-1.00, +3.00]" in markdown
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\nafter\n")
    publish.update_readme(readme, markdown)
    publish.update_readme(readme, markdown)
    text = readme.read_text()
    assert text.count("| base") == markdown.count("| base") >= 4 and "old" not in text and text.endswith("<!-- results:end -->\nafter\n")
    readme.write_text("no markers")
    with pytest.raises(UserError, match="markers"):
        publish.update_readme(readme, markdown)


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
