"""Command line: `python -m whisper_cpu` / `whisper-cpu`. Problems a user can fix end in one line and exit 2.

This module composes the two layers: the library's commands (transcribe, models) and the benchmark's
(`whisper_cpu.bench.cli`), which it is the only library-side module to import.
"""

import argparse
import os
import sys
from pathlib import Path

from . import UserError, models, transcribe, workspace
from .runner import DecodeOptions


def threads(value: str) -> int:
    n = int(value)
    cores = len(os.sched_getaffinity(0))
    if not 1 <= n <= cores:
        raise argparse.ArgumentTypeError(f"{n} threads on {cores} available cores: oversubscribing slows PyTorch several times")
    return n


def cmd_transcribe(args) -> int:
    opts = transcribe.Options(
        model=args.model, method=args.method, output_format=args.output_format, output_dir=args.output_dir,
        decoding=DecodeOptions(language=args.language, beam_size=args.beam_size, word_timestamps=args.word_timestamps),
        threads=args.threads or 0, batch_size=args.batch_size or 0,
    )
    return 2 if transcribe.run(opts, args.files) else 0


def cmd_models(args) -> None:
    for name in args.names:
        print(f"{name}: {models.checkpoint_path(name)}")
    if not args.names:
        print("official names:", ", ".join(models.OFFICIAL))
        print("loadable here:", ", ".join(models.available_here()) or "none")


def parser() -> argparse.ArgumentParser:
    from .bench import cli as bench_cli

    p = argparse.ArgumentParser(prog="whisper-cpu", description=__doc__.split("\n")[0])
    p.add_argument("--workspace", type=Path, help="results, models and audio folder (default: $WHISPER_CPU_HOME, the source checkout, "
                   "else ~/.local/share/whisper-cpu)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe files with our fastest faithful method (text, subtitles)")
    t.add_argument("files", nargs="+", type=Path)
    t.add_argument("--model", default="base")
    t.add_argument("--method", default="auto", help="auto: the fastest measured on this CPU that keeps fp32's words")
    t.add_argument("--output-format", choices=transcribe.FORMATS, default="txt")
    t.add_argument("--output-dir", type=Path, default=Path("."))
    t.add_argument("--language", help="default: en for .en models, else detected")
    t.add_argument("--beam-size", type=int, default=None, help="beam search width (default: greedy)")
    t.add_argument("--threads", type=threads, default=None, help="default: all available cores")
    t.add_argument("--batch-size", type=int, default=None, help="windows decoded together by a batched method, across files "
                   "(default: 8, fewer where memory is short)")
    t.add_argument("--word-timestamps", action="store_true", help="per-word start and end (json, and the subtitle writers' word options)")
    t.set_defaults(func=cmd_transcribe)

    m = sub.add_parser("models", help="provision checkpoints (or list what loads here)")
    m.add_argument("names", nargs="*")
    m.set_defaults(func=cmd_models)
    bench_cli.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .bench.harness import Interrupted

    args = parser().parse_args(argv)
    if args.workspace:
        workspace.use(args.workspace)
    try:
        status = args.func(args)
    except UserError as error:
        print(f"whisper-cpu: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"\nwhisper-cpu: interrupted; rows written so far are kept: rerun with --resume {stop.run_id}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nwhisper-cpu: interrupted; outputs already written are kept", file=sys.stderr)
        return 130
    return status or 0
