"""Tables derived from the raw result rows: medians, same-run speedups, the published comparison, the accuracy
gates and the measured choices of `--method auto`. Everything here only reads rows: what a model or a method
is (its arithmetic, its FLOPs per window) was recorded with the row when it was measured."""

import pandas as pd

from .. import UserError, pipeline, registry, workspace
from ..transcribe import faithful
from .accuracy import failing, passes
from . import inputs, results
from .results import FAILED

KEYS = ["run_id", "model", "method", "device", "beam_size", "threads", "audio_id"]
PUBLISHED_CPU = "AMD Ryzen 5 5600X (AVX2)"


def forced(rows: pd.DataFrame) -> pd.Series:
    """Rows of forced-step runs (`bench --sizes`, `--forced`): the window alone, not a transcribe; kept apart."""
    return rows.get("decoding", pd.Series("", index=rows.index)).fillna("").astype(str).str.startswith("forced")


def load_timings() -> pd.DataFrame:
    """Every transcribe timing that finished (forced-step rows apart: `load_forced`; failed ones: `load_failures`)."""
    timings = results.read("timings")
    timings = timings[~forced(timings) & (timings.status != FAILED)] if len(timings) else timings
    if timings.empty:
        raise UserError(f"no timings under {workspace.get().results}: run `make bench` first")
    return timings


def load_forced() -> pd.DataFrame:
    timings = results.read("timings")
    return timings[forced(timings) & (timings.status != FAILED)] if len(timings) else timings


def failures(table: str) -> pd.DataFrame:
    """Configurations that crashed, hung or raised (their reason in `error`), unless a resumed run later finished them."""
    rows = results.read(table)
    if not len(rows) or not (rows.status == FAILED).any():
        return pd.DataFrame(columns=["run_id", "model", "method", "error"])
    keys = [k for k in ("run_id", "model", "method", "audio_id", "threads", "beam_size", "batch_size", "decoding") if k in rows]
    ok = set(map(tuple, rows[rows.status != FAILED][keys].drop_duplicates().itertuples(index=False)))
    failed = rows[rows.status == FAILED]
    return failed[[tuple(r) not in ok for r in failed[keys].itertuples(index=False)]]


def load_memory() -> pd.DataFrame:
    """Peak memory of transcribes (`sizes_table` reads the forced-step rows itself)."""
    memory = results.read("memory")
    return memory[~forced(memory)] if len(memory) else memory


def run_failures(run_id: str | None = None) -> pd.DataFrame:
    """Every failed configuration of the timings and both gates (of one run), one line each, for the report."""
    columns = ["run_id", "stage", "model", "method", "batch_size", "threads", "error"]
    found = [failures(table).assign(stage=table) for table in ("timings", "accuracy", "longform")]
    found = pd.concat([f for f in found if len(f)], ignore_index=True) if any(len(f) for f in found) else pd.DataFrame(columns=columns)
    found = found[found.run_id == run_id] if run_id else found
    return found.reindex(columns=columns).drop_duplicates()


def load_accuracy(material: str = inputs.DEV) -> pd.DataFrame:
    """The newest accuracy row on `material` per machine x model x method x language x beam x decoding (empty when nothing
    was scored): a CPU's gates are its own, as int8 kernels differ between instruction sets."""
    table = results.read("accuracy")
    table = table[(table.status != FAILED) & (table.material == material)] if len(table) else table
    if table.empty:
        return pd.DataFrame(columns=["model", "method", "language", "beam_size", "decoding", "wer", "wer_delta", "ci_low", "ci_high"])
    return table.drop_duplicates(["cpu", "isa", "model", "method", "language", "beam_size", "decoding"], keep="last")


def load_longform(material: str = inputs.DEV, newest: bool = True) -> pd.DataFrame:
    """The newest long-form row on `material` per machine x model x method x recording x beam x decoding (`newest`),
    else every run's."""
    table = results.read("longform")
    if not len(table):
        return table
    table = table[table.material == material]
    return table.drop_duplicates(["cpu", "isa", "model", "method", "audio_id", "beam_size", "decoding"], keep="last") if newest else table


def reference_longform() -> pd.DataFrame:
    """The long-form rows of the reference machine (`reference_machine`): what the README's gate table shows."""
    return on_machine(load_longform(), reference_machine(load_timings()))


def load(table: str) -> pd.DataFrame:
    return results.read(table)


def original_rows() -> list[tuple]:
    """our method, device -> the original's (device, dtype, linear layer) row, from the registry."""
    return [(e.name, e.device, *e.original) for e in registry.REGISTRY.values() if e.original]


def latest_run(timings: pd.DataFrame) -> str:
    """The newest run that timed the window (a batched job times only the long recordings)."""
    window = timings[~timings.audio_id.isin([name for name, _, _ in inputs.LONGFORM])]
    return (window if len(window) else timings)["run_id"].iloc[-1]


def reference_machine(timings: pd.DataFrame) -> tuple[str, str] | None:
    """The machine (CPU model, instruction sets) of the newest window run: the one the README's headline tables are
    about. Runs on other machines (a lent many-core one) get tables of their own instead of replacing these."""
    if not len(timings):
        return None
    row = timings[timings.run_id == latest_run(timings)].iloc[-1]
    return row["cpu"], row["isa"]


def on_machine(rows: pd.DataFrame, machine: tuple[str, str] | None) -> pd.DataFrame:
    """The rows measured on `machine` (all of them where it is None or rows say no machine)."""
    if machine is None or not len(rows) or "cpu" not in rows:
        return rows
    return rows[(rows.cpu == machine[0]) & (rows.isa == machine[1])]


