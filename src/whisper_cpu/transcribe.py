"""The user-facing transcriber: our PyTorch methods on any number of files, text and subtitles written whole.

`auto` reads the committed measurements rather than guessing: the fastest method timed on this CPU model whose
English WER is not measurably worse than fp32's, else the documented default. The model loads once; a file that
fails is reported in one line and the others still get their outputs.
"""

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE
from whisper.utils import get_writer

from . import UserError, audio, methods, report, results

FORMATS = ("txt", "srt", "vtt", "json", "tsv", "all")
SILENCE = 1e-4  # peak absolute amplitude below which a file holds no signal at all
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai-whisper's own fallback when a window decodes badly


@dataclass(frozen=True)
class Options:
    model: str = "base"
    method: str = "auto"
    output_format: str = "txt"
    output_dir: Path = Path(".")
    language: str | None = None
    beam_size: int | None = None
    threads: int = 0  # 0: results.default_threads()


def _on_cpu(method: methods.Method) -> bool:
    return method.system == "whisper_cpu" and method.device == "cpu"


def ours(name: str) -> methods.Method:
    """A method the transcriber runs: ours, in PyTorch on the CPU; peers only make sense timed side by side."""
    method = methods.get(name)
    if not _on_cpu(method):
        names = ", ".join(n for n, m in methods.REGISTRY.items() if _on_cpu(m))
        raise UserError(f"'{name}' is not one of our CPU methods: the transcriber runs our PyTorch methods ({names}); use `bench` to time peers")
    why = method.unavailable()
    if why:
        raise UserError(f"method '{name}' cannot run here: {why}")
    return method


def _runnable(name: str) -> bool:
    method = methods.REGISTRY.get(name)
    return method is not None and _on_cpu(method) and method.unavailable() is None


def measured(model: str, threads: int, cpu: str, timings_path: Path, accuracy_path: Path) -> pd.DataFrame:
    """Seconds per 30 s and English WER change per method, from the latest run that timed this model on this CPU.

    Greedy rows only; that run's rows at the requested thread count when it has them, else its highest count.
    """
    if not Path(timings_path).exists():
        return pd.DataFrame()
    timings = pd.read_csv(timings_path)
    rows = timings[(timings.cpu == cpu) & (timings.model == model) & (timings.device == "cpu")
                   & (timings.system == "whisper_cpu") & (timings.beam_size == 1)]
    if rows.empty:
        return pd.DataFrame()
    run_id = report.latest_run(rows)
    rows = rows[rows.run_id == run_id]
    rows = rows[rows.threads == threads] if (rows.threads == threads).any() else rows
    scores = report.latest_accuracy(accuracy_path)
    return report.speed_accuracy(rows, scores, run_id).assign(run_id=run_id, threads=rows.threads.max())


def choose_method(model: str, threads: int, timings_path: Path = results.TIMINGS, accuracy_path: Path = results.ACCURACY) -> tuple[str, str]:
    """(method, why): the fastest measured here among fp32 and the methods whose WER CI reaches zero."""
    cpu = results.cpu_name()
    points = measured(model, threads, cpu, timings_path, accuracy_path)
    if len(points):
        points = points[points.method.map(_runnable).astype(bool)]
        points = points[(points.method == "fp32") | (points.ci_low <= 0)]
    if points.empty:
        return methods.DEFAULT, f"no measurement of {model} on this CPU ({cpu}); documented default"
    best = points.loc[points.s_per_30s.idxmin()]
    wer = "fp32 itself" if best.method == "fp32" else f"WER {report._delta_ci(best.wer_delta, best.ci_low, best.ci_high)} points vs fp32"
    return best.method, (f"fastest measured on {cpu} for {model} without measurable WER loss "
                         f"({best.s_per_30s:.2f} s per 30 s on {best.threads} thread{'s' if best.threads > 1 else ''}, {wer}, run {best.run_id})")


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


def write_outputs(result: dict, source: Path, output_format: str, output_dir: Path) -> list[Path]:
    """openai-whisper's writers into a temporary folder beside the outputs, then renamed: never a half file."""
    try:
        with tempfile.TemporaryDirectory(dir=output_dir, prefix=".whisper-cpu-") as tmp:
            get_writer(output_format, tmp)(result, str(source), {})
            written = []
            for file in sorted(Path(tmp).iterdir()):
                os.replace(file, output_dir / file.name)
                written.append(output_dir / file.name)
    except OSError as error:
        raise UserError(f"cannot write to {output_dir}: {error.strerror or error}") from None
    return written


def transcribe_file(model, path: Path, opts: Options, language: str | None) -> tuple[list[Path], str]:
    """(written paths, transcript) for one file."""
    samples = audio.load(path)
    if np.abs(samples).max() < SILENCE:
        raise UserError("no signal (silence)")
    result = model.transcribe(samples, language=language, beam_size=opts.beam_size, temperature=TEMPERATURES,
                              fp16=False, verbose=False)
    return write_outputs(result, path, opts.output_format, Path(opts.output_dir)), result["text"].strip()


def run(opts: Options, paths: list[Path], log=lambda line: print(line, file=sys.stderr)) -> int:
    """Transcribe every file with one loaded model, printing the paths written; returns how many files failed."""
    threads = opts.threads or results.default_threads()
    torch.set_num_threads(threads)
    language = language_for(opts.model, opts.language)
    name = opts.method
    if name == "auto":
        name, why = choose_method(opts.model, threads)
        log(f"method {name}: {why}")
    method = ours(name)
    try:
        Path(opts.output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the output folder {opts.output_dir}: {error.strerror or error}") from None
    model = method.load(opts.model, threads).model
    failed, stems = 0, set()
    for path in map(Path, paths):
        try:
            if path.stem in stems:
                raise UserError("an earlier file has the same name, so its outputs would be overwritten")
            stems.add(path.stem)
            written, text = transcribe_file(model, path, opts, language)
        except UserError as error:
            log(f"whisper-cpu: error: {path}: {error}")
            failed += 1
            continue
        if not text:
            log(f"whisper-cpu: note: {path}: no speech recognized, the outputs are empty")
        for file in written:
            print(file)
    return failed
