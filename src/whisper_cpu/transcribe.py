"""The user-facing transcriber: our PyTorch methods on any number of files, text and subtitles written whole.

`auto` reads measurements rather than guessing: the benchmark's report derives, per CPU model, Whisper model
and thread count, which of our methods were timed here and whether each keeps fp32's words on short clips
and on long recordings (the workspace's `results/choices.json`); `auto` takes the fastest faithful one and
says which runs decided it. The model loads once; a file that fails is reported in one line and the others
still get their outputs.
"""

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE
from whisper.utils import get_writer

from . import UserError, machine, registry, workspace
from .runner import DecodeOptions, Runner

FORMATS = ("txt", "srt", "vtt", "json", "tsv", "all")


@dataclass(frozen=True)
class Options:
    model: str = "base"
    method: str = "auto"
    output_format: str = "txt"
    output_dir: Path = Path(".")
    decoding: DecodeOptions = DecodeOptions()
    threads: int = 0  # 0: machine.default_threads()
    batch_size: int = 0  # windows decoded together by a batched method (0: its default for this model and memory)
    writer: dict = field(default_factory=dict)  # openai-whisper's subtitle options: highlight_words, max_line_width, ...


WRITER_OPTIONS = ("highlight_words", "max_line_width", "max_line_count", "max_words_per_line")


def _runnable(name: str) -> bool:
    entry = registry.REGISTRY.get(name)
    return entry is not None and entry.ours and entry.unavailable() is None


def faithful(method: str, *ci_lows: float | None) -> bool:
    """The rule `auto` trusts: fp32 itself, or every gate's 95% CI of the WER change against fp32 reaches zero (a
    missing one, None or NaN, counts as failed). The benchmark's report applies it when it writes choices.json."""
    return method == "fp32" or all(low is not None and low <= 0 for low in ci_lows)


def _read_choices(path: Path) -> list[dict]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))["choices"]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, OSError) as error:
        raise UserError(f"{path} is unreadable ({error}): rerun `whisper-cpu report` to derive it again") from None


def choose_method(model: str, threads: int, path: Path | None = None) -> tuple[str, str]:
    """(method, why): the fastest of our methods measured on this CPU that keeps fp32's words (both gates): on the
    long recordings where any faithful method was timed on them, else on the window."""
    cpu, isa = machine.cpu_name(), machine.isa()
    rows = [c for c in _read_choices(path or workspace.get().choices) if (c["cpu"], c["isa"], c["model"]) == (cpu, isa, model)]
    if rows:
        at = threads if any(c["threads"] == threads for c in rows) else max(c["threads"] for c in rows)
        rows = [c for c in rows if c["threads"] == at]
    if not any(c.get("gated") for c in rows):  # fp32 alone is faithful by definition, not by measurement: no choice was made here
        return registry.DEFAULT, (f"none of our faster methods was scored by both accuracy gates for {model} on this CPU ({cpu}, "
                                  f"{isa or 'no listed ISA flags'}); documented default")
    rows = [c for c in rows if c["faithful"] and _runnable(c["method"])]
    timed_long = [c for c in rows if c.get("long_s_per_30s") is not None]
    speed, what, run = ("long_s_per_30s", "on long recordings", "long_run") if timed_long else ("s_per_30s", "on one window", "timing_run")
    best = min(timed_long or rows, key=lambda c: c[speed])
    return best["method"], (f"the fastest of our methods measured on {cpu} for {model} that keeps fp32's words: "
                            f"{best[speed]:.2f} s per 30 s {what} on {best['threads']} thread{'s' if best['threads'] > 1 else ''} "
                            f"(run {best[run]}); {best['why']}")


def resolve_method(model: str, method: str, threads: int) -> tuple[str, str | None]:
    """(method, why): `auto` as the measured choice and why it was made, any other name as it is (no why)."""
    return choose_method(model, threads) if method == "auto" else (method, None)


def language_for(model: str, language: str | None) -> str | None:
    """A language code for openai-whisper: English for .en models, None (detect) when not given."""
    if language is None:
        return "en" if model.endswith(".en") else None
    code = TO_LANGUAGE_CODE.get(language.lower(), language.lower())
    if code not in LANGUAGES:
        raise UserError(f"unknown language '{language}': use a code such as en, de, fr or a name such as german")
    if model.endswith(".en") and code != "en":
        raise UserError(f"{model} is English-only: use a multilingual model (e.g. base) for '{language}'")
    return code


def check_options(opts: "Options") -> None:
    """openai-whisper's CLI rules: the subtitle line options need word timings; English-only models cannot translate."""
    if not opts.decoding.word_timestamps and (used := [k for k in WRITER_OPTIONS if opts.writer.get(k)]):
        raise UserError(f"--{used[0]} requires --word_timestamps True")
    if opts.decoding.task == "translate" and opts.model.endswith(".en"):
        raise UserError(f"{opts.model} is English-only: --task translate needs a multilingual model (e.g. base)")


def write_outputs(result: dict, source: Path, output_format: str, output_dir: Path, writer: dict | None = None) -> list[Path]:
    """openai-whisper's writers into a temporary folder beside the outputs, then renamed: never a half file."""
    options = {key: (writer or {}).get(key) for key in WRITER_OPTIONS}
    try:
        with tempfile.TemporaryDirectory(dir=output_dir, prefix=".whisper-cpu-") as tmp:
            get_writer(output_format, tmp)(result, str(source), options)
            written = []
            for file in sorted(Path(tmp).iterdir()):
                os.replace(file, output_dir / file.name)
                written.append(output_dir / file.name)
    except OSError as error:
        raise UserError(f"cannot write to {output_dir}: {error.strerror or error}") from None
    return written


def load(opts: Options, log=lambda line: print(line, file=sys.stderr)) -> tuple[Runner, registry.Entry]:
    """The runner of the method `opts` names (`auto`: the measured choice, said in one line), on its threads."""
    threads = opts.threads or machine.default_threads()
    torch.set_num_threads(threads)
    name, why = resolve_method(opts.model, opts.method, threads)
    if why:
        log(f"method {name}: {why}")
    entry = registry.ours(name)
    runner = entry.load(opts.model, threads)
    if entry.batched and opts.batch_size:
        runner.batch_size = opts.batch_size
    return runner, entry


def run(opts: Options, paths: list[Path], log=lambda line: print(line, file=sys.stderr)) -> int:
    """Transcribe every file with one loaded model, printing the paths written; returns how many files failed."""
    check_options(opts)
    opts = replace(opts, decoding=replace(opts.decoding, language=language_for(opts.model, opts.decoding.language)))
    try:
        Path(opts.output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the output folder {opts.output_dir}: {error.strerror or error}") from None
    runner, _ = load(opts, log)
    failed, unique = 0, {}
    for path in map(Path, paths):
        if path.stem in unique:
            log(f"whisper-cpu: error: {path}: an earlier file has the same name, so its outputs would be overwritten")
            failed += 1
        else:
            unique[path.stem] = path
    for path, transcript in runner.many(list(unique.values()), opts.decoding, progress=True):
        try:
            if isinstance(transcript, UserError):
                raise transcript
            written = write_outputs(transcript.as_whisper_result(), path, opts.output_format, Path(opts.output_dir), opts.writer)
        except UserError as error:
            log(f"whisper-cpu: error: {path}: {error}")
            failed += 1
            continue
        if not transcript.text:
            log(f"whisper-cpu: note: {path}: no speech recognized, the outputs are empty")
        for file in written:
            print(file)
    return failed
