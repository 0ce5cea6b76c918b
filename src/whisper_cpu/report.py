"""Tables derived from the raw result rows: medians, same-run speedups, and the published comparison."""

from pathlib import Path

import pandas as pd

from . import UserError
from .results import RESULTS, write_atomic

PUBLISHED = RESULTS / "published.csv"
FIGURES = RESULTS / "figures"
NOTEBOOKS = RESULTS.parent / "notebooks"
README = RESULTS.parent / "README.md"
KEYS = ["run_id", "model", "method", "device", "beam_size", "threads", "audio_id"]


def load_timings(path: Path) -> pd.DataFrame:
    if not Path(path).exists():
        raise UserError(f"no timings at {path}: run `make bench` first")
    return pd.read_csv(path)


def latest_run(timings: pd.DataFrame) -> str:
    return timings["run_id"].iloc[-1]


def main_rows(timings: pd.DataFrame, run_id: str | None = None, beam: int | None = None) -> pd.DataFrame:
    """A run's headline rows: its first input (the 30 s window) at its highest thread count, greedy unless `beam`."""
    run = timings[timings.run_id == (run_id or latest_run(timings))]
    run = run[run.audio_id == run.audio_id.iloc[0]]
    run = run[run.beam_size == (beam or run.beam_size.min())]
    return run[run.threads == run.threads.max()]


