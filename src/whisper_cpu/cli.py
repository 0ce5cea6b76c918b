"""Command line: `python -m whisper_cpu` / `whisper-cpu`. Problems a user can fix end in one line and exit 2."""

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from . import UserError, accuracy, audio, bench, methods, models, peak, report, results, transcribe


def _threads(value: str) -> int:
    n = int(value)
    cores = len(os.sched_getaffinity(0))
    if not 1 <= n <= cores:
        raise argparse.ArgumentTypeError(f"{n} threads on {cores} available cores: oversubscribing slows PyTorch several times")
    return n


def _input(args) -> audio.Input:
    return audio.file_input(args.audio, args.language) if args.audio else audio.window()


def cmd_bench(args) -> None:
    opts = bench.Options(
        models=tuple(args.models), methods=tuple(args.methods), repeats=args.repeats, beam_size=args.beam_size,
        threads=args.threads or results.default_threads(), output=args.output,
    )
    bench.plan(opts)  # unknown methods fail before anything loads
    for name in opts.models:
        models.checkpoint_path(name)
    if args.all:
        run_id = bench.run_all(opts, run_id=args.resume)
    else:
        clip = _input(args)
        print(f"input: {clip.id} ({clip.duration_s:.1f} s, {'real speech' if clip.real else 'synthesized'}); threads: {opts.threads}")
        run_id = bench.run(opts, clip, run_id=args.resume)
    timings = results_frame(opts.output, run_id)
    timings = timings[timings.audio_id == timings.audio_id.iloc[0]]
    table = report.with_wer(report.summary(timings), report.latest_accuracy(results.ACCURACY))
    columns = ["model", "method", "device", "repeats", "wall_s", "speedup_vs_fp32", "x_realtime", "encoder_s",
               "decoder_s", "decoder_ms_per_token", "load_s", "contended", "wer_pct", "wer_delta_ci"]
    print(f"\nrun {run_id}: medians over repeats, speedup against fp32 of this run ({opts.output});")
    print("WER (%, English clips) and its change against fp32 [95% CI] from the latest `make accuracy`")
    print(table[columns].astype(object).fillna("").to_string(index=False))


def results_frame(path: Path, run_id: str) -> pd.DataFrame:
    timings = report.load_timings(path)
    return timings[timings.run_id == run_id]


def cmd_compare(args) -> None:
    scores = report.latest_accuracy(args.accuracy)
    table = report.compare(report.load_timings(args.timings), report.published(), args.run_id, scores)
    print("qint8 speedup over nn.Linear fp32, ours (this machine) beside the original's (Ryzen 5 5600X, AVX2)")
    print(table.astype(object).fillna("").T.to_string(header=False))


def cmd_accuracy(args) -> None:
    opts = accuracy.Options(
        models=tuple(args.models), methods=tuple(args.methods), beam_size=args.beam_size, threads=args.threads or 0,
        manifest=args.manifest, audio_dir=args.audio_dir, output=args.output, transcripts=args.transcripts,
    )
    for name in (*opts.methods, "fp32"):
        methods.get(name)
    for name in opts.models:
        models.checkpoint_path(name)
    run_id = accuracy.run(opts, run_id=args.resume)
    table = pd.read_csv(opts.output)
    table = table[table.run_id == run_id]
    table["wer_pct"] = (100 * table.wer).round(2)
    table["cer_pct"] = (100 * table.cer).round(2)
    for column in ("wer_delta", "ci_low", "ci_high"):
        table[column] = (100 * table.get(column, float("nan"))).round(2)
    columns = ["model", "method", "language", "n_utterances", "audio_s", "metric", "wer_pct", "cer_pct", "wer_delta",
               "ci_low", "ci_high", "identical_to_fp32", "rtfx"]
    print(f"\nrun {run_id}: corpus WER/CER in %, delta against fp32 in points with its 95% bootstrap CI")
    print(table[[c for c in columns if c in table]].astype(object).fillna("").to_string(index=False))


def cmd_report(args) -> None:
    timings, scores, reference = report.load_timings(args.timings), report.latest_accuracy(args.accuracy), report.published()
    for path in report.write_figures(timings, scores, reference, report.FIGURES, report.load_memory(results.MEMORY)):
        print(f"figure: {path.relative_to(report.FIGURES.parent.parent)}")
    report.update_readme(report.README, report.readme_table(timings, scores, reference, report.load_peak(peak.PEAK)))
    print("README.md: results table regenerated")
    for notebook in sorted(report.NOTEBOOKS.glob("*.ipynb")):
        report.execute_notebook(notebook)
        print(f"executed: notebooks/{notebook.name}")


def cmd_transcribe(args) -> int:
    opts = transcribe.Options(
        model=args.model, method=args.method, output_format=args.output_format, output_dir=args.output_dir,
        language=args.language, beam_size=args.beam_size, threads=args.threads or 0,
    )
    return 2 if transcribe.run(opts, args.files) else 0


