"""The report's figures, drawn from the derived tables; a figure whose measurements are missing is skipped."""

import re
from pathlib import Path

import pandas as pd

from .. import registry
from . import inputs
from .tables import (PUBLISHED_CPU, _ratio, batched_runs, compare, headline, latest_run, long_timings, longform_table, main_rows,
                     on_machine, pareto_front, reference_machine, sizes_runs, sizes_table, speed_accuracy, summary)

MODEL_STYLES = ["o", "s", "^", "D"]  # marker per model, in order of appearance
MODEL_LINES = ["-", "--", ":", "-."]  # line style per model, in order of appearance


def colour(system: str) -> str:
    return next((e.system.colour for e in registry.REGISTRY.values() if e.system.name == system), "tab:purple")


def machine_label(frame: pd.DataFrame, threads: bool = True) -> str:
    row = frame.iloc[-1]
    used = f"{row['threads']} threads on " if threads else ""
    return f"{row['cpu']}, {used}{row['physical_cores']} cores [{row['isa']}]"


def _figure(width: float = 8, height: float = 4.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def plot_speedup(timings: pd.DataFrame, reference: pd.DataFrame, run_id: str | None = None):
    """qint8 over fp32 (nn.Linear) per model size: ours beside the published speedups."""
    run_id = run_id or latest_run(timings)
    table = compare(timings, reference, run_id)
    sizes = list(dict.fromkeys(reference.model))
    ours = {m.split(".")[0]: (m, s) for m, s in zip(table.model, table.qint8_speedup)}
    published_ = {m.split(".")[0]: s for m, s in zip(table.model, table.published_qint8_speedup)}
    pub_cpu = reference[reference.device == "cpu"]
    for size in sizes:
        times = pub_cpu[pub_cpu.model == size].set_index("dtype").inference_time_s
        published_.setdefault(size, _ratio(times.get("fp32"), times.get("qint8")))
    fig, ax = _figure()
    x = range(len(sizes))
    run = main_rows(timings, run_id)
    mine = [ours.get(s, (None, None))[1] for s in sizes]
    bars = ax.bar([i - 0.2 for i in x], [v or 0 for v in mine], 0.4, label=f"ours: {machine_label(run)}", color="tab:blue")
    ax.bar([i + 0.2 for i in x], [published_.get(s) or 0 for s in sizes], 0.4, label=f"published: {PUBLISHED_CPU}", color="tab:gray")
    for bar, value, size in zip(bars, mine, sizes):
        label = f"{value:.2f}x" if value else "not measured\nhere"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, max(value or 0, 0.05)), ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(list(x), [ours.get(s, (s, None))[0] for s in sizes])
    ax.set_ylabel("speedup of qint8 over fp32 (nn.Linear), x")
    ax.set_xlabel("Whisper model (ours: tiny.en is the English-only tiny, same size)")
    ax.set_title(f"Dynamic int8 speedup on the CPU (run {run_id})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_time_split(timings: pd.DataFrame, run_id: str | None = None):
    """Where a 30 s window's time goes: encoder vs decoder per model x method, with the full transcribe beside."""
    run = main_rows(timings, run_id)
    table = summary(run[run.device == "cpu"])
    labels = [f"{m}\n{k}" for m, k in zip(table.model, table.method)]
    fig, ax = _figure(min(16, max(6, 0.9 * len(labels))), 5)
    if len(labels) > 8:
        ax.tick_params(axis="x", labelsize=7, rotation=90)
    ax.bar(labels, table.encoder_s, label="encoder (one 30 s window)", color="tab:blue")
    ax.bar(labels, table.decoder_s, bottom=table.encoder_s, label="decoder loop (same window)", color="tab:orange")
    ax.scatter(labels, table.wall_s, marker="_", s=600, color="black", label="full transcribe (file to text)", zorder=3)
    ax.set_ylabel("seconds (median over repeats)")
    ax.set_ylim(0, 1.35 * max(table.wall_s.max(), (table.encoder_s + table.decoder_s).max()))
    ax.set_title(f"Encoder vs decoder time\n{machine_label(run)}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _labels(points: pd.DataFrame) -> dict[tuple, str]:
    """One label per cluster of points that would overlap (same model and WER, time within 10%)."""
    labels: dict[tuple, str] = {}
    anchors: list[tuple] = []
    for r in points.sort_values("s_per_30s").itertuples():
        anchor = next((a for a in anchors if a[2] == r.model and a[1] == r.wer_pct and r.s_per_30s <= 1.1 * a[0]), None)
        if anchor is None:
            anchor = (r.s_per_30s, r.wer_pct, r.model)
            anchors.append(anchor)
            labels[anchor] = f"{r.model} {r.method}"
        else:
            labels[anchor] += f" / {r.method}"
    return labels


def plot_speed_vs_wer(timings: pd.DataFrame, accuracy: pd.DataFrame, run_id: str | None = None):
    """Speed against accuracy, one point per model x method, the Pareto front marked."""
    points = speed_accuracy(timings, accuracy, run_id)
    fig, ax = _figure()
    markers = {m: MODEL_STYLES[i % len(MODEL_STYLES)] for i, m in enumerate(points.model.unique())}
    for (system, model), group in points.groupby(["system", "model"], sort=False):
        ax.scatter(group.s_per_30s, group.wer_pct, s=40, marker=markers[model], color=colour(system),
                   label=f"{system}, {model}", zorder=3)
    for (x, y, _), label in _labels(points).items():
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6)
    front = pareto_front(points, "s_per_30s", "wer_pct")
    ax.step(front.s_per_30s, front.wer_pct, where="post", color="tab:red", lw=1, ls="--", label="Pareto front")
    ax.set_xlabel("seconds to transcribe 30 s of audio (median; lower is faster)")
    ax.set_ylabel("WER on the English clips, % (lower is better)")
    run = main_rows(timings, run_id)
    ax.set_title(f"Speed vs accuracy\n{machine_label(run)}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def plot_thread_scaling(timings: pd.DataFrame, run_id: str | None = None):
    """Median time against thread count on the 30 s window, once a run has several thread counts (else None)."""
    run_id = run_id or latest_run(timings)
    run = timings[(timings.run_id == run_id) & (timings.audio_id == timings[timings.run_id == run_id].audio_id.iloc[0])]
    run = run[run.beam_size == run.beam_size.min()]
    if "threads" not in run or run.threads.nunique() < 2:
        return None
    table = run.groupby(["model", "method", "threads"]).wall_s.median().reset_index()
    table = table[table.groupby(["model", "method"]).threads.transform("nunique") > 1]
    fig, ax = _figure()
    colors = {m: f"C{i}" for i, m in enumerate(table.method.unique())}
    for (model, method), group in table.groupby(["model", "method"]):
        style = "-" if model == table.model.iloc[0] else "--"
        ax.plot(group.threads, group.wall_s, style, marker="o", color=colors[method], label=f"{model} {method}")
    ax.set_xticks(sorted(table.threads.unique()))
    ax.set_xlabel("threads")
    ax.set_ylabel("seconds per transcribe (median)")
    ax.set_title(f"Thread scaling\n{machine_label(run, threads=False)}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_memory(memory: pd.DataFrame):
    """Peak resident memory and weights on disk per configuration (None until memory is measured)."""
    if memory is not None and len(memory):  # the batched job's memory per batch size is in the batching figure
        memory = memory[~memory.audio_id.isin([name for name, _, _ in inputs.LONGFORM]) & ~memory.audio_id.str.startswith(inputs.HOUR_PREFIX)]
    if memory is None or memory.empty:
        return None
    table = memory[memory.run_id == memory.run_id.iloc[-1]]
    labels = [f"{m}\n{k}" for m, k in zip(table.model, table.method)]
    fig, ax = _figure(max(7, 0.8 * len(labels)), 4.5)
    ax.bar(labels, table.peak_rss_mb, color="tab:blue", label="peak resident memory (one transcribe)")
    ax.bar(labels, table.weights_disk_mb, width=0.4, color="tab:orange", label="weights on disk")
    ax.set_ylabel("MB")
    ax.tick_params(axis="x", labelsize=6, rotation=90)
    ax.set_title(f"Memory, each configuration in its own process\n{machine_label(table)}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def plot_headline(timings: pd.DataFrame, accuracy: pd.DataFrame, run_id: str | None = None):
    """Ours against each peer's fastest configuration, per model and beam width, seconds per 30 s of audio."""
    table = headline(timings, accuracy, run_id)
    if not len(table):
        return None
    fig, ax = _figure()
    labels = [f"{m}\n{'greedy' if b == 1 else f'beam {b}'}" for m, b in zip(table.model, table.beam)]
    x = range(len(table))
    for i, (column, system) in enumerate([("ours_s", "whisper_cpu"), ("faster-whisper_s", "faster-whisper"), ("whisper.cpp_s", "whisper.cpp")]):
        values = table.get(column, pd.Series([None] * len(table))).fillna(0)
        bars = ax.bar([j + (i - 1) * 0.27 for j in x], values, 0.27, color=colour(system),
                      label={"whisper_cpu": "ours (fastest at fp32's WER)"}.get(system, f"{system} (fastest configuration)"))
        names = table.ours if system == "whisper_cpu" else table.get(f"{system}_best", pd.Series([""] * len(table))).fillna("").str.removeprefix(f"{system}-")
        for bar, value, name in zip(bars, values, names):
            if value:
                ax.annotate(f"{value:.2f}\n{name}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("seconds per 30 s of audio (median, full transcribe)")
    ax.set_ylim(0, 1.25 * max(table.filter(like="_s").max()))
    ax.set_title(f"Ours vs the best peers, same run\n{machine_label(main_rows(timings, run_id))}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_longform(longform: pd.DataFrame):
    """The long-form gate: seconds to transcribe the long recordings against their WER, fallback windows beside."""
    table = longform_table(longform)
    if not len(table):
        return None
    fig, ax = _figure()
    markers = {m: MODEL_STYLES[i % len(MODEL_STYLES)] for i, m in enumerate(table.model.unique())}
    for r in table.itertuples():
        ax.scatter(r.wall_s, r.wer_pct, marker=markers[r.model], color=colour(r.system), s=40, zorder=3)
    for (x, y, _), label in _labels(table.rename(columns={"wall_s": "s_per_30s"})).items():
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6)
    ax.set_xlabel(f"seconds to transcribe {table.audio_s.iloc[0]:.0f} s of long recordings (whole files, as users do)")
    ax.set_ylabel("WER, % (lower is better)")
    rows = longform[longform.run_id == table.run_id.iloc[0]]
    ax.set_title(f"Long recordings, transcribed as users do (fallback, conditioning): run {table.run_id.iloc[0]}\n{machine_label(rows)}", fontsize=9)
    return fig


def plot_batching(timings: pd.DataFrame, memory: pd.DataFrame | None = None, run_id: str | None = None):
    """Real-time factor and peak memory against batch size, on the long recording the sweep ran on."""
    medians = long_timings(timings, run_id)
    if not len(medians) or medians.batch_size.nunique() < 2:
        return None
    medians = medians[medians.threads == medians.threads.max()]
    recording = medians.groupby("audio_id").batch_size.nunique().idxmax()
    rows = medians[medians.audio_id == recording]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), dpi=110, layout="constrained")
    speed, peak = fig.subplots(1, 2)
    lines = {m: MODEL_LINES[i % len(MODEL_LINES)] for i, m in enumerate(rows.model.unique())}
    for (model, method, system), group in rows.groupby(["model", "method", "system"], sort=False):
        group = group.sort_values("batch_size")
        style = dict(color=colour(system), linestyle=lines[model], marker="o" if "batched" in method else "s")
        if group.batch_size.nunique() > 1:
            speed.plot(group.batch_size, group.audio_s / group.wall_s, label=f"{model} {method}", **style)
        else:  # timed at one batch size only (1: a sequential path): its level, for reference
            speed.axhline(float(group.audio_s.iloc[0] / group.wall_s.iloc[0]), label=f"{model} {method} (batch {group.batch_size.iloc[0]} only)", alpha=0.6,
                          color=style["color"], linestyle=style["linestyle"], linewidth=1)
    speed.set_xscale("log", base=2)
    speed.set_xlabel("batch size (windows decoded together)")
    speed.set_ylabel("x real time (audio seconds per second, higher is faster)")
    speed.legend(fontsize=6)
    if memory is not None and len(memory) and "batch_size" in memory:
        mem = memory[(memory.run_id == rows.run_id.iloc[0]) & (memory.audio_id == recording)].dropna(subset=["batch_size"])
        for (model, method, system), group in mem.groupby(["model", "method", "system"], sort=False):
            group = group.sort_values("batch_size")
            peak.plot(group.batch_size, group.peak_rss_mb, color=colour(system), linestyle=lines.get(model, "-"), marker="o", label=f"{model} {method}")
        peak.set_xscale("log", base=2)
        peak.legend(fontsize=6)
    peak.set_xlabel("batch size")
    peak.set_ylabel("peak resident memory, MB")
    fig.suptitle(f"Batched decoding of {recording} ({rows.audio_s.iloc[0]:.0f} s): run {rows.run_id.iloc[0]}\n{machine_label(timings[(timings.run_id == rows.run_id.iloc[0]) & (timings.threads == rows.threads.max())])}",
                 fontsize=9)
    return fig


def plot_sizes(forced_rows: pd.DataFrame, reference: pd.DataFrame):
    """qint8 and our fastest method over fp32 (nn.Linear) for each of the original's sizes: every machine's newest forced
    run beside the published speedups."""
    runs = sizes_runs(forced_rows)
    if not runs:
        return None
    sizes = list(dict.fromkeys(reference.model))
    pub = reference[reference.device == "cpu"]
    published_ = [_ratio(*(pub[pub.model == m].set_index("dtype").inference_time_s.get(k) for k in ("fp32", "qint8"))) for m in sizes]
    series = [(f"published qint8: {PUBLISHED_CPU}", published_, "tab:gray", None)]
    for run_id, hatch in zip(runs, ("", "//", "..")):
        table = sizes_table(forced_rows, reference, run_id)
        table = table[table.weights == "random"].set_index("model")  # every size on the same footing
        rows = forced_rows[forced_rows.run_id == run_id]
        label = machine_label(rows)
        series.append((f"qint8: {label}", [table.qint8_speedup.get(m) for m in sizes], "tab:blue", hatch))
        series.append((f"fast-qint8-pc: {label}", [table.fast_speedup.get(m) for m in sizes], "tab:cyan", hatch))
    fig, ax = _figure(9, 6)
    width = 0.8 / len(series)
    for i, (label, values, colour, hatch) in enumerate(series):
        positions = [j - 0.4 + width * (i + 0.5) for j in range(len(sizes))]
        bars = ax.bar(positions, [v or 0 for v in values], width, label=label, color=colour, hatch=hatch, edgecolor="white")
        for bar, value in zip(bars, values):
            if value:
                ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=6)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_ylabel("speedup over fp32 (nn.Linear), x")
    ax.set_xlabel("Whisper size (ours: official shapes, random weights, the same 86 decoder steps: timing only)")
    ax.set_title("The original's table on other CPUs: dynamic int8 and our fastest method", fontsize=10)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    return fig


def _slug(timings: pd.DataFrame, run_id: str) -> str:
    """A file name for a run's machine: `Intel(R) Xeon(R) Processor` -> `intel_xeon_processor`."""
    cpu = timings[timings.run_id == run_id].cpu.iloc[0]
    return "_".join(re.findall(r"[a-z0-9]+", re.sub(r"\((r|tm)\)", "", cpu.lower())))


def write_figures(timings: pd.DataFrame, accuracy: pd.DataFrame, reference: pd.DataFrame, folder: Path, memory: pd.DataFrame | None = None,
                  longform: pd.DataFrame | None = None, forced_rows: pd.DataFrame | None = None) -> list[Path]:
    """Every figure that the results support, as PNG files; figures without data are skipped."""
    figures = {
        "speedup_vs_published": plot_speedup(timings, reference),
        "time_split": plot_time_split(timings),
        "speed_vs_wer": plot_speed_vs_wer(timings, accuracy) if len(accuracy) else None,
        "headline": plot_headline(timings, accuracy) if len(accuracy) else None,
        "thread_scaling": plot_thread_scaling(timings),
        "memory": plot_memory(memory),
        "longform": plot_longform(on_machine(longform, reference_machine(timings))) if longform is not None else None,
        **{"batching" + (f"_{_slug(timings, run)}" if i else ""): plot_batching(timings, memory, run) for i, run in enumerate(batched_runs(timings))},
        "sizes": plot_sizes(forced_rows, reference) if forced_rows is not None else None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(folder / f"{name}.png")
            written.append(folder / f"{name}.png")
    return written

