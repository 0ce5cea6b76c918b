"""The one contract every way of running Whisper meets: load once, then transcribe a file or an array with a
frozen set of decoding options, returning segments and text.

The transcriber, the timing harness and both accuracy gates call exactly this, with the same options, so
what is measured is what users run. The defaults are openai-whisper's own `transcribe` defaults: temperature
fallback, conditioning on the previous window's text, no-speech skipping.
"""

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import whisper
from whisper.model import Whisper

from . import UserError, audio, guard

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
FORCED = 86  # decoder steps of a forced window: what tiny.en and base produce on the benchmark window (results/timings.csv)
SILENCE = 1e-4  # peak absolute amplitude below which a file holds no signal at all


@dataclass(frozen=True)
class DecodeOptions:
    language: str | None = None  # None: detect (multilingual models)
    task: str = "transcribe"
    beam_size: int | None = None  # None: greedy
    best_of: int | None = None
    temperature: tuple[float, ...] = TEMPERATURES
    condition_on_previous_text: bool = True
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    initial_prompt: str | None = None
    word_timestamps: bool = False  # per-word start and end from the cross-attention of the alignment heads
    clip_timestamps: str = "0"  # openai-whisper's: start,end,... seconds of the clips to transcribe ("0": all)
    hallucination_silence_threshold: float | None = None  # openai-whisper's: skip silences this long (s) around a suspected hallucination
    patience: float | None = None  # openai-whisper's beam search patience (None: 1.0)
    length_penalty: float | None = None  # openai-whisper's ranking of finished candidates (None: plain length normalisation)
    suppress_tokens: str = "-1"  # openai-whisper's: comma-separated token ids never sampled ("-1": its usual symbols)
    carry_initial_prompt: bool = False  # openai-whisper's: the initial prompt ahead of every window's, not only the first
    prepend_punctuations: str = "\"'“¿([{-"  # openai-whisper's: merged into the next word's timing
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"  # openai-whisper's: merged into the previous word's timing

    @property
    def tag(self) -> str:
        """What result rows record in their `decoding` column (the language and beam width have their own)."""
        temperature = "fallback" if len(self.temperature) > 1 else f"t{self.temperature[0]:g}"
        return f"{temperature}{'+cond' if self.condition_on_previous_text else ''}"

    def whisper_kwargs(self) -> dict:
        kwargs = asdict(self)
        kwargs["temperature"] = self.temperature if len(self.temperature) > 1 else self.temperature[0]
        return kwargs


@dataclass
class Transcript:
    text: str
    segments: list[dict]
    language: str
    fallbacks: int | None = None  # windows re-decoded above temperature 0 (None: the system does not say)

    @property
    def tokens(self) -> int:
        return sum(len(s.get("tokens", ())) for s in self.segments)

    @property
    def windows(self) -> int | None:
        """Windows that gave segments (their distinct starts); None where the system does not say (whisper.cpp)."""
        seeks = {s["seek"] for s in self.segments if s.get("seek") is not None}
        return len(seeks) if seeks else None

    def as_whisper_result(self) -> dict:
        """The dict openai-whisper's writers take."""
        return {"text": self.text, "segments": self.segments, "language": self.language}


def fallback_windows(segments: list[dict]) -> int:
    """Windows whose accepted decode needed a temperature above 0: each segment carries its window's seek."""
    return len({s["seek"] for s in segments if s.get("temperature", 0) > 0})


def samples_of(source: Path | np.ndarray) -> np.ndarray:
    return source if isinstance(source, np.ndarray) else audio.load(source)


def read(source: Path | np.ndarray) -> np.ndarray:
    """The samples of a file or array; one that holds no signal is refused in one line."""
    samples = samples_of(source)
    if not len(samples):
        raise UserError("no signal (silence)")
    high, low = samples.max(), samples.min()  # not np.abs: no second copy of an hour's samples
    if not (np.isfinite(high) and np.isfinite(low)):
        raise UserError("samples that are not numbers (NaN or infinite)")
    if max(high, -low) < SILENCE:
        raise UserError("no signal (silence)")
    return samples


def spoken(runner: "Runner", language: str) -> str:
    """The language to decode a clip in: its own on a multilingual model, English on an English-only one."""
    return language if runner.multilingual else "en"


class Runner(Protocol):
    """Every runner subclasses it for `many`: the transcriber, the corpus and the server run files through it alone."""

    multilingual: bool
    weights: list  # the files it loaded, for model size on disk

    def transcribe(self, source: Path | np.ndarray, options: DecodeOptions, progress: bool = False) -> Transcript:
        """A whole file or array: decode, features, encoder, decoder, with the options' fallback and conditioning."""

    def split_times(self, samples: np.ndarray, options: DecodeOptions, forced: int | None = None) -> tuple[float, float, int]:
        """(encoder_s, decoder_s, tokens) for the first 30 s window alone, at temperature 0; `forced`: exactly that many
        decoder steps, end of text suppressed and no timestamps, so that any weights (random ones too) do the same work."""

    def many(self, sources: Iterable[Path | np.ndarray], options: DecodeOptions,
             progress: bool = False) -> Iterator[tuple[Path | np.ndarray, Transcript | UserError]]:
        """(source, transcript or its error) for every file or array, in order, each read by `read`: here one at a
        time; the batched runner decodes the windows of all of them together."""
        for source in sources:
            try:
                yield source, self.transcribe(read(source), options, progress)
            except UserError as error:
                yield source, error