def cmd_memory_probe(args) -> None:
    print(json.dumps(bench.memory_probe(args.model, args.method, args.threads, args.audio, args.language)))


def cmd_models(args) -> None:
    for name in args.names:
        path = models.checkpoint_path(name)
        print(f"{name}: {path}")
    if not args.names:
        print("official names:", ", ".join(models.OFFICIAL))
        print("loadable here:", ", ".join(models.available_here()) or "none")


def cmd_audio(args) -> None:
    if args.action == "seed":
        print(f"original's clip: {audio.fetch_seed()}")
        return
    clips = audio.read_manifest(args.manifest)
    found = audio.available(clips)
    print(f"{len(found)} of {len(clips)} manifest clips verified ({sum(c.duration_s for c, _ in found):.0f} s)")
    clip = audio.window()
    print(f"benchmark input: {clip.path} ({clip.duration_s:.1f} s, {'real speech' if clip.real else 'synthesized'})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whisper-cpu", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench", help="time models x methods on one input")
    b.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    b.add_argument("--methods", nargs="+", default=["fp32", "fp32-nn", "qint8"], help=", ".join(methods.REGISTRY))
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--beam-size", type=int, default=None, help="beam search width (default: greedy)")
    b.add_argument("--threads", type=_threads, default=None, help="default: all available cores")
    b.add_argument("--audio", type=Path, help="a file to time instead of the ~30 s real-speech window")
    b.add_argument("--language", default="en")
    b.add_argument("--output", type=Path, default=results.TIMINGS)
    b.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run instead of starting a new one")
    b.add_argument("--all", action="store_true", help="the full matrix: window, thread scaling, long-form, memory, accuracy")
    b.set_defaults(func=cmd_bench)

    t = sub.add_parser("transcribe", help="transcribe files with our fastest equally accurate method (text, subtitles)")
    t.add_argument("files", nargs="+", type=Path)
    t.add_argument("--model", default="base")
    t.add_argument("--method", default="auto", help="auto: the fastest measured on this CPU without measurable WER loss")
    t.add_argument("--output-format", choices=transcribe.FORMATS, default="txt")
    t.add_argument("--output-dir", type=Path, default=Path("."))
    t.add_argument("--language", help="default: en for .en models, else detected")
    t.add_argument("--beam-size", type=int, default=None, help="beam search width (default: greedy)")
    t.add_argument("--threads", type=_threads, default=None, help="default: all available cores")
    t.set_defaults(func=cmd_transcribe)

    p_ = sub.add_parser("memory-probe", help=argparse.SUPPRESS)
    p_.add_argument("model")
    p_.add_argument("method")
    p_.add_argument("audio", type=Path)
    p_.add_argument("--threads", type=int, default=1)
    p_.add_argument("--language", default="en")
    p_.set_defaults(func=cmd_memory_probe)

    c = sub.add_parser("compare", help="our speedups beside the published ones")
    c.add_argument("--timings", type=Path, default=results.TIMINGS)
    c.add_argument("--run-id")
    c.add_argument("--accuracy", type=Path, default=results.ACCURACY)
    c.set_defaults(func=cmd_compare)

    w = sub.add_parser("accuracy", help="WER of models x methods on the real-speech clips of a manifest")
    w.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    w.add_argument("--methods", nargs="+", default=["fp32", "fp32-nn", "qint8"], help=", ".join(methods.REGISTRY))
    w.add_argument("--beam-size", type=int, default=None)
    w.add_argument("--threads", type=_threads, default=None)
    w.add_argument("--manifest", type=Path, default=audio.MANIFEST, help="any manifest with file, sha256, language, reference")
    w.add_argument("--audio-dir", type=Path, help="where the manifest's files are (default: the audio mirror)")
    w.add_argument("--output", type=Path, default=results.ACCURACY)
    w.add_argument("--transcripts", type=Path, default=results.TRANSCRIPTS)
    w.add_argument("--resume", metavar="RUN_ID")
    w.set_defaults(func=cmd_accuracy)

    r = sub.add_parser("report", help="figures, the README results table and the executed notebooks, from the CSVs")
    r.add_argument("--timings", type=Path, default=results.TIMINGS)
    r.add_argument("--accuracy", type=Path, default=results.ACCURACY)
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("models", help="provision checkpoints (or list what loads here)")
    m.add_argument("names", nargs="*")
    m.set_defaults(func=cmd_models)

    a = sub.add_parser("audio", help="verify the real-speech clips and build the benchmark input")
    a.add_argument("action", choices=["prepare", "seed"])
    a.add_argument("--manifest", type=Path, default=audio.MANIFEST)
    a.set_defaults(func=cmd_audio)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        status = args.func(args)
    except UserError as error:
        print(f"whisper-cpu: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nwhisper-cpu: interrupted; rows written so far are kept (bench: rerun with --resume RUN_ID)", file=sys.stderr)
        return 130
    return status or 0
