"""What the report publishes from the tables: the README's results section, the executed notebooks, and the
measured choices that `whisper-cpu transcribe --method auto` reads."""

import json
from pathlib import Path

import pandas as pd

from .. import UserError, workspace
from ..files import write_text
from ..runner import DecodeOptions
from . import tables
from .tables import (_ratio, compare, fastest_at_equal_accuracy, headline, latest_run, longform_table, main_rows, peak_share,
                     summary, with_wer)
from .figures import machine_label


def write_choices(path: Path | None = None) -> Path:
    """Derive results/choices.json from every row measured so far (atomically: `auto` may read it meanwhile)."""
    timings = tables.load_timings()
    found = tables.choices(timings, tables.load_accuracy(), tables.load_longform(), DecodeOptions().tag)
    return write_text(path or workspace.get().choices, json.dumps({"decoding": DecodeOptions().tag, "choices": found}, indent=1, ensure_ascii=False) + "\n")


def readme() -> Path:
    return workspace.get().home / "README.md"


def notebooks() -> list[Path]:
    return sorted((workspace.get().home / "notebooks").glob("*.ipynb"))


def readme_table(timings: pd.DataFrame, accuracy: pd.DataFrame, reference: pd.DataFrame, peak_rows: pd.DataFrame | None = None,
                 longform: pd.DataFrame | None = None) -> str:
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
        "published speedup vs fp32 nn.Linear": table.published, "contended repeats": table.contended,
    })
    first = run.iloc[0]
    header = (
        f"Run `{run_id}` on {machine_label(run)}; torch {first['torch']}, openai-whisper {first['openai_whisper']}, "
        f"commit {first.get('git_commit', '?')}, {first['timestamp'][:10]}. Input: {first['audio_id']} "
        f"({first['audio_s']} s of real speech), {int(run.repeat.max()) + 1} repeats, medians of those not taken under contention "
        "(counted apart); speedups within this run. "
        "WER: all English clips of `audio/manifest.csv`, latest `make accuracy`."
    )
    markdown = header + "\n\n" + shown.astype(object).fillna("").to_markdown(index=False) + "\n"
    failed = tables.run_failures(run_id)
    if len(failed):
        markdown += ("\nConfigurations of this run that crashed, hung or raised (each ran in a process of its own; the run went on):\n\n"
                     + failed.drop(columns="run_id").astype(object).fillna("").to_markdown(index=False) + "\n")
    markdown += sizes_markdown(reference)
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
    kernels = tables.kernels_table(tables.load("kernels"))
    if len(kernels):
        markdown += (
            f"\nint8 paths at Whisper's shapes (base), median ms per product, run `{tables.load('kernels').run_id.iloc[-1]}`: "
            "torch.ao's dynamic Linear (fbgemm, deprecated) against the paths meant to survive it:\n\n" + kernels.to_markdown() + "\n"
        )
    for i, run in enumerate(tables.batched_runs(timings)):
        markdown += batched_markdown(timings, longform if longform is not None else pd.DataFrame(), run, first=i == 0)
    markdown += floor_markdown()
    markdown += service_markdown()
    gate = longform_table(tables.on_machine(longform, tables.reference_machine(timings))) if longform is not None else pd.DataFrame()
    if len(gate):
        markdown += (
            f"\nThe long-form gate (run `{gate.run_id.iloc[0]}`): each long recording transcribed whole, as `whisper-cpu transcribe` "
            "does (temperature fallback, conditioning on previous text), pooled over the recordings; ΔWER against fp32 in points "
            "with its 95% paired bootstrap interval over clips; fallbacks = windows re-decoded above temperature 0 / windows:\n\n"
            + gate.drop(columns="run_id").astype(object).fillna("").to_markdown(index=False) + "\n"
        )
    return markdown


def batched_markdown(timings: pd.DataFrame, longform: pd.DataFrame, run_id: str, first: bool) -> str:
    """One machine's batched job: the recordings timed whole, then the first one at each thread count."""
    batched = tables.batched_table(timings, longform, run_id, tables.load_memory())
    if not len(batched):
        return ""
    rows = timings[timings.run_id == run_id]
    label = machine_label(rows[rows.threads == rows.threads.max()])
    env = rows.iloc[-1]
    markdown = (
        f"\nLong recordings timed whole (run `{run_id}`, {label}): "
        "seconds summed over the recordings (medians over repeats), x real time, faster-whisper's batched int8 time over "
        "this row's at the same batch size (above 1: this row is faster), WER and its change against openai-whisper's "
        "sequential fp32 from the long-form gate of the same run, peak memory on the first recording, and where the time "
        "goes: the windows each pipeline encoded (those that gave text) and the share of the time their encoder passes take "
        "(windows x one window's encoder time):\n\n"
        if first else
        f"\nThe same job on another machine (run `{run_id}`, {label}; torch {env['torch']}, commit {env['git_commit']}, "
        f"{env['timestamp'][:10]}):\n\n"
    ) + batched.astype(object).fillna("").to_markdown(index=False) + "\n"
    threads = tables.batched_threads(timings, run_id)
    if len(threads):
        markdown += "\nThe same on the first recording at each thread count:\n\n" + threads.astype(object).fillna("").to_markdown(index=False) + "\n"
    return markdown