def main_rows(timings: pd.DataFrame, run_id: str | None = None, beam: int | None = None) -> pd.DataFrame:
    """A run's headline rows: its first input (the 30 s window) at its highest thread count, greedy unless `beam`."""
    run = timings[timings.run_id == (run_id or latest_run(timings))]
    run = run[run.audio_id == run.audio_id.iloc[0]]
    run = run[run.beam_size == (beam or run.beam_size.min())]
    return run[run.threads == run.threads.max()]


def summary(timings: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: medians over repeats, speedup against fp32 on the CPU of the same run. Repeats taken
    while other programs used the CPU (kept after their retries, marked contended) are left out of the medians where the
    configuration has others, and counted apart (`contended`)."""
    contended = timings.contended.fillna(False).astype(bool)
    counts = contended.groupby([timings[k] for k in KEYS], sort=False).sum().rename("contended")
    timings = timings[~contended | contended.groupby([timings[k] for k in KEYS], sort=False).transform("all")]
    table = (
        timings.groupby(KEYS, sort=False)
        .agg(
            system=("system", "first"), audio_s=("audio_s", "first"), repeats=("wall_s", "size"),
            load_s=("load_s", "first"), wall_s=("wall_s", "median"), encoder_s=("encoder_s", "median"),
            decoder_s=("decoder_s", "median"), window_tokens=("window_tokens", "median"),
            **({"decoding": ("decoding", "first")} if "decoding" in timings else {}),
        )
        .reset_index()
        .join(counts, on=KEYS)
    )
    same = ["run_id", "model", "beam_size", "threads", "audio_id"]
    base = table[(table.method == "fp32") & (table.device == "cpu")].set_index(same)
    fp32 = table.set_index(same).index.map(base["wall_s"].to_dict())
    table["speedup_vs_fp32"] = (pd.Series(fp32, index=table.index, dtype=float) / table.wall_s).round(2)
    table["x_realtime"] = (table.audio_s / table.wall_s).round(2)
    table["decoder_ms_per_token"] = (1000 * table.decoder_s / table.window_tokens).round(2)
    return table


def with_wer(table: pd.DataFrame, accuracy: pd.DataFrame, language: str = "en") -> pd.DataFrame:
    """Add English WER and its delta against fp32 (95% CI) beside each timing row."""
    scores = accuracy[accuracy.language == language].copy()
    for column in ("wer_delta", "ci_low", "ci_high"):
        if column not in scores:
            scores[column] = float("nan")
    scores["wer_delta_ci"] = [_delta_ci(d, lo, hi) for d, lo, hi in zip(scores.wer_delta, scores.ci_low, scores.ci_high)]
    scores["wer_pct"] = (100 * scores.wer).round(2)
    keys = ["model", "method"] + [k for k in ("cpu", "isa", "beam_size", "decoding") if k in scores and k in table]
    scores = scores.drop_duplicates(keys, keep="last")  # a table without the machine columns gets the newest scoring
    return table.merge(scores[keys + ["wer_pct", "wer_delta_ci"]], on=keys, how="left")


def published() -> pd.DataFrame:
    """The original experiment's table: an input committed beside the results, not a result of ours."""
    path = workspace.get().home / "results" / "published.csv"
    if not path.is_file():
        raise UserError(f"{path} not found: the original experiment's table comes with a checkout of this project (`--workspace`)")
    return pd.read_csv(path)


def freshest_run(timings: pd.DataFrame, model: str, methods: tuple[str, ...]) -> str | None:
    """The newest run that timed every one of `methods` for `model` on the CPU (rows are in run order)."""
    rows = timings[(timings.model == model) & (timings.device == "cpu")]
    complete = [run for run, group in rows.groupby("run_id", sort=False) if set(methods) <= set(group.method)]
    return complete[-1] if complete else None


def compare(timings: pd.DataFrame, reference: pd.DataFrame, run_id: str | None = None, accuracy: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our qint8 speedup over nn.Linear fp32 (the original's own comparison) beside the published one, per model
    from the freshest run that timed both (or from `run_id`), which the table names.

    Published sizes are matched by size: our tiny.en is the English-only tiny, same architecture and cost.
    """
    accuracy = accuracy if accuracy is not None else load_accuracy().iloc[:0]
    cpu = reference[reference.device == "cpu"]
    rows = []
    for model in timings.model.unique():
        run = run_id or freshest_run(timings, model, ("fp32-nn", "qint8"))
        if run is None or model not in set(timings[timings.run_id == run].model):
            continue
        ours = summary(main_rows(timings[timings.model == model], run).query("device == 'cpu'"))
        ours = ours[ours.beam_size == 1] if (ours.beam_size == 1).any() else ours
        mine = with_wer(ours, accuracy).set_index("method")
        median = mine["wall_s"]
        size = model.split(".")[0]
        pub = cpu[cpu.model == size].set_index("dtype")["inference_time_s"]
        audio_s = ours.audio_s.iloc[0]
        rows.append({
            "model": model, "run_id": run, "published_model": size if len(pub) else "",
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


def original_table(timings: pd.DataFrame, reference: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """The original's results table per model, our rows beside the published ones (speedup vs CPU fp32 nn.Linear)."""
    ours = summary(main_rows(timings, run_id))
    ours = ours[ours.beam_size == ours.beam_size.min()]
    rows = []
    for model in ours.model.unique():
        mine = ours[ours.model == model].set_index(["method", "device"])
        size = model.split(".")[0]
        base = mine["wall_s"].get(("fp32-nn", "cpu"))
        for method, device, shown, dtype, layer in original_rows():
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
    if "decoding" in scores and "decoding" in table:
        scores = scores[scores.decoding.isin(set(table.decoding))]
    scores = scores.reindex(columns=["model", "method", "wer", "wer_delta", "ci_low", "ci_high"])
    table = table.merge(scores, on=["model", "method"], how="inner")
    table["wer_pct"] = (100 * table.wer).round(2)
    return table[["model", "method", "system", "s_per_30s", "x_realtime", "speedup_vs_fp32", "wer_pct", "wer_delta", "ci_low", "ci_high"]]


def fastest_at_equal_accuracy(timings: pd.DataFrame, accuracy: pd.DataFrame, run_id: str | None = None, beam: int = 1) -> pd.DataFrame:
    """Per model and system, the fastest configuration not measurably less accurate than fp32 (CI reaches 0)."""
    points = speed_accuracy(timings, accuracy, run_id, beam=beam)
    equal = points[pd.Series([faithful(m, low) for m, low in zip(points.method, points.ci_low)], index=points.index, dtype=bool)]
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


def peak_share(timings: pd.DataFrame, peak_rows: pd.DataFrame, run_id: str | None = None, beam: int = 1) -> pd.DataFrame:
    """Achieved GFLOP/s of the encoder and the decoder on the window, and their share of this CPU's measured peak
    for the number format each method multiplies in (int8 methods against the int8 peak, and so on). The FLOPs
    and the arithmetic were recorded with each row; rows from before they were are left out."""
    run_id = run_id or latest_run(timings)
    run = main_rows(timings, run_id, beam).query("device == 'cpu'")
    if "decoder_gflop" not in run or run.decoder_gflop.isna().all():
        return pd.DataFrame()
    flops = run.groupby(["model", "method"], sort=False).agg(arithmetic=("arithmetic", "first"), encoder_gflop=("encoder_gflop", "median"),
                                                             decoder_gflop=("decoder_gflop", "median"))
    table = summary(run).set_index(["model", "method"]).join(flops).reset_index()
    peaks = peak_rows[(peak_rows.run_id == run_id)] if len(peak_rows) else peak_rows
    peaks = peaks[peaks.threads == peaks.threads.max()].groupby("arithmetic").gflops.max() if len(peaks) else pd.Series(dtype=float)
    top = table.arithmetic.map(peaks.to_dict()).astype(float)
    enc, dec = table.encoder_gflop / table.encoder_s, table.decoder_gflop / table.decoder_s
    return pd.DataFrame({"model": table.model, "method": table.method, "arithmetic": table.arithmetic, "peak_gflops": top,
                         "encoder_gflops": enc.round(1), "encoder_pct_peak": (100 * enc / top).round(1),
                         "decoder_gflops": dec.round(1), "decoder_pct_peak": (100 * dec / top).round(1),
                         "decoder_ms_per_token": table.decoder_ms_per_token})


def _delta_ci(delta, low, high) -> str:
    return f"{100 * delta:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]" if pd.notna(delta) else ""


def _change(delta, low, high) -> str:
    """A change that is not a share (words per minute) with its CI, as `_delta_ci` writes points."""
    return f"{delta:+.2f} [{low:+.2f}, {high:+.2f}]" if pd.notna(delta) else ""


def _mine(rows: pd.DataFrame, cpu: str, isa: str, model: str, method: str) -> pd.DataFrame:
    return rows[(rows.cpu == cpu) & (rows.isa == isa) & (rows.model == model) & (rows.method == method)] if len(rows) else rows


def _newest(rows: pd.DataFrame, cpu: str, isa: str, model: str, method: str) -> pd.Series | None:
    """The newest score of a method on this CPU (rows are in run order), or None."""
    mine = _mine(rows, cpu, isa, model, method)
    return mine.iloc[-1] if len(mine) else None


def _records(rows: pd.DataFrame) -> list[dict]:
    """Rows as `accuracy.passes` and `failing` read them: a missing value (NaN once read back from a table) is None."""
    return [{k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]


def _greedy(rows: pd.DataFrame, decoding: str, **match) -> pd.DataFrame:
    """The greedy rows with the transcriber's decoding (and `match`'s column values): the scores `auto` reads."""
    if not len(rows):
        return rows
    keep = (rows.beam_size == 1) & (rows.decoding == decoding)
    for column, value in match.items():
        keep &= rows[column] == value
    return rows[keep]


def _gate(rows: pd.DataFrame, cpu: str, isa: str, model: str, method: str) -> tuple[float, str]:
    """(CI low end, description) of the newest score of a method on this CPU, or (nan, 'not measured')."""
    last = _newest(rows, cpu, isa, model, method)
    if last is None:
        return float("nan"), "not measured"
    if method == "fp32":
        return float("nan"), f"the baseline (run {last.run_id})"
    return last.get("ci_low", float("nan")), f"ΔWER {_delta_ci(last.get('wer_delta'), last.get('ci_low'), last.get('ci_high'))} points (run {last.run_id})"


def load_categories(material: str = inputs.HARDER) -> pd.DataFrame:
    """The per-category rows of the newest run on `material` per machine x model x method (a verdict needs all of a run's
    categories together)."""
    table = results.read("categories")
    if not len(table):
        return table
    table = table[(table.material == material) & (table.status != FAILED)]
    newest = table.groupby(["cpu", "isa", "model", "method", "beam_size", "decoding"]).run_id.transform("last")
    return table[table.run_id == newest]


def _harder(categories: pd.DataFrame, hard_long: pd.DataFrame, cpu: str, isa: str, model: str, method: str,
            hard_short: pd.DataFrame | None = None) -> tuple[bool, str]:
    """(passes, description) of the harder gates on this CPU: every category of the harder material (the WER change and
    the words written past the reference or on non-speech, against fp32), the material pooled (eight clips a category
    hide a loss that all of them together show) and the long recordings of real hard speech."""
    mine = _mine(categories, cpu, isa, model, method)
    if method == "fp32":
        return True, "the baseline"
    if not len(mine):
        return False, "harder material: not measured"
    rows = _records(mine)
    failed = failing(rows).get((model, method), [])
    verdict = passes(rows).get((model, method), False)
    short = (f"harder material ({len(mine)} categories, run {mine.run_id.iloc[-1]}): "
             + ("passes every category" if verdict else f"fails on {', '.join(failed)}"))
    pooled_low, pooled_why = _gate(hard_short if hard_short is not None else pd.DataFrame(), cpu, isa, model, method)
    pooled_ok = pd.isna(pooled_low) or faithful(method, pooled_low)  # older runs scored the categories alone
    short += "" if pd.isna(pooled_low) else f"; pooled: {pooled_why}"
    low, long_why = _gate(hard_long, cpu, isa, model, method)
    return verdict and pooled_ok and faithful(method, low), f"{short}; long recordings of hard speech: {long_why}"


def choices(timings: pd.DataFrame, accuracy: pd.DataFrame, longform: pd.DataFrame, decoding: str,
            categories: pd.DataFrame | None = None, hard_long: pd.DataFrame | None = None, *,
            hard_short: pd.DataFrame | None = None) -> list[dict]:
    """What `--method auto` chooses from: per CPU (model name and instruction sets: int8 kernels differ between
    AVX2 and AVX-512 VNNI, and virtual machines often show only "AMD EPYC"), Whisper model, thread count and
    method, the freshest greedy timings with the transcriber's decoding, on one window and on the long
    recordings timed whole (what users transcribe most), both accuracy gates on the dev clips (short clips, long
    recordings pooled) and both on the harder material (every category; long recordings of real hard speech),
    each from the newest scoring on the same CPU. A method is faithful only where all four say so."""
    categories = categories if categories is not None else pd.DataFrame()
    hard_long = _greedy(hard_long if hard_long is not None else pd.DataFrame(), decoding, audio_id="all")
    hard_short = _greedy(hard_short if hard_short is not None else pd.DataFrame(), decoding, language="en")
    rows = _timed(timings, decoding)
    short, long = _greedy(accuracy, decoding, language="en"), _greedy(longform, decoding, audio_id="all")
    found = []
    for (cpu, isa, model, threads, method), group in rows.groupby(["cpu", "isa", "model", "threads", "method"], sort=False):
        if method not in registry.REGISTRY or not registry.REGISTRY[method].ours:
            continue
        short_low, short_why = _gate(short, cpu, isa, model, method)
        long_low, long_why = _gate(long, cpu, isa, model, method)
        hard, hard_why = _harder(categories[categories.decoding == decoding] if len(categories) else categories, hard_long, cpu, isa, model, method,
                                 hard_short)
        found.append({"cpu": cpu, "isa": isa, "model": model, "threads": int(threads), "method": method,
                      **_speed(group[~group.long], "s_per_30s", "timing_run"), **_speed(group[group.long], "long_s_per_30s", "long_run"),
                      "faithful": faithful(method, short_low, long_low) and hard, "gated": bool(pd.notna(short_low) and pd.notna(long_low)),
                      "harder": hard, "why": f"short clips: {short_why}; long recordings: {long_why}; {hard_why}"})
    return found


def _timed(timings: pd.DataFrame, decoding: str) -> pd.DataFrame:
    """The greedy CPU timings with the transcriber's decoding, `long` where they are of the long recordings, and those at the
    batch size a transcribe runs (`pipeline.BATCH` for a batched method, 1 for the others), not a sweep's other sizes."""
    rows = timings[(timings.device == "cpu") & (timings.beam_size == 1) & (timings.decoding == decoding)]
    rows = rows.assign(long=rows.audio_id.isin([name for name, _, _ in inputs.LONGFORM]))
    size = rows.batch_size.where(rows.long & rows.batch_size.isin([1, pipeline.BATCH]))
    return rows[~rows.long | (size == size.groupby(rows.method.to_numpy()).transform("max"))]


def _speed(rows: pd.DataFrame, name: str, run: str) -> dict:
    """Seconds per 30 s of audio in the freshest run that timed these rows (medians over repeats, summed over inputs)."""
    if not len(rows):
        return {name: None, run: None}
    newest = rows[rows.run_id == rows.run_id.iloc[-1]]
    medians = newest.groupby("audio_id").agg(wall_s=("wall_s", "median"), audio_s=("audio_s", "first"))
    return {name: round(float(30 * medians.wall_s.sum() / medians.audio_s.sum()), 3), run: newest.run_id.iloc[0]}


def _auto(group: list[dict]) -> tuple[dict, bool]:
    """(choice, documented default?) as `transcribe.choose_method` makes it from one CPU's, model's and thread count's
    choices (its rule, repeated here because the report describes every CPU measured, not the one it runs on)."""
    if not any(c["gated"] for c in group):
        return next((c for c in group if c["method"] == registry.DEFAULT), {"method": registry.DEFAULT}), True
    faithful_ = [c for c in group if c["faithful"]]
    timed_long = [c for c in faithful_ if c.get("long_s_per_30s") is not None]
    speed = "long_s_per_30s" if timed_long else "s_per_30s"
    return min(timed_long or faithful_, key=lambda c: c[speed]), False


def _times(theirs, ours) -> str:
    return f"{theirs / ours:.2f}x" if theirs is not None and ours is not None and pd.notna(theirs) and pd.notna(ours) else ""


def _harder_verdict(categories: pd.DataFrame, hard_long: pd.DataFrame, cpu: str, isa: str, model: str, method: str,
                    hard_short: pd.DataFrame | None = None) -> str:
    """The harder gates in a few words: passes, where it fails, or what is not measured yet (`_harder` decides; this says)."""
    if method == "fp32":
        return "baseline"
    mine, long = _mine(categories, cpu, isa, model, method), _newest(hard_long, cpu, isa, model, method)
    failed = failing(_records(mine)).get((model, method), []) if len(mine) else []
    pooled = _newest(hard_short, cpu, isa, model, method) if hard_short is not None and len(hard_short) else None
    failed += ["the material pooled"] if pooled is not None and pd.notna(pooled.get("ci_low")) and not faithful(method, pooled.get("ci_low")) else []
    failed += ["hard recordings"] if long is not None and not faithful(method, long.get("ci_low")) else []
    missing = [what for what, seen in (("categories", len(mine)), ("hard recordings", long is not None)) if not seen]
    return f"fails on {', '.join(failed)}" if failed else f"not measured ({', '.join(missing)})" if missing else "passes"


def auto_table(timings: pd.DataFrame, accuracy: pd.DataFrame, longform: pd.DataFrame, decoding: str,
               categories: pd.DataFrame | None = None, hard_long: pd.DataFrame | None = None,
               every_gate: pd.DataFrame | None = None, *, hard_short: pd.DataFrame | None = None) -> pd.DataFrame:
    """The README's headline, from the rows `choices` reads: per CPU and model measured, the method `--method auto` takes
    there on the most threads measured (all its cores, as a laptop runs it), its seconds per 30 s of audio (on the long
    recordings where it was timed on them, else on the window), that time against fp32 and against the fastest
    faster-whisper and whisper.cpp configuration timed in the same run on the same audio (fp32 from the wall times of the
    same run's long-form gate where the run timed none: `every_gate`, every run's long-form rows, as a later gate run of
    some methods leaves that run's fp32 rows no longer the newest), and its WER change against fp32 in each gate."""
    categories = _greedy(categories if categories is not None else pd.DataFrame(), decoding)
    hard_long = _greedy(hard_long if hard_long is not None else pd.DataFrame(), decoding, audio_id="all")
    hard_short = _greedy(hard_short if hard_short is not None else pd.DataFrame(), decoding, language="en")
    short, long_gate = _greedy(accuracy, decoding, language="en"), _greedy(longform, decoding, audio_id="all")
    every_gate = _greedy(longform if every_gate is None else every_gate, decoding, audio_id="all")
    timed = _timed(timings, decoding)
    groups: dict[tuple, list[dict]] = {}
    for c in choices(timings, accuracy, longform, decoding, categories, hard_long, hard_short=hard_short):
        groups.setdefault((c["cpu"], c["isa"], c["model"]), []).append(c)
    table = []
    for (cpu, isa, model), group in groups.items():
        threads = max(c["threads"] for c in group)
        pick, default = _auto([c for c in group if c["threads"] == threads])
        method, long = pick["method"], pick.get("long_s_per_30s") is not None
        seconds, run = (pick.get("long_s_per_30s"), pick.get("long_run")) if long else (pick.get("s_per_30s"), pick.get("timing_run"))
        same = timed[(timed.run_id == run) & (timed.cpu == cpu) & (timed.isa == isa) & (timed.model == model) & (timed.threads == threads)
                     & (timed.long == long)]
        speeds = {m: (rows.system.iloc[0], _speed(rows, "s", "run")["s"]) for m, rows in same.groupby("method", sort=False)}
        vs_fp32 = _times(speeds["fp32"][1], seconds) if "fp32" in speeds else ""
        if long and not vs_fp32 and len(every_gate):
            walls = [_mine(every_gate[every_gate.run_id == run], cpu, isa, model, m).wall_s.sum() for m in ("fp32", method)]
            vs_fp32 = f"{_times(*walls)} (gate)" if all(walls) else ""
        row = {"CPU": f"{cpu} [{isa}], {threads} threads", "model": model,
               "`auto` runs": (f"{method} (default: nothing gated here)" if default
                               else f"{method} (no faster method passes every gate here)" if method == "fp32" else method),
               "s per 30 s": f"{seconds:.2f} ({'long recordings' if long else '30 s window'})" if seconds is not None else "not timed here",
               "vs fp32": vs_fp32}
        for system in ("faster-whisper", "whisper.cpp"):
            peer = {m: s for m, (name, s) in speeds.items() if name == system}
            best = min(peer, key=peer.get) if peer else None
            row[f"vs {system}"] = f"{_times(peer[best], seconds)} ({best.removeprefix(system + '-')})" if best and seconds is not None else ""
        for gate, rows in (("ΔWER short clips", short), ("ΔWER long recordings", long_gate)):
            score = _newest(rows, cpu, isa, model, method)
            row[gate] = ("baseline" if method == "fp32" else "not measured" if score is None
                         else _delta_ci(score.get("wer_delta"), score.get("ci_low"), score.get("ci_high")))
        row["harder gates"] = _harder_verdict(categories, hard_long, cpu, isa, model, method, hard_short)
        row["timed in run"] = run or ""
        table.append(row)
    return pd.DataFrame(table)


def categories_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The harder material, one row per category and model (one machine's rows): fp32's WER and the words it wrote per
    minute of non-speech, then per method its WER change (points) and its change in words written past the reference's
    end (on non-speech: every word) per minute of audio, against fp32 with their 95% CIs; blank where a category has no
    speech or a method no score."""
    if not len(rows):
        return pd.DataFrame()
    rows = rows.reindex(columns=["model", "method", "category", "language", "n_utterances", "wer", "nonspeech_words_per_min", "wer_delta",
                                 "wer_ci_low", "wer_ci_high", "ins_per_min_delta", "ins_ci_low", "ins_ci_high"])
    rows["category"] = [c if language == "en" else f"{c} ({language})" for c, language in zip(rows.category, rows.language)]
    table = rows.groupby(["model", "category"], sort=False).n_utterances.first().rename("clips").reset_index()
    index = pd.MultiIndex.from_frame(table[["model", "category"]])
    fp32 = rows[rows.method == "fp32"].set_index(["model", "category"]).reindex(index)
    table["fp32 WER %"] = (100 * fp32.wer).round(2).to_numpy()
    table["fp32 words/min on non-speech"] = fp32.nonspeech_words_per_min.to_numpy()
    for method, mine in rows[rows.method != "fp32"].groupby("method", sort=False):
        mine = mine.set_index(["model", "category"]).reindex(index)
        table[f"{method} ΔWER"] = [_delta_ci(d, lo, hi) for d, lo, hi in zip(mine.wer_delta, mine.wer_ci_low, mine.wer_ci_high)]
        table[f"{method} Δwords/min"] = [_change(d, lo, hi) for d, lo, hi in zip(mine.ins_per_min_delta, mine.ins_ci_low, mine.ins_ci_high)]
    return table


def category_verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model x method of one machine's harder material: passes every category, or where it measurably loses or adds
    words (a missing CI fails), by `accuracy.passes` and `failing`, the rule `auto` applies."""
    records = _records(rows)
    failed = failing(records)
    return pd.DataFrame([{"model": model, "method": method,
                          "verdict": "passes every category" if ok else f"fails on {', '.join(failed[(model, method)])}"}
                         for (model, method), ok in passes(records).items() if method != "fp32"])


def kernels_table(kernels: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """Milliseconds per product, one row per shape, one column per int8 path (blank: the path failed)."""
    if not len(kernels):
        return pd.DataFrame()
    run_id = run_id or kernels.run_id.iloc[-1]
    rows = kernels[kernels.run_id == run_id].assign(shape=lambda t: [f"{m} x {k} @ {k} x {n}" for m, k, n in zip(t.m, t.k, t.n)])
    return rows.pivot_table(index="shape", columns="path", values="ms", sort=False).round(3)


def longform_table(longform: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """The long-form gate per model and method, pooled over the recordings: time, WER, its change against
    fp32 with the 95% CI over clips, fallback windows, error kinds and hallucination loops."""
    if not len(longform):
        return pd.DataFrame()
    run_id = run_id or longform.run_id.iloc[-1]
    rows = longform[(longform.run_id == run_id) & (longform.audio_id == "all")]
    return pd.DataFrame({
        "model": rows.model, "method": rows.method, "system": rows.system, "audio_s": rows.audio_s, "wall_s": rows.wall_s.round(1),
        "x_realtime": (rows.audio_s / rows.wall_s).round(1), "wer_pct": (100 * rows.wer).round(2),
        "delta_ci": [_delta_ci(d, lo, hi) for d, lo, hi in zip(rows.get("wer_delta"), rows.get("ci_low"), rows.get("ci_high"))],
        "fallbacks": [f"{f:.0f}/{w:.0f}" if pd.notna(f) else "" for f, w in zip(rows.fallbacks, rows.windows)],
        "deletions": rows.deletions, "insertions": rows.insertions, "substitutions": rows.substitutions,
        "repeated_ngrams": rows.repeated_ngrams, "run_id": rows.run_id,
    }).reset_index(drop=True)


def batched_runs(timings: pd.DataFrame) -> list[str]:
    """The newest run that timed the long recordings on each machine, the reference machine's first."""
    rows = timings[timings.audio_id.isin([name for name, _, _ in inputs.LONGFORM])] if len(timings) else timings
    if not len(rows):
        return []
    newest = rows.groupby(["cpu", "isa"], sort=False).run_id.last()
    reference = reference_machine(timings)
    return list(dict.fromkeys(run for _, run in sorted(newest.items(), key=lambda item: item[0] != reference)))


def long_timings(timings: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """Medians of the long-form recordings, timed whole, per configuration, batch size included (by default those
    of the reference machine's newest run)."""
    rows = timings[timings.audio_id.isin([name for name, _, _ in inputs.LONGFORM])]
    if not len(rows):
        return pd.DataFrame()
    rows = rows[rows.run_id == (run_id or batched_runs(timings)[0])]
    rows = rows.assign(encoder_s=rows.get("encoder_s", pd.Series(float("nan"), index=rows.index)))
    return (rows.groupby(["run_id", "model", "method", "system", "batch_size", "threads", "audio_id"], sort=False)
            .agg(audio_s=("audio_s", "first"), wall_s=("wall_s", "median"), repeats=("wall_s", "size"), contended=("contended", "sum"),
                 encoder_s=("encoder_s", "median"))
            .reset_index())


def batched_table(timings: pd.DataFrame, longform: pd.DataFrame, run_id: str | None = None, memory: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model, method and batch size at the most threads: the recordings timed whole (sums of medians over the
    recordings every configuration covered), the real-time factor, the speed against faster-whisper's batched
    int8 at the same batch size, the long-form gate's WER change against sequential fp32, and the windows encoded
    with the share of the time their encoder passes take (`_encoding`)."""
    medians = long_timings(timings, run_id)
    if not len(medians):
        return pd.DataFrame()
    medians, run = medians[medians.threads == medians.threads.max()], medians.run_id.iloc[0]
    keys = ["model", "method", "batch_size"]
    gate = longform[longform.run_id == run] if len(longform) else longform
    medians = _encoding(medians, gate)
    table = medians.groupby(keys, sort=False).agg(system=("system", "first"), recordings=("audio_id", "nunique"),
                                                  audio_s=("audio_s", "sum"), wall_s=("wall_s", "sum"),
                                                  windows=("windows", "sum"), encoding_s=("encoding_s", "sum")).reset_index()
    table = table[table.recordings == table.recordings.max()].copy()
    table["x_realtime"] = (table.audio_s / table.wall_s).round(1)
    table["encoder_pct"] = (100 * table.encoding_s / table.wall_s).round().where(table.windows > 0)
    table["windows"] = table.windows.where(table.windows > 0).astype("Int64")
    peer = table[table.method == "faster-whisper-int8-batched"].set_index(["model", "batch_size"]).wall_s
    table["vs_fw_int8_batched"] = [round(peer[(m, b)] / w, 2) if (m, b) in peer.index else float("nan")
                                   for m, b, w in zip(table.model, table.batch_size, table.wall_s)]
    gate = gate[gate.audio_id == "all"] if len(gate) else gate
    if len(gate):
        gate = gate.assign(wer_pct=(100 * gate.wer).round(2),
                           delta_ci=[_delta_ci(d, lo, hi) for d, lo, hi in zip(gate.get("wer_delta"), gate.get("ci_low"), gate.get("ci_high"))])
        table = table.merge(gate[["model", "method", "wer_pct", "delta_ci"]], on=["model", "method"], how="left")
    if memory is not None and len(memory) and "batch_size" in memory:
        mine = memory[memory.run_id == run]
        hour = mine.audio_id.str.startswith(inputs.HOUR_PREFIX)
        for rows, column in ((mine[~hour], "peak_rss_mb"), (mine[hour], "hour_peak_mb")):  # the first recording's, an hour's
            peak = rows[["model", "method", "batch_size", "peak_rss_mb"]].dropna().rename(columns={"peak_rss_mb": column})
            if len(peak):
                table = table.merge(peak.assign(batch_size=peak.batch_size.astype(int)), on=keys, how="left")
    table["wall_s"] = table.wall_s.round(2)
    return table.drop(columns=["recordings", "encoding_s"])


def steps_table(steps: pd.DataFrame) -> pd.DataFrame:
    """The newest `whisper-cpu step` run: ms per decoder token of every method, and for ours the parts (`bench/step.py`)."""
    if not len(steps):
        return pd.DataFrame()
    rows = steps[steps.run_id == steps.run_id.iloc[-1]]
    parts = [c for c in ("products_ms", "audio_keys_ms", "attention_ms", "norms_ms", "logits_ms", "other_ops_ms", "python_ms") if c in rows]
    return rows[["model", "method", "system", "tokens", "ms_per_token", *parts]].reset_index(drop=True)


def floor_table(floor: pd.DataFrame) -> pd.DataFrame:
    """The newest floor measurement (`bench/floor.py`), one row per model: its parts, their sum, and half of
    faster-whisper's batched time (2x faster would have to fit under it)."""
    if not len(floor):
        return pd.DataFrame()
    rows = floor[floor.run_id == floor.run_id.iloc[-1]]
    return pd.DataFrame({
        "model": rows.model, "fw_s": rows.fw_s.round(2), "half_fw_s": rows.half_fw_s, "fw_windows": rows.fw_windows,
        "encoder_s": rows.encoder_s, "tokens": rows.tokens, "decoder_s": rows.decoder_s, "of_which_cross_attention_s": rows.cross_attention_s,
        "vad_s": rows.vad_s,
        "floor_s": rows.floor_s, "floor_vs_half": (rows.floor_s / rows.half_fw_s).round(2),
        **{f"cross_attention_ms_{short}": rows[f"cross_attention_ms_{name}"] for short, name in (("fp32", "float32"), ("fp16", "float16"), ("bf16", "bfloat16"))},
    }).reset_index(drop=True)


def _encoding(medians: pd.DataFrame, gate: pd.DataFrame) -> pd.DataFrame:
    """Where a batched pipeline's time goes: the windows the long-form gate of the run saw each method encode (its
    segments' distinct window starts: a window that gave no segment is not counted), times one window's encoder time."""
    windows = gate[gate.audio_id != "all"][["model", "method", "audio_id", "windows"]] if len(gate) and "windows" in gate else None
    if windows is None:
        return medians.assign(windows=0, encoding_s=0.0)
    medians = medians.merge(windows, on=["model", "method", "audio_id"], how="left")
    unknown = medians.windows.isna() | ((medians.windows <= 1) & (medians.audio_s > 30))  # rows from before None meant "not said"
    medians["windows"] = medians.windows.mask(unknown, 0)
    return medians.assign(encoding_s=(medians.windows * medians.encoder_s).fillna(0.0))


def batched_threads(timings: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """x real time of each method timed at several thread counts on one long recording (batch size 8 where batched)."""
    medians = long_timings(timings, run_id)
    if not len(medians) or medians.threads.nunique() < 2:
        return pd.DataFrame()
    medians = medians[medians.batch_size.isin([1, pipeline.BATCH])]
    medians = medians[medians.audio_id == medians[medians.threads == medians.threads.min()].audio_id.iloc[0]]
    table = medians.assign(x_realtime=(medians.audio_s / medians.wall_s).round(1))
    table = table.pivot_table(index=["model", "method", "batch_size"], columns="threads", values="x_realtime", sort=False)
    return table[sorted(table.columns)].dropna().rename(columns=lambda t: f"x real time, {t} thread{'s' if t > 1 else ''}").reset_index()


def _forced_summary(rows: pd.DataFrame) -> pd.DataFrame:
    return (rows.groupby(["run_id", "model", "weights", "method", "device"], sort=False)
            .agg(wall_s=("wall_s", "median"), encoder_s=("encoder_s", "median"), decoder_s=("decoder_s", "median"),
                 repeats=("wall_s", "size"), tokens=("window_tokens", "first"), threads=("threads", "first"), cpu=("cpu", "first"),
                 gpu=("gpu", "first") if "gpu" in rows else ("cpu", "first"))
            .reset_index())


def latest_sizes_run(forced_rows: pd.DataFrame, device: str = "cpu") -> str | None:
    rows = forced_rows[forced_rows.device == device] if len(forced_rows) else forced_rows
    return rows.run_id.iloc[-1] if len(rows) else None


def sizes_runs(forced_rows: pd.DataFrame) -> list[str]:
    """The newest forced-step run of the CPU methods on each machine (CPU model and thread count), in order of time."""
    rows = forced_rows[forced_rows.device == "cpu"] if len(forced_rows) else forced_rows
    return list(dict.fromkeys(rows.groupby(["cpu", "threads"], sort=False).run_id.last())) if len(rows) else []


def sizes_table(forced_rows: pd.DataFrame, reference: pd.DataFrame, run_id: str | None = None, memory: pd.DataFrame | None = None) -> pd.DataFrame:
    """The original's table completed: per size, its CPU rows (fp32 nn.Linear, qint8) and speedup beside the published one,
    our fastest method and faster-whisper on the same weights, peak memory; every time on the same forced decoder steps."""
    run_id = run_id or latest_sizes_run(forced_rows)
    rows = forced_rows[(forced_rows.run_id == run_id) & (forced_rows.device == "cpu")] if run_id and len(forced_rows) else forced_rows.iloc[:0]
    if rows.empty:
        return pd.DataFrame()
    table = _forced_summary(rows)
    peak = {}
    if memory is not None and len(memory):
        mine = memory[(memory.run_id == run_id) & forced(memory)]
        peak = {(r.model, r.weights, r.method): r.peak_rss_mb for r in mine.itertuples()}
    cpu = reference[reference.device == "cpu"]
    rows = []
    for (model, weights), mine in table.groupby(["model", "weights"], sort=False):
        wall = mine.set_index("method")["wall_s"]
        pub = cpu[cpu.model == model.split(".")[0]].set_index("dtype")["inference_time_s"]
        fast, fw = wall.get("fast-qint8-pc"), wall.get("faster-whisper-int8")
        rows.append({
            "model": model, "weights": weights, "tokens": int(mine.tokens.iloc[0]),
            "fp32_s": wall.get("fp32"), "fp32_nn_s": wall.get("fp32-nn"), "qint8_s": wall.get("qint8"), "qint8_speedup": _ratio(wall.get("fp32-nn"), wall.get("qint8")),
            "published_qint8_speedup": _ratio(pub.get("fp32"), pub.get("qint8")),
            "fast_qint8_pc_s": fast, "fast_speedup": _ratio(wall.get("fp32-nn"), fast),
            "faster_whisper_int8_s": fw, "ours_vs_fw": _ratio(fw, fast),
            "peak_mb_fp32_nn": peak.get((model, weights, "fp32-nn")), "peak_mb_fast": peak.get((model, weights, "fast-qint8-pc")),
            "peak_mb_fw": peak.get((model, weights, "faster-whisper-int8")),
        })
    return pd.DataFrame(rows).round(3)


def gpu_table(forced_rows: pd.DataFrame, reference: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """The GPU column: each size's GPU methods on forced steps (the newest run with GPU rows) beside the published GPU fp32."""
    run_id = run_id or latest_sizes_run(forced_rows, "cuda")
    rows = forced_rows[(forced_rows.run_id == run_id) & (forced_rows.device == "cuda")] if run_id and len(forced_rows) else forced_rows.iloc[:0]
    if rows.empty:
        return pd.DataFrame()
    table = _forced_summary(rows)
    pub = reference[reference.device == "gpu"].set_index("model")["inference_time_s"]
    wide = table.pivot_table(index=["model", "weights"], columns="method", values="wall_s", sort=False).reset_index()
    wide["published_gpu_fp32_s"] = wide.model.map(lambda m: pub.get(m.split(".")[0]))
    wide["gpu"] = table.gpu.iloc[0]
    return wide.round(3)