def summary(timings: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: medians over repeats, speedup against fp32 on the CPU of the same run."""
    table = (
        timings.groupby(KEYS, sort=False)
        .agg(
            system=("system", "first"), audio_s=("audio_s", "first"), repeats=("wall_s", "size"),
            load_s=("load_s", "first"), wall_s=("wall_s", "median"), encoder_s=("encoder_s", "median"),
            decoder_s=("decoder_s", "median"), window_tokens=("window_tokens", "median"),
            contended=("contended", "sum"),
        )
        .reset_index()
    )
    same = ["run_id", "model", "beam_size", "threads", "audio_id"]
    base = table[(table.method == "fp32") & (table.device == "cpu")].set_index(same)
    fp32 = table.set_index(same).index.map(base["wall_s"].to_dict())
    table["speedup_vs_fp32"] = (pd.Series(fp32, index=table.index, dtype=float) / table.wall_s).round(2)
    table["x_realtime"] = (table.audio_s / table.wall_s).round(2)
    table["decoder_ms_per_token"] = (1000 * table.decoder_s / table.window_tokens).round(2)
    return table


def latest_accuracy(path: Path | None) -> pd.DataFrame:
    """The newest accuracy row per model x method x language (empty when nothing was scored yet)."""
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=["model", "method", "language", "wer", "wer_delta", "ci_low", "ci_high"])
    table = pd.read_csv(path)
    return table.drop_duplicates(["model", "method", "language", "beam_size"], keep="last")


def with_wer(table: pd.DataFrame, accuracy: pd.DataFrame, language: str = "en") -> pd.DataFrame:
    """Add English WER and its delta against fp32 (95% CI) beside each timing row."""
    scores = accuracy[accuracy.language == language].copy()
    for column in ("wer_delta", "ci_low", "ci_high"):
        if column not in scores:
            scores[column] = float("nan")
    scores["wer_delta_ci"] = [_delta_ci(d, lo, hi) for d, lo, hi in zip(scores.wer_delta, scores.ci_low, scores.ci_high)]
    scores["wer_pct"] = (100 * scores.wer).round(2)
    keys = ["model", "method"] + (["beam_size"] if "beam_size" in scores and "beam_size" in table else [])
    return table.merge(scores[keys + ["wer_pct", "wer_delta_ci"]], on=keys, how="left")


def published(path: Path = PUBLISHED) -> pd.DataFrame:
    return pd.read_csv(path)


def compare(timings: pd.DataFrame, reference: pd.DataFrame, run_id: str | None = None, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our qint8 speedup over nn.Linear fp32 (the original's own comparison) beside the published one.

    Published sizes are matched by size: our tiny.en is the English-only tiny, same architecture and cost.
    """
    ours = summary(main_rows(timings, run_id).query("device == 'cpu'"))
    ours = ours[ours.beam_size == 1] if (ours.beam_size == 1).any() else ours
    ours = with_wer(ours, accuracy if accuracy is not None else latest_accuracy(None))
    cpu = reference[reference.device == "cpu"]
    rows = []
    for model in ours.model.unique():
        size = model.split(".")[0]
        mine = ours[ours.model == model].set_index("method")
        median = mine["wall_s"]
        pub = cpu[cpu.model == size].set_index("dtype")["inference_time_s"]
        audio_s = ours[ours.model == model].audio_s.iloc[0]
        rows.append({
            "model": model, "published_model": size if len(pub) else "",
            "fp32_s": median.get("fp32"), "fp32_nn_s": median.get("fp32-nn"), "qint8_s": median.get("qint8"),
            "qint8_speedup": _ratio(median.get("fp32-nn"), median.get("qint8")),
            "published_fp32_s": pub.get("fp32"), "published_qint8_s": pub.get("qint8"),
            "published_qint8_speedup": _ratio(pub.get("fp32"), pub.get("qint8")),
            "qint8_x_realtime": _ratio(audio_s, median.get("qint8")),
            "published_qint8_x_realtime": _ratio(30.0, pub.get("qint8")),
            "fp32_wer_pct": mine["wer_pct"].get("fp32"), "qint8_wer_pct": mine["wer_pct"].get("qint8"),
            "qint8_wer_delta_ci": mine["wer_delta_ci"].get("qint8"),
        })
    return pd.DataFrame(rows)


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b is not None and pd.notna(a) and pd.notna(b) else None


# --- the original's table, figures and the README table ------------------------------------------------

ORIGINAL_ROWS = [  # our method -> the original's (device, dtype, linear layer) row
    ("fp32", "cpu", "cpu", "fp32", "Linear"),
    ("fp32-nn", "cpu", "cpu", "fp32", "nn.Linear"),
    ("qint8", "cpu", "cpu", "qint8", "nn.Linear"),
    ("fp32", "cuda", "gpu", "fp32", "Linear"),
]
PUBLISHED_CPU = "AMD Ryzen 5 5600X (AVX2)"
SYSTEM_COLORS = {"whisper_cpu": "tab:blue", "faster-whisper": "tab:orange", "whisper.cpp": "tab:green"}


def machine_label(frame: pd.DataFrame, threads: bool = True) -> str:
    row = frame.iloc[-1]
    used = f"{row['threads']} threads on " if threads else ""
    return f"{row['cpu']}, {used}{row['physical_cores']} cores [{row['isa']}]"


MODEL_STYLES = ["o", "s", "^", "D"]  # marker per model, in order of appearance


def original_table(timings: pd.DataFrame, reference: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """The original's results table per model, our rows beside the published ones (speedup vs CPU fp32 nn.Linear)."""
    ours = summary(main_rows(timings, run_id))
    ours = ours[ours.beam_size == ours.beam_size.min()]
    rows = []
    for model in ours.model.unique():
        mine = ours[ours.model == model].set_index(["method", "device"])
        size = model.split(".")[0]
        base = mine["wall_s"].get(("fp32-nn", "cpu"))
        for method, device, shown, dtype, layer in ORIGINAL_ROWS:
            if (method, device) in mine.index:
                wall = mine.loc[(method, device), "wall_s"]
                audio_s = mine.loc[(method, device), "audio_s"]
                rows.append({"model": model, "source": "ours", "device": shown, "dtype": dtype, "linear_layer": layer,
                             "inference_s": round(wall, 3), "speedup": _ratio(base, wall), "x_realtime": _ratio(audio_s, wall)})
        pub = reference[reference.model == size]
        pub_base = pub[(pub.device == "cpu") & (pub.dtype == "fp32")].inference_time_s
        for r in pub.itertuples():
            rows.append({"model": model, "source": "published", "device": r.device, "dtype": r.dtype,
                         "linear_layer": r.linear_layer, "inference_s": r.inference_time_s,
                         "speedup": _ratio(pub_base.iloc[0], r.inference_time_s) if r.device == "cpu" and len(pub_base) else None,
                         "x_realtime": _ratio(r.audio_s, r.inference_time_s)})
    return pd.DataFrame(rows)


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


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The points no other point beats on both x and y (lower is better for both)."""
    ordered = points.sort_values([x, y])
    best, keep = float("inf"), []
    for index, value in ordered[y].items():
        if value < best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def speed_accuracy(timings: pd.DataFrame, accuracy: pd.DataFrame, run_id: str | None = None, language: str = "en", beam: int = 1) -> pd.DataFrame:
    """One row per model x method at one beam width: seconds per 30 s of audio (this run), corpus WER (latest scoring)."""
    table = summary(main_rows(timings, run_id, beam).query("device == 'cpu'"))
    table["s_per_30s"] = (table.wall_s * 30 / table.audio_s).round(3)
    scores = accuracy[(accuracy.language == language) & (accuracy.get("beam_size", 1) == beam)]
    scores = scores.reindex(columns=["model", "method", "wer", "wer_delta", "ci_low", "ci_high"])
    table = table.merge(scores, on=["model", "method"], how="inner")
    table["wer_pct"] = (100 * table.wer).round(2)
    return table[["model", "method", "system", "s_per_30s", "x_realtime", "speedup_vs_fp32", "wer_pct", "wer_delta", "ci_low", "ci_high"]]


def fastest_at_equal_accuracy(timings: pd.DataFrame, accuracy: pd.DataFrame, run_id: str | None = None, beam: int = 1) -> pd.DataFrame:
    """Per model and system, the fastest configuration not measurably less accurate than fp32 (CI reaches 0)."""
    points = speed_accuracy(timings, accuracy, run_id, beam=beam)
    equal = points[(points.method == "fp32") | (points.ci_low <= 0)]
    best = equal.loc[equal.groupby(["model", "system"]).s_per_30s.idxmin()].sort_values(["model", "s_per_30s"])
    best["delta_ci"] = [_delta_ci(d, lo, hi) for d, lo, hi in zip(best.wer_delta, best.ci_low, best.ci_high)]
    return best[["model", "system", "method", "s_per_30s", "x_realtime", "speedup_vs_fp32", "wer_pct", "delta_ci"]]


def headline(timings: pd.DataFrame, accuracy: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """Per model and beam width: our fastest method at fp32's accuracy against each peer's fastest configuration
    at any accuracy (the strictest comparison), same run, same window; ratio > 1 means ours is faster."""
    run_id = run_id or latest_run(timings)
    rows = []
    for beam in sorted(timings[timings.run_id == run_id].beam_size.unique()):
        table = summary(main_rows(timings, run_id, beam).query("device == 'cpu'"))
        table["s_per_30s"] = table.wall_s * 30 / table.audio_s
        ours = fastest_at_equal_accuracy(timings, accuracy, run_id, beam=beam).query("system == 'whisper_cpu'").set_index("model")
        for model, group in table.groupby("model", sort=False):
            if model not in ours.index:
                continue
            row = {"model": model, "beam": int(beam), "ours": ours.loc[model, "method"], "ours_s": round(ours.loc[model, "s_per_30s"], 3),
                   "ours_delta_wer": ours.loc[model, "delta_ci"]}
            for system in ("faster-whisper", "whisper.cpp"):
                peer = group[group.system == system]
                if len(peer):
                    best = peer.loc[peer.s_per_30s.idxmin()]
                    row |= {f"{system}_best": best.method, f"{system}_s": round(best.s_per_30s, 3),
                            f"vs_{system}": round(best.s_per_30s / ours.loc[model, "s_per_30s"], 2)}
            if any(key.startswith("vs_") for key in row):
                rows.append(row)
    return pd.DataFrame(rows)


def load_peak(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if Path(path).exists() else pd.DataFrame(columns=["run_id", "arithmetic", "gflops", "threads"])


def peak_share(timings: pd.DataFrame, peak_rows: pd.DataFrame, run_id: str | None = None, beam: int = 1) -> pd.DataFrame:
    """Achieved GFLOP/s of the encoder and the decoder on the window, and their share of this CPU's measured peak
    for the number format each method multiplies in (int8 methods against the int8 peak, and so on)."""
    from . import methods, models
    from .peak import decoder_flops, encoder_flops

    run_id = run_id or latest_run(timings)
    table = summary(main_rows(timings, run_id, beam).query("device == 'cpu'"))
    peaks = peak_rows[(peak_rows.run_id == run_id)]
    peaks = peaks[peaks.threads == peaks.threads.max()].set_index("arithmetic").gflops if len(peaks) else pd.Series(dtype=float)
    rows = []
    for r in table.itertuples():
        dims = models.dims(r.model)
        arithmetic = methods.get(r.method).arithmetic if r.method in methods.REGISTRY else "fp32"
        enc, dec = encoder_flops(dims) / r.encoder_s / 1e9, decoder_flops(dims, int(r.window_tokens), int(r.beam_size)) / r.decoder_s / 1e9
        top = peaks.get(arithmetic, float("nan"))
        rows.append({"model": r.model, "method": r.method, "arithmetic": arithmetic, "peak_gflops": top,
                     "encoder_gflops": round(enc, 1), "encoder_pct_peak": round(100 * enc / top, 1),
                     "decoder_gflops": round(dec, 1), "decoder_pct_peak": round(100 * dec / top, 1),
                     "decoder_ms_per_token": r.decoder_ms_per_token})
    return pd.DataFrame(rows)


def _delta_ci(delta, low, high) -> str:
    return f"{100 * delta:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]" if pd.notna(delta) else ""


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
        ax.scatter(group.s_per_30s, group.wer_pct, s=40, marker=markers[model], color=SYSTEM_COLORS.get(system, "tab:purple"),
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
        bars = ax.bar([j + (i - 1) * 0.27 for j in x], values, 0.27, color=SYSTEM_COLORS[system],
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


def load_memory(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if Path(path).exists() else pd.DataFrame()


def write_figures(timings: pd.DataFrame, accuracy: pd.DataFrame, reference: pd.DataFrame, folder: Path, memory: pd.DataFrame | None = None) -> list[Path]:
    """Every figure that the results support, as PNG files; figures without data are skipped."""
    figures = {
        "speedup_vs_published": plot_speedup(timings, reference),
        "time_split": plot_time_split(timings),
        "speed_vs_wer": plot_speed_vs_wer(timings, accuracy) if len(accuracy) else None,
        "headline": plot_headline(timings, accuracy) if len(accuracy) else None,
        "thread_scaling": plot_thread_scaling(timings),
        "memory": plot_memory(memory),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in figures.items():
        if fig is not None:
            fig.savefig(folder / f"{name}.png")
            written.append(folder / f"{name}.png")
    return written


def readme_table(timings: pd.DataFrame, accuracy: pd.DataFrame, reference: pd.DataFrame, peak_rows: pd.DataFrame | None = None) -> str:
    """The README's results section: speed, speedup and WER with its CI, beside the published speedup."""
    run_id = latest_run(timings)
    run = main_rows(timings, run_id)
    table = with_wer(summary(run), accuracy)
    published_ = compare(timings, reference, run_id).set_index("model")["published_qint8_speedup"]
    table["published"] = [published_.get(m) if k == "qint8" else None for m, k in zip(table.model, table.method)]
    nn_walls = table[table.method == "fp32-nn"].set_index("model").wall_s
    table["vs_nn"] = [_ratio(nn_walls.get(m), w) for m, w in zip(table.model, table.wall_s)]
    shown = pd.DataFrame({
        "model": table.model, "method": table.method, "median s": table.wall_s.round(2),
        "speedup vs fp32": table.speedup_vs_fp32, "speedup vs fp32-nn": table.vs_nn, "x real time": table.x_realtime,
        "encoder s": table.encoder_s.round(3), "decoder s": table.decoder_s.round(3),
        "WER %": table.wer_pct, "ΔWER vs fp32 [95% CI], points": table.wer_delta_ci,
        "published speedup vs fp32 nn.Linear": table.published,
    })
    first = run.iloc[0]
    header = (
        f"Run `{run_id}` on {machine_label(run)}; torch {first['torch']}, openai-whisper {first['openai_whisper']}, "
        f"commit {first.get('git_commit', '?')}, {first['timestamp'][:10]}. Input: {first['audio_id']} "
        f"({first['audio_s']} s of real speech), {int(run.repeat.max()) + 1} repeats, medians; speedups within this run. "
        "WER: all English clips of `audio/manifest.csv`, latest `make accuracy`."
    )
    markdown = header + "\n\n" + shown.astype(object).fillna("").to_markdown(index=False) + "\n"
    best = fastest_at_equal_accuracy(timings, accuracy, run_id) if len(accuracy) else pd.DataFrame()
    if len(best):
        markdown += (
            "\nFastest configuration of each system whose WER is not measurably worse than fp32's (the 95% CI of "
            "its change reaches zero), seconds per 30 s of audio:\n\n" + best.astype(object).fillna("").to_markdown(index=False) + "\n"
        )
    versus = headline(timings, accuracy, run_id) if len(accuracy) else pd.DataFrame()
    if len(versus):
        markdown += (
            "\nOurs against each peer's fastest configuration (at any accuracy), same run and window, greedy and beam 5; "
            "`vs_` columns are the peer's time over ours (above 1: ours is faster):\n\n" + versus.astype(object).fillna("").to_markdown(index=False) + "\n"
        )
    shares = peak_share(timings, peak_rows, run_id) if peak_rows is not None and len(peak_rows) else pd.DataFrame()
    if len(shares):
        markdown += (
            "\nShare of this CPU's measured peak (2048^3 matrix product per number format, same run): encoder and "
            "decoder on the window, greedy, matrix-product FLOPs only:\n\n" + shares.astype(object).fillna("").to_markdown(index=False) + "\n"
        )
    return markdown


def update_readme(path: Path, markdown: str, start: str = "<!-- results:start -->", end: str = "<!-- results:end -->") -> None:
    text = Path(path).read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise UserError(f"{path}: the markers {start} and {end} are missing")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    Path(path).write_text(f"{head}{start}\n{markdown}{end}{tail}", encoding="utf-8")


def execute_notebook(path: Path, output: Path | None = None, timeout: int = 600) -> Path:
    """Run a notebook headless (no Jupyter server) and store it with its outputs."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    output = Path(output or path)
    write_atomic(output, nbformat.writes(notebook) + "\n")
    return output
