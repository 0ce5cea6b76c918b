"""openai-whisper's Python interface on our methods: `whisper_cpu.load_model(name).transcribe(audio, **options)`.

Code written for `whisper.load_model(name).transcribe(audio, **options)` runs unchanged and gets openai-whisper's result
dict, from the method `auto` measured fastest on this CPU among those that keep fp32's words (the command line's
choice, said in `model.why`). A list of files or arrays is one call, whose windows a batched method decodes together.
"""

import warnings
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from whisper.utils import format_timestamp, make_safe

from . import UserError, machine, models, transcribe
from .runner import TEMPERATURES, DecodeOptions

OPTIONS = tuple(f.name for f in fields(DecodeOptions))  # openai-whisper's transcribe keywords that we pass on
NOT_PASSED = ("sample_len", "prompt", "prefix", "suppress_blank", "without_timestamps", "max_initial_timestamp")  # its decode's alone


def decode_options(temperature: float | tuple[float, ...] = TEMPERATURES, clip_timestamps: str | list[float] = "0",
                   suppress_tokens: str | list[int] = "-1", **options) -> DecodeOptions:
    """openai-whisper's transcribe keywords as our options, with its types: one temperature (no fallback) or several,
    clips and suppressed tokens as lists or its comma-separated strings. A keyword it does not take is a TypeError."""
    for name in options:
        if name not in OPTIONS:
            raise TypeError(f"transcribe() got an unexpected keyword argument '{name}'"
                            + (": an option of openai-whisper's decode that whisper-cpu does not take" if name in NOT_PASSED else ""))
    return DecodeOptions(**options, temperature=(float(temperature),) if isinstance(temperature, (int, float)) else tuple(temperature),
                         clip_timestamps=_joined(clip_timestamps), suppress_tokens=_joined(suppress_tokens))


def _joined(value: str | list) -> str:
    return value if isinstance(value, str) else ",".join(map(str, value))


def _source(audio) -> Path | np.ndarray:
    """A path, or samples as openai-whisper takes them: 16 kHz mono, a 1-D array or tensor, floats in [-1, 1] or 16-bit
    PCM (scaled as openai-whisper's `load_audio` scales it: cast alone, its full scale is 32768 times too loud)."""
    if isinstance(audio, (str, Path)):
        return Path(audio)
    if isinstance(audio, torch.Tensor):
        audio = audio.numpy(force=True)
    if isinstance(audio, np.ndarray) and audio.ndim == 1:
        if audio.dtype == np.int16:
            return audio.astype(np.float32) / 32768.0
        if audio.dtype.kind != "f":
            raise UserError(f"audio samples of dtype {audio.dtype}: give floats in [-1, 1] or 16-bit PCM (int16)")
        return audio.astype(np.float32, copy=False)
    shape = f" of shape {audio.shape}" if isinstance(audio, np.ndarray) else ""
    raise UserError(f"audio is a file's path or its 16 kHz mono samples (a 1-D array), not a {type(audio).__name__}{shape}")


class Model:
    """One of our methods, loaded once; `method` is the one that runs, `why` why `auto` chose it (None: it was named)."""

    def __init__(self, name: str, method: str = "auto", threads: int | None = None, batch_size: int | None = None):
        self.name, self.threads = name, threads or machine.default_threads()
        self.method, self.why = transcribe.resolve_method(name, method, self.threads)
        self.options = transcribe.Options(model=name, method=self.method, threads=self.threads, batch_size=batch_size or 0)
        self.runner, self.entry = transcribe.load(self.options, lambda line: None)

    def transcribe(self, audio, *, verbose: bool | None = None, fp16: bool | None = None, **options) -> dict | list[dict]:
        """openai-whisper's `model.transcribe(audio, **options)`: its keywords, its result dict (`text`, `segments`,
        `language`). `verbose`: False shows progress, True prints each segment. A list of paths or arrays gives a list
        of results; audio that cannot be transcribed (unreadable, silent) is a `UserError` naming it, raised once every
        other one is transcribed: its `results` holds theirs (None in the failed places), so one bad file loses no work."""
        if fp16:
            warnings.warn("FP16 is not supported on CPU; using FP32 instead", stacklevel=2)  # openai-whisper's own words there
        decoding = decode_options(**options)
        opts = replace(self.options, decoding=replace(decoding, language=transcribe.language_for(self.name, decoding.language)))
        transcribe.check_options(opts)
        transcribe.entry_for(opts)  # refuses what a batched method cannot honour
        many = isinstance(audio, (list, tuple))
        sources = [_source(a) for a in (audio if many else [audio])]
        results, failed = [], []
        for i, (source, transcript) in enumerate(self.runner.many(sources, opts.decoding, progress=verbose is False)):
            if isinstance(transcript, UserError):
                name = source if isinstance(source, Path) else f"audio {i}" if many else "the audio"
                failed.append(str(transcript) if str(name) in str(transcript) else f"{name}: {transcript}")
                results.append(None)
                continue
            for s in transcript.segments if verbose else ():
                print(make_safe(f"[{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}] {s['text']}"))
            results.append({"text": "".join(s["text"] for s in transcript.segments), "segments": transcript.segments,
                            "language": transcript.language})  # the text unstripped, as openai-whisper's
        if failed:
            error = UserError(failed[0] if len(failed) == 1 else f"{len(failed)} of {len(results)} inputs failed: {'; '.join(failed)}")
            error.results = results
            raise error
        return results if many else results[0]


def load_model(name: str, device: str | None = None, download_root: str | None = None, in_memory: bool = False, *,
               method: str = "auto", threads: int | None = None) -> Model:
    """openai-whisper's `load_model` (its device the CPU alone; `in_memory` taken and moot: every method repacks the
    weights it reads): `method` one of ours or `auto`, `threads` PyTorch's for the whole process, as the method was
    measured (default: all cores)."""
    if device is not None and str(device) != "cpu":
        raise UserError(f"device {device}: whisper-cpu runs on the CPU only")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise UserError(f"threads {threads}: a whole number, at least 1")
    with models.download_root(download_root):
        return Model(name, method, threads)
