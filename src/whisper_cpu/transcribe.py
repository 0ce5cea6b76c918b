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
from tqdm import tqdm
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE
from whisper.utils import format_timestamp, get_writer, make_safe

from . import UserError, machine, registry, workspace
from .runner import DecodeOptions, Runner, clip_seconds

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
    verbose: bool = False  # also print each file's segments as openai-whisper's --verbose True does


WRITER_OPTIONS = ("highlight_words", "max_line_width", "max_line_count", "max_words_per_line")
SEQUENTIAL = ("patience", "length_penalty", "suppress_tokens", "prepend_punctuations", "append_punctuations", "clip_timestamps",
              "hallucination_silence_threshold")  # decoding options that only openai-whisper's sequential transcribe honours


def _runnable(name: str) -> bool:
    entry = registry.REGISTRY.get(name)
    return entry is not None and entry.ours and entry.unavailable() is None


def faithful(method: str, *ci_lows: float | None) -> bool:
    """The rule `auto` trusts: fp32 itself, or every gate's 95% CI of the WER change against fp32 reaches zero (a
    missing one, None or NaN, counts as failed). The benchmark's report applies it when it writes choices.json."""
    return method == "fp32" or all(low is not None and low <= 0 for low in ci_lows)


def faithful_everywhere(method: str, ci_lows: dict[object, tuple[float | None, ...]]) -> bool:
    """The stricter rule for the harder material, which `auto` also requires: `faithful` on every category (key), its
    CIs those of the WER change and of the words written past the reference's end (on non-speech: every word) against
    fp32, so a method that makes up words in noise or silence fails though its WER holds; nothing measured fails."""
    return method == "fp32" or (bool(ci_lows) and all(faithful(method, *lows) for lows in ci_lows.values()))


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
        return registry.default(), (f"none of our faster methods was scored by both accuracy gates for {model} on this CPU ({cpu}, "
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
    """A language code for openai-whisper: English for .en models, None (detect) when not given or `auto`."""
    if language is None or language.lower() == "auto":
        return "en" if model.endswith(".en") else None
    code = TO_LANGUAGE_CODE.get(language.lower(), language.lower())
    if code not in LANGUAGES:
        raise UserError(f"unknown language '{language}': use a code such as en, de, fr or a name such as german")
    if model.endswith(".en") and code != "en":
        raise UserError(f"{model} is English-only: use a multilingual model (e.g. base) for '{language}'")
    if code == "yue" and "large-v3" not in model and model != "turbo":
        raise UserError(f"{model} does not know Cantonese (yue): large-v3 and turbo do; or use zh")
    return code


def check_options(opts: "Options") -> None:
    """openai-whisper's CLI rules: the subtitle line options need word timings, patience a beam; English-only models cannot translate."""
    if not opts.decoding.word_timestamps and (used := [k for k in WRITER_OPTIONS if opts.writer.get(k)]):
        raise UserError(f"--{used[0]} requires --word_timestamps True")
    if opts.decoding.patience is not None and opts.decoding.beam_size is None:
        raise UserError("--patience requires --beam_size (it widens beam search)")
    if opts.decoding.task == "translate" and opts.model.endswith(".en"):
        raise UserError(f"{opts.model} is English-only: --task translate needs a multilingual model (e.g. base)")
    check_values(opts.decoding)


def check_values(d: DecodeOptions) -> None:
    """Values openai-whisper takes without checking, then fails on with a traceback, or loops on: refused in one line."""
    for name in ("beam_size", "best_of"):
        if (value := getattr(d, name)) is not None and value < 1:
            raise UserError(f"--{name} {value}: must be at least 1")
    if d.patience is not None and not d.patience > 0:
        raise UserError(f"--patience {d.patience}: must be above 0")
    if d.length_penalty is not None and not 0 <= d.length_penalty <= 1:
        raise UserError(f"--length_penalty {d.length_penalty}: must be between 0 and 1")
    if not d.temperature or (bad := [t for t in d.temperature if not t >= 0]):  # NaN too
        raise UserError(f"--temperature {bad[0] if d.temperature else 'none'}: must be 0 or above")
    try:
        [int(t) for t in d.suppress_tokens.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--suppress_tokens {d.suppress_tokens!r}: token ids separated by commas, such as -1,1350") from None
    clip_seconds(d.clip_timestamps)


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


def entry_for(opts: Options, log=lambda line: print(line, file=sys.stderr)) -> registry.Entry:
    """The method `opts` names (`auto`: the measured choice, said in one line), refused before the model loads where it
    is batched and the options are ones only openai-whisper's sequential transcribe honours."""
    name, why = resolve_method(opts.model, opts.method, opts.threads or machine.default_threads())
    if why:
        log(f"method {name}: {why}")
    entry = registry.ours(name)
    if entry.batched and (used := [k for k in SEQUENTIAL if getattr(opts.decoding, k) != getattr(DecodeOptions, k)]):
        raise UserError(f"--{used[0]} belongs to openai-whisper's sequential transcribe, which {name} does not run: "
                        f"use a method without -batched (e.g. --method {registry.default()})")
    return entry


def load(opts: Options, log=lambda line: print(line, file=sys.stderr), entry: registry.Entry | None = None) -> tuple[Runner, registry.Entry]:
    """The runner of the method `opts` names (or `entry`, already chosen by `entry_for`), on its threads."""
    if opts.batch_size < 0:  # a batch that never fills: the batched runner would wait for ever
        raise UserError(f"batch size {opts.batch_size}: windows decoded together, at least 1")
    threads = opts.threads or machine.default_threads()
    torch.set_num_threads(threads)
    entry = entry or entry_for(opts, log)
    runner = entry.load(opts.model, threads)
    if entry.batched and opts.batch_size:
        runner.batch_size = opts.batch_size
    return runner, entry


def _problem(path: Path, seen: dict[str, Path]) -> str | None:
    """Why a path cannot be transcribed, found before the model loads: a typo costs no model load."""
    if path.is_dir():
        return f"a folder: `whisper-cpu corpus {path} --output-dir OUT` transcribes every audio file in it"
    if not path.exists():
        return "no such file"
    return "an earlier file has the same name, so its outputs would be overwritten" if path.stem in seen else None


def run(opts: Options, paths: list[Path], log=lambda line: tqdm.write(line, file=sys.stderr)) -> int:
    """Transcribe every file with one loaded model, printing the paths written; returns how many files failed. Lines go
    through tqdm.write, so none is glued onto a progress bar: the files' own for many files, else the method's."""
    check_options(opts)
    opts = replace(opts, decoding=replace(opts.decoding, language=language_for(opts.model, opts.decoding.language)))
    entry = entry_for(opts, log)
    try:
        Path(opts.output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the output folder {opts.output_dir}: {error.strerror or error}") from None
    failed, unique = 0, {}
    for path in map(Path, paths):
        if problem := _problem(path, unique):
            log(f"whisper-cpu: error: {path}: {problem}")
            failed += 1
        else:
            unique[path.stem] = path
    if not unique:
        return failed
    runner, _ = load(opts, log, entry)
    with tqdm(total=len(unique), unit="file", desc="files", disable=len(unique) == 1, file=sys.stderr, mininterval=0) as bar:
        for path, transcript in runner.many(list(unique.values()), opts.decoding, progress=len(unique) == 1):
            bar.update()
            try:
                if isinstance(transcript, UserError):
                    raise transcript
                written = write_outputs(transcript.as_whisper_result(), path, opts.output_format, Path(opts.output_dir), opts.writer)
            except UserError as error:  # audio's errors name the file already
                log(f"whisper-cpu: error: {error if str(path) in str(error) else f'{path}: {error}'}")
                failed += 1
                continue
            if not transcript.text:
                log(f"whisper-cpu: note: {path}: no speech recognized, the outputs are empty")
            for s in transcript.segments if opts.verbose else ():
                tqdm.write(make_safe(f"[{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}] {s['text']}"), file=sys.stdout)
            for file in written:
                tqdm.write(str(file), file=sys.stdout)
    return failed