def forced_options(model: Whisper, options: DecodeOptions, steps: int, fp16: bool = False) -> whisper.DecodingOptions:
    """Exactly `steps` greedy decoder steps: end of text suppressed (with openai-whisper's usual set), no timestamps."""
    eot = whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages).eot
    return whisper.DecodingOptions(language=options.language, task=options.task, temperature=0.0, sample_len=steps,
                                   suppress_tokens=[-1, eot], without_timestamps=True, fp16=fp16)


class TorchRunner(Runner):
    """openai-whisper's own transcribe and decode on a (possibly transformed) PyTorch model; `fp16`: half-precision
    activations, as openai-whisper runs on a GPU by default; `guarded`: speech the seek loop moved past is
    transcribed again (`guard`)."""

    def __init__(self, model: Whisper, weights: list, fp16: bool = False, guarded: bool = False):
        self.model, self.weights, self.fp16, self.guarded = model, weights, fp16, guarded
        self.multilingual = model.is_multilingual

    def transcribe(self, source, options: DecodeOptions, progress: bool = False) -> Transcript:
        samples = samples_of(source)
        kwargs = options.whisper_kwargs()
        if options.clip_timestamps != "0":
            kwargs["clip_timestamps"] = clip_seconds(options.clip_timestamps, len(samples))
        result = self.model.transcribe(samples, fp16=self.fp16, verbose=False if progress else None, **kwargs)
        found = result["segments"]
        if self.guarded and options.clip_timestamps == "0" and guard.possible(found, len(samples) / whisper.audio.SAMPLE_RATE):
            from .pipeline import speech_seconds  # the pipeline imports this module

            found = guarded(self.model, samples, found, speech_seconds(samples), options, result["language"], self.fp16)
        return Transcript(guard.text_of(found), found, result["language"], fallback_windows(found))

    def split_times(self, samples, options: DecodeOptions, forced: int | None = None) -> tuple[float, float, int]:
        model = self.model
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples), model.dims.n_mels)[None].to(model.device)
        if self.fp16:
            mel = mel.half()
        decode = (forced_options(model, options, forced, self.fp16) if forced else
                  whisper.DecodingOptions(language=options.language, task=options.task, temperature=0.0, beam_size=options.beam_size, fp16=self.fp16))
        with torch.inference_mode():
            start = time.perf_counter()
            features = model.embed_audio(mel)
            _sync(model)
            encoder_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = model.decode(features, decode)
            _sync(model)
        tokens = len(decoded[0].tokens)
        if forced and tokens != forced:
            raise RuntimeError(f"forced decoding ran {tokens} steps, not {forced}")
        return encoder_s, time.perf_counter() - start, tokens


REPAIR_MARGIN_S = 1.0  # audio either side of a stretch transcribed again: its first and last frames see their neighbours


def guarded(model: Whisper, samples: np.ndarray, found: list[dict], regions: list[tuple[float, float]], options: DecodeOptions,
            language: str, fp16: bool = False) -> list[dict]:
    """`guard.repair` of a transcript, each hole transcribed again by openai-whisper's transcribe on that stretch alone,
    prompted with the text before it where the options condition on previous text.

    openai-whisper's transcribe is given the stretch's samples with `REPAIR_MARGIN_S` either side, not the file's: it
    frames all it is given, for an hour-long file over a GB of transform and seconds of work, once per hole. The
    stretch's frames are the file's (the slice starts on a frame); only the level the quietest frames are floored to
    (80 dB below the loudest frame given) can differ."""
    hop, rate = whisper.audio.HOP_LENGTH, whisper.audio.SAMPLE_RATE

    def again(start: float, end: float, before: str) -> list[dict]:
        prompt = (options.initial_prompt or "") + before if options.condition_on_previous_text else options.initial_prompt
        first = max(0, int((start - REPAIR_MARGIN_S) * rate) // hop * hop)
        last = min(len(samples), int((end + REPAIR_MARGIN_S) * rate))
        offset = first / rate
        stretch = model.transcribe(samples[first:last], fp16=fp16, verbose=None, **{
            **options.whisper_kwargs(), "clip_timestamps": clip_seconds([start - offset, end - offset], last - first), "initial_prompt": prompt or None,
            "language": language})["segments"]
        for segment in stretch:  # the file's times
            segment |= {"seek": segment["seek"] + first // hop, "start": segment["start"] + offset, "end": segment["end"] + offset}
            for word in segment.get("words", []):
                word |= {"start": word["start"] + offset, "end": word["end"] + offset}
        return stretch

    return guard.repair(found, regions, again)[0]


def clip_seconds(value: str | list[float], samples: int | None = None) -> list[float]:
    """openai-whisper's --clip_timestamps as seconds; with `samples`, the clips cut to the audio's last whole mel frame:
    a clip that ends after it made openai-whisper's seek loop run forever. One that starts after it is dropped; none
    left is an error."""
    try:
        times = [float(t) for t in value.split(",") if t.strip()] if isinstance(value, str) else [float(t) for t in value]
    except ValueError:
        raise UserError(f"--clip_timestamps {value!r}: start,end,... in seconds, such as 0,30,60") from None
    if any(not t >= 0 for t in times) or any(b < a for a, b in zip(times, times[1:])):
        raise UserError(f"--clip_timestamps {value!r}: seconds from 0, in increasing order")
    if samples is None or not times:
        return times
    duration_s = samples // whisper.audio.HOP_LENGTH / whisper.audio.FRAMES_PER_SECOND
    kept = [t for a, b in zip(times[::2], [*times[1::2], duration_s]) if a < duration_s for t in (a, min(b, duration_s))]
    if not kept:
        raise UserError(f"--clip_timestamps {value}: every clip starts after the end of the audio ({duration_s:.2f} s)")
    return kept


def _sync(model: Whisper) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()
