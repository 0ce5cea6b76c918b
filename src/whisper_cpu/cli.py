"""Command line: `python -m whisper_cpu` / `whisper-cpu`. Problems a user can fix end in one line and exit 2.

This module composes the two layers: the library's commands (transcribe, corpus, serve, models) and the benchmark's
(`whisper_cpu.bench.cli`), which it is the only library-side module to import. A command whose optional dependencies
(an extra: serve, corpus's Ray engine, bench) are not installed says in one line which extra to install.
"""

import argparse
import math
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import torch

from . import UserError, api, models, transcribe, workspace
from .runner import DecodeOptions


LIBRARY_COMMANDS = ("transcribe", "corpus", "serve", "models")
BENCH_COMMANDS = ("bench", "accuracy", "longform", "compare", "report", "peak", "floor", "step", "audio", "loadtest", "scaleout")  # bench/cli.py's


def needs(extra: str, command: str, *modules: str) -> None:
    """The optional modules a command runs on, imported, or one line naming the extra that installs them."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(f"{command} needs the {extra} extra: pip install 'whisper-cpu[{extra}]'") from None


def _bench():
    """The benchmark's command-line module, or None where the bench extra is not installed."""
    try:
        from .bench import cli
    except ModuleNotFoundError as error:
        if (error.name or "").startswith("whisper_cpu"):
            raise
        return None
    return cli


def _without_bench(args) -> None:
    raise UserError(f"{args.command} needs the bench extra: pip install 'whisper-cpu[bench]'")


def _library_command(argv: list[str]) -> bool:
    """Whether ARGV runs one of the library's commands, told before the parser is built: the benchmark's commands, and
    their imports (pandas, jiwer), are then left out of it. Anything unclear counts as the benchmark's."""
    words = iter(argv)
    for word in words:
        if word == "--workspace":
            next(words, None)
        elif not word.startswith("-"):
            return word in LIBRARY_COMMANDS
    return False


def positive(value: str) -> int:
    if (n := int(value)) < 1:
        raise argparse.ArgumentTypeError(f"{n}: at least 1")
    return n


def positive_number(value: str) -> float:
    """A finite number above 0 (`nan`, `inf` and negatives refused)."""
    if not 0 < (x := float(value)) < math.inf:
        raise argparse.ArgumentTypeError(f"{value}: a number above 0")
    return x


def threads(value: str) -> int:
    n = positive(value)
    cores = len(os.sched_getaffinity(0))
    if n > cores:
        raise argparse.ArgumentTypeError(f"{n} threads on {cores} available cores: oversubscribing slows PyTorch several times")
    return n


def torch_threads(value: str) -> int:
    """openai-whisper's --threads: 0 leaves PyTorch's own default."""
    return 0 if value.strip() == "0" else threads(value)


def boolean(flag: str):
    """openai-whisper's boolean options: True or False, spelled out and required, so a file name after one is a mistake."""
    def parse(value: str) -> bool:
        if value not in ("True", "False"):
            hint = f"; did you mean `{flag} True {value}`?" if Path(value).exists() else ""
            raise argparse.ArgumentTypeError(f"takes True or False, not {value!r}{hint}")
        return value == "True"
    return parse


def _temperatures(args) -> tuple[float, ...]:
    """openai-whisper's --temperature and --temperature_increment_on_fallback: from T up to 1.0 in steps of the increment."""
    if args.temperature_increment_on_fallback < 0:
        raise UserError(f"--temperature_increment_on_fallback {args.temperature_increment_on_fallback}: 0 (no fallback) or above")
    if args.temperature_increment_on_fallback and args.temperature <= 1.0:
        return tuple(round(t, 6) for t in np.arange(args.temperature, 1.0 + 1e-6, args.temperature_increment_on_fallback))
    return (args.temperature,)  # above 1.0 openai-whisper's range is empty, and its decode then fails