def floor_markdown() -> str:
    floor = tables.load("floor")
    table = tables.floor_table(floor)
    if not len(table):
        return ""
    row = floor.iloc[-1]
    return (f"\nWhat 2x faster than faster-whisper's batched pipeline would have to fit in (`whisper-cpu floor`, run `{row['run_id']}` "
            f"on {row['cpu']}, {row['threads']} threads, {row['timestamp'][:10]}, from batched run `{row['batched_run']}`): the windows "
            "faster-whisper needed through our encoder (as timed in that run), every token our pipeline decoded as full steps of 8 "
            "windows of our int8 decoder (no partly filled batch, logit rule, search or second pass counted), and Silero's pass over "
            "the recordings; of the decoder, its cross-attention over the audio, and that part's ms per step in float32 and in the "
            "narrower formats that would read fewer bytes:\n\n" + table.to_markdown(index=False) + "\n")


def service_markdown() -> str:
    """The newest load test of the server and the newest corpus throughput run, as measured."""
    markdown = ""
    serve = tables.load("serve")
    if len(serve):
        row = serve.iloc[-1]
        columns = ["model", "method", "clients", "seconds", "requests", "ok", "failed", "lost", "requests_per_s", "audio_x_realtime",
                   "p50_ms", "p95_ms", "server_exit"]
        markdown += (f"\n`whisper-cpu serve` under load (`make bench-serve`, run `{row['run_id']}` on {row['cpu']}, {row['threads']} threads, "
                     f"{row['timestamp'][:10]}): each client posts {row['clip']} ({row['clip_s']} s) again as soon as it is answered:\n\n"
                     + serve.iloc[[-1]][columns].to_markdown(index=False) + "\n")
    corpus = tables.load("corpus")
    if len(corpus):
        run = corpus[corpus.run_id == corpus.run_id.iloc[-1]]
        columns = ["engine", "actors", "threads_per_actor", "files_ok", "files_failed", "audio_s", "wall_s", "audio_h_per_h", "overhead_s_per_file"]
        markdown += (f"\n`whisper-cpu corpus` throughput (`make bench-corpus`, run `{run.run_id.iloc[0]}` on {run.cpu.iloc[0]}, "
                     f"{run.model.iloc[0]}, {run.method.iloc[0]}): the same clips from scratch on each engine, model load and Ray's start "
                     "included; audio-hours per wall-hour; overhead per file against the local engine:\n\n"
                     + run[columns].to_markdown(index=False) + "\n")
    return markdown


def sizes_markdown(reference: pd.DataFrame) -> str:
    """The original's four sizes on every machine that ran `bench --sizes`, and the GPU column; timing only where the
    weights are random, which the tables say in their `weights` column."""
    forced, memory = tables.load_forced(), tables.load("memory")
    markdown = ""
    for run_id in tables.sizes_runs(forced):
        rows = forced[forced.run_id == run_id]
        first = rows.iloc[0]
        table = tables.sizes_table(forced, reference, run_id, memory).drop(columns="tokens")
        table = table.dropna(axis=1, how="all")
        markdown += (
            f"\nThe original's four sizes, run `{run_id}` on {machine_label(rows)}; torch {first['torch']}, commit "
            f"{first.get('git_commit', '?')}, {first['timestamp'][:10]}: the window with exactly {int(first['window_tokens'])} decoder "
            "steps for every method (end of text suppressed, no timestamps), medians of "
            f"{int(rows.repeat.max()) + 1}; `weights=random` rows have the official shapes and seeded random weights, "
            "timing only (no WER exists for them); speedups over fp32 nn.Linear of the same run, `ours_vs_fw` is faster-whisper's "
            "time over fast-qint8-pc's on the same weights; peak resident memory in MB:\n\n"
            + table.astype(object).fillna("").to_markdown(index=False) + "\n"
        )
    gpu = tables.gpu_table(forced, reference)
    if len(gpu):
        rows = forced[forced.run_id == tables.latest_sizes_run(forced, "cuda")]
        markdown += (
            f"\nThe GPU column, run `{rows.run_id.iloc[0]}` on {gpu.gpu.iloc[0]} (host: {rows.cpu.iloc[0]}), torch {rows.torch.iloc[0]}: "
            "seconds for the same forced window, timing-only weights, beside the original's RTX 3060 Ti (full transcribe of its clip):\n\n"
            + gpu.drop(columns="gpu").astype(object).fillna("").to_markdown(index=False) + "\n"
        )
    return markdown


def update_readme(path: Path, markdown: str, start: str = "<!-- results:start -->", end: str = "<!-- results:end -->") -> None:
    text = Path(path).read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise UserError(f"{path}: the markers {start} and {end} are missing")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    write_text(path, f"{head}{start}\n{markdown}{end}{tail}")


def execute_notebook(path: Path, output: Path | None = None, timeout: int = 600) -> Path:
    """Run a notebook headless (no Jupyter server) and store it with its outputs."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    output = Path(output or path)
    write_text(output, nbformat.writes(notebook) + "\n")
    return output