def decoding_options(args) -> DecodeOptions:
    """The options by openai-whisper's names, as the Python interface takes them."""
    return api.decode_options(**{name: getattr(args, name) for name in api.OPTIONS if name != "temperature"}, temperature=_temperatures(args))


def on_the_cpu(args) -> None:
    """openai-whisper's device options, here where everything runs on the CPU: a GPU is refused, --fp16 True falls
    back to fp32 with a note, as openai-whisper does on a CPU."""
    if args.device != "cpu":
        raise UserError(f"--device {args.device}: whisper-cpu runs on the CPU only; openai-whisper itself runs on a GPU")
    if args.fp16:
        print("whisper-cpu: note: --fp16 True: FP16 is not supported on CPU; using FP32 instead, as openai-whisper does", file=sys.stderr)


def cmd_transcribe(args) -> int:
    on_the_cpu(args)
    opts = transcribe.Options(
        model=args.model, method=args.method, output_format=args.output_format, output_dir=args.output_dir, decoding=decoding_options(args),
        threads=torch.get_num_threads() if args.threads == 0 else args.threads or 0, batch_size=args.batch_size or 0, verbose=args.verbose,
        writer={key: getattr(args, key) for key in transcribe.WRITER_OPTIONS},
    )
    with models.download_root(args.model_dir):
        return 2 if transcribe.run(opts, args.files) else 0


def cmd_corpus(args) -> int:
    from . import corpus

    if args.engine == "ray":
        needs("corpus", "corpus --engine ray", "ray.data", "pyarrow")
    elif args.threads and args.threads > (cores := len(os.sched_getaffinity(0))):  # a Ray cluster's nodes may have more
        raise UserError(f"--threads {args.threads} on {cores} available cores: oversubscribing slows PyTorch several times")
    opts = corpus.Options(model=args.model, method=args.method, output_format=args.output_format, engine=args.engine, address=args.address,
                          actors=args.actors or 0, threads=args.threads or 0, batch_size=args.batch_size or 0,
                          decoding=DecodeOptions(language=args.language))
    records = corpus.run(opts, args.source, args.output_dir)
    failed = [r for r in records.values() if r["error"]]
    print(f"{len(records) - len(failed)} of {len(records)} files transcribed, {len(failed)} failed: {Path(args.output_dir) / corpus.RECORDS}")
    return 2 if failed else 0


def cmd_serve(args) -> None:
    from . import serve

    needs("serve", "serve", "fastapi", "uvicorn", "python_multipart")
    sock = serve.bind(args.host, args.port)
    model = api.Model(args.model, args.method, args.threads, args.batch_size)
    if model.why:
        print(f"method {model.method}: {model.why}", file=sys.stderr)
    settings = serve.Settings(model=args.model, method=model.method, api_key=args.api_key or os.environ.get("WHISPER_CPU_API_KEY"),
                              max_bytes=int(args.max_mb * 2**20), queue_size=args.queue_size,
                              batch_size=getattr(model.runner, "batch_size", 1) or 1)
    print(f"serving {args.model} ({model.method}) on http://{args.host}:{sock.getsockname()[1]}/v1 "
          f"{'with' if settings.api_key else 'without'} an API key", file=sys.stderr)
    serve.run(settings, model.runner, sock)


def cmd_models(args) -> None:
    for name in args.names:
        print(f"{name}: {models.checkpoint_path(name)}")
    if not args.names:
        print("official names:", ", ".join(models.OFFICIAL))
        print("loadable here:", ", ".join(models.available_here()) or "none")


def _openai_whisper_options(t: argparse.ArgumentParser) -> None:
    """openai-whisper's transcribe options, under its names (the dashed spellings work too) and meanings; where our default
    differs on purpose, the help says so."""
    def option(name: str, *aliases: str, **kwargs):
        t.add_argument(*dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}", *aliases]), dest=name, **kwargs)

    def flag(name: str, default: bool, help: str):
        option(name, type=boolean(f"--{name}"), default=default, metavar="True|False", help=help)

    option("output_format", "-f", choices=transcribe.FORMATS, default="txt", metavar="FORMAT",
           help=f"{', '.join(transcribe.FORMATS)} (default: txt; openai-whisper's: all)")
    option("output_dir", "-o", type=Path, default=Path("."), metavar="DIR")
    flag("verbose", False, "True: also print each file's segments as openai-whisper does, [00:00.000 --> 00:05.000] text, as each file "
         "is done (default: False, only the files written and a progress bar; openai-whisper's: True)")
    option("task", choices=["transcribe", "translate"], default="transcribe", help="translate: into English (multilingual models)")
    option("beam_size", type=int, default=None, help="beam search width (default: greedy, several times faster on a CPU; openai-whisper's: 5)")
    option("best_of", type=int, default=None, help="candidates when sampling with non-zero temperature (default: 1, as openai-whisper's "
           "transcribe(); its command line's: 5)")
    option("patience", type=float, default=None, help="beam search patience (needs --beam_size; default: 1.0)")
    option("length_penalty", type=float, default=None, help="length penalty alpha for ranking candidates (default: plain length normalisation)")
    option("suppress_tokens", default=DecodeOptions.suppress_tokens,
           help="comma-separated token ids never sampled (-1: openai-whisper's usual symbols)")
    option("temperature", type=float, default=0.0)
    option("temperature_increment_on_fallback", type=float, default=0.2, help="0: no fallback")
    option("compression_ratio_threshold", type=float, default=2.4)
    option("logprob_threshold", type=float, default=-1.0)
    option("no_speech_threshold", type=float, default=0.6)
    flag("condition_on_previous_text", True, "the previous window's text as the next one's prompt")
    option("initial_prompt", default=None)
    flag("carry_initial_prompt", False, "the initial prompt ahead of every window's prompt, not only the first")
    flag("word_timestamps", False, "per-word start and end")
    option("prepend_punctuations", default=DecodeOptions.prepend_punctuations, help="with word timestamps: merged into the next word")
    option("append_punctuations", default=DecodeOptions.append_punctuations, help="with word timestamps: merged into the previous word")
    flag("highlight_words", False, "underline each word as it is spoken (srt, vtt; needs word timestamps)")
    option("max_line_width", type=int, default=None, help="characters per subtitle line (needs word timestamps)")
    option("max_line_count", type=int, default=None, help="lines per subtitle (needs word timestamps)")
    option("max_words_per_line", type=int, default=None, help="words per subtitle line (needs word timestamps)")
    option("clip_timestamps", default="0", help="start,end,... seconds of the parts to transcribe (sequential methods)")
    option("hallucination_silence_threshold", type=float, default=None,
           help="skip silences longer than this (s) around a suspected hallucination (sequential methods, word timestamps)")
    option("threads", type=torch_threads, default=None, help="default: all available cores; 0: PyTorch's own default (openai-whisper's)")
    option("device", default="cpu", help="cpu only (openai-whisper's default: cuda where there is a GPU)")
    flag("fp16", False, "openai-whisper's GPU activations; on a CPU it uses fp32, as here (default: False; openai-whisper's: True)")
    option("model_dir", default=None, help="where official checkpoints are found or downloaded, as openai-whisper's (default: ~/.cache/whisper)")


def parser(benchmark: bool = True) -> argparse.ArgumentParser:
    """The command line; `benchmark`: with the benchmark's commands (each a one-line refusal without the bench extra)."""
    from . import bench  # noqa: F401  (registers the peers and $WHISPER_CPU_PLUGINS' methods: it needs no extra)

    p = argparse.ArgumentParser(prog="whisper-cpu", description=__doc__.split("\n")[0])
    p.add_argument("--workspace", type=Path, help="results, models and audio folder (default: $WHISPER_CPU_HOME, the source checkout, "
                   "else ~/.local/share/whisper-cpu)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe files with our fastest faithful method (text, subtitles)",
                       usage="%(prog)s [options] FILE [FILE ...]")  # its errors in two lines, not a page of usage
    t.add_argument("files", nargs="+", type=Path, metavar="FILE", help="audio or video, any format PyAV decodes")
    t.add_argument("--model", default="base", help="default: base (openai-whisper's: turbo, far slower on a CPU)")
    t.add_argument("--method", default="auto", help="auto: the fastest measured on this CPU that keeps fp32's words")
    t.add_argument("--language", help="default (or auto): en for .en models, else detected")
    t.add_argument("--batch-size", "--batch_size", type=positive, default=None, help="windows decoded together by a batched method, "
                   "across files (default: 8, fewer where memory is short)")
    _openai_whisper_options(t)
    t.set_defaults(func=cmd_transcribe)

    c = sub.add_parser("corpus", help="every audio file of a folder or manifest, once, resumable; on this machine or a Ray cluster")
    c.add_argument("source", type=Path, help="a folder (audio files found recursively) or a CSV/JSONL manifest with a path column")
    c.add_argument("--output-dir", type=Path, required=True, help="outputs and records.jsonl (a rerun skips what is done)")
    c.add_argument("--model", default="base")
    c.add_argument("--method", default="auto")
    c.add_argument("--output-format", choices=transcribe.FORMATS, default="all")
    c.add_argument("--language", help="default: en for .en models, else detected")
    c.add_argument("--engine", choices=["local", "ray"], default="local")
    c.add_argument("--address", help="a Ray cluster's address (default: start one on this machine)")
    c.add_argument("--actors", type=positive, default=None, help="Ray actors (default: the cluster's CPUs over the threads per actor)")
    c.add_argument("--threads", type=positive, default=None, help="threads of the local engine, or per Ray actor (default: all cores; 2 per actor)")
    c.add_argument("--batch-size", type=positive, default=None, help="files per Ray batch, windows per decoder batch locally")
    c.set_defaults(func=cmd_corpus)

    s = sub.add_parser("serve", help="an OpenAI-compatible transcription API (/v1/audio/transcriptions, /v1/audio/translations)")
    s.add_argument("--model", default="base")
    s.add_argument("--method", default="auto", help="auto: the fastest measured on this CPU that keeps fp32's words")
    s.add_argument("--host", default="127.0.0.1", help="default: this machine only")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", help="required as `Authorization: Bearer KEY` (default: $WHISPER_CPU_API_KEY, else none)")
    s.add_argument("--max-mb", type=positive_number, default=25, help="largest upload accepted (413 above it)")
    s.add_argument("--queue-size", type=positive, default=64, help="requests waiting or being decoded (503 above it)")
    s.add_argument("--threads", type=threads, default=None, help="default: all available cores")
    s.add_argument("--batch-size", type=positive, default=None, help="requests decoded together (a batched method's default: 8)")
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("models", help="provision checkpoints (or list what loads here)")
    m.add_argument("names", nargs="*")
    m.set_defaults(func=cmd_models)
    if bench := benchmark and _bench():
        bench.add_commands(sub)
    for name in BENCH_COMMANDS if benchmark and not bench else ():  # each says what to install, whatever its arguments
        stub = sub.add_parser(name, help="(needs the bench extra)", add_help=False, prefix_chars="\0")
        stub.add_argument("arguments", nargs="*")
        stub.set_defaults(func=_without_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    library = _library_command(argv)
    args = parser(benchmark=not library).parse_args(argv)
    bench = None if library else _bench()
    interrupted = bench.harness.Interrupted if bench else ()  # only the benchmark's runs raise it
    if args.workspace:
        workspace.use(args.workspace)
    try:
        status = args.func(args)
    except UserError as error:
        print(f"whisper-cpu: error: {error}", file=sys.stderr)
        return 2
    except interrupted as stop:
        print(f"\nwhisper-cpu: interrupted; rows written so far are kept: rerun with --resume {stop.run_id}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nwhisper-cpu: interrupted; outputs already written are kept", file=sys.stderr)
        return 130
    return status or 0
