"""Long recordings and many files as batches of windows, without openai-whisper's sequential dependency.

openai-whisper's `transcribe` decodes one window at a time, and where the next window starts depends on
the last timestamp the previous one produced: nothing can run side by side, so a many-core CPU idles in a
per-token loop of matrix-vector products. Here a voice activity detector (Silero, the `silero-vad` package's
model, see `vad`) finds the pauses first; windows of up to 30 s are cut at pauses,
so no word straddles two windows; every window of every file is then decoded in batches by openai-whisper's
own `DecodingTask` on the fast decoder, with its temperature fallback applied per window (only the windows
that failed are decoded again, together), its no-speech skipping, and its segment and word timing rules.

What this gives up is the conditioning on the previous window's text: windows are independent, as in
faster-whisper's batched pipeline. The long-form gate measures what that costs. Within a window openai-whisper's
seek loop is kept: where a decode leaves a segment unfinished, the rest of the window is decoded again with the
window's own text as its prompt, so a file that fits one window gets openai-whisper's own words.
"""

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import whisper
from torch import Tensor
from whisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE
from whisper.decoding import DecodingResult
from whisper.model import Whisper
from whisper.timing import add_word_timestamps
from whisper.tokenizer import get_tokenizer
from tqdm import tqdm

from . import UserError, guard, models, vad
from .runner import DecodeOptions, Transcript, TorchRunner, fallback_windows, guarded, read

SECONDS_PER_TOKEN = 0.02
SENTENCE_PAUSE = 1.0  # seconds: a cut at a longer pause is no likelier to fall between sentences
REST_S = 1.0  # audio left after an unfinished segment that is decoded again when it holds speech
BATCH = 8  # windows per batch where memory allows: on 2 cores base gains little beyond it (README, batch sweep)


def speech_regions(samples: np.ndarray, length: int = N_SAMPLES) -> list[tuple[int, int]]:
    """Silero's speech regions in samples, padded by 0.4 s, split at a pause where one runs longer than a window."""
    return vad.speech_regions(samples, max_speech_s=length / SAMPLE_RATE)


def speech_seconds(samples: np.ndarray) -> list[tuple[float, float]]:
    return seconds(speech_regions(samples))


def seconds(regions: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """Regions in seconds, as segments time them."""
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in regions]


def speech_windows(regions: list[tuple[int, int]], length: int = N_SAMPLES) -> list[tuple[int, int]]:
    """(start, end) sample spans of at most `length` that hold all the speech regions, cut only at pauses.

    The fewest windows that hold the regions whole (every encoder pass is a window's worth of arithmetic, about half
    the pipeline's time), and among the ways of cutting that many, the one whose cuts fall at the longest pauses
    (each counted up to `SENTENCE_PAUSE`: beyond it a pause says no more about a sentence's end), so sentences
    stay whole where the speaker's pauses allow. Silence between windows is left out. Spans start on a mel frame,
    so the frame offsets openai-whisper's word timing reads are exact."""
    regions = [(start // HOP_LENGTH * HOP_LENGTH, end) for start, end in regions]
    best: list[tuple[int, float, int]] = [(0, 0.0, 0)]  # for the first j regions: (windows, -pauses at cuts, last cut)
    for j in range(1, len(regions) + 1):
        first = j - 1  # the earliest region a window ending with region j-1 can start at (a region alone always fits)
        while first and regions[j - 1][1] - regions[first - 1][0] <= length:
            first -= 1
        best.append(min((best[i][0] + 1, best[i][1] - _pause(regions, i), i) for i in range(first, j)))
    cuts = [len(regions)]
    while cuts[-1]:
        cuts.append(best[cuts[-1]][2])
    spans: list[tuple[int, int]] = []
    for a, b in zip(cuts[:0:-1], cuts[-2::-1]):
        start = max(regions[a][0], -(-spans[-1][1] // HOP_LENGTH) * HOP_LENGTH) if spans else regions[a][0]  # padded regions may touch
        spans.append((start, min(regions[b - 1][1], start + length)))
    return spans


def _pause(regions: list[tuple[int, int]], i: int) -> float:
    """The pause before region i, in seconds up to `SENTENCE_PAUSE` (none before the first)."""
    return min(SENTENCE_PAUSE, (regions[i][0] - regions[i - 1][1]) / SAMPLE_RATE) if i else 0.0


@dataclass
class Window:
    """One window of one file: its place in the file and its log-mel frames (padded to 30 s)."""

    file: int
    start: int  # samples
    end: int
    mel: Tensor
    language: str | None = None
    result: DecodingResult | None = None
    cut: int | None = None  # tokens from here on are decoded again by the window that follows on (`Batcher._rest`)
    prompt: tuple[int, ...] | None = None  # the text before a rest, as openai-whisper's seek loop prompts it (None: the initial prompt)

    @property
    def seek(self) -> int:
        """The window's first mel frame in its file, as openai-whisper's segments record it."""
        return self.start // HOP_LENGTH


@dataclass
class File:
    index: int
    source: Path | np.ndarray
    windows: list[Window] = field(default_factory=list)
    regions: list[tuple[int, int]] = field(default_factory=list)
    duration_s: float = 0.0
    error: UserError | None = None
    done: int = 0  # windows decoded

    @property
    def finished(self) -> bool:
        return self.error is not None or self.done == len(self.windows)


def needs_fallback(result: DecodingResult, options: DecodeOptions) -> bool:
    """openai-whisper's rule: too repetitive or too unlikely, unless the window is silence."""
    failed = (options.compression_ratio_threshold is not None and result.compression_ratio > options.compression_ratio_threshold) or (
        options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold)
    silent = (options.no_speech_threshold is not None and result.no_speech_prob > options.no_speech_threshold
              and options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold)
    return failed and not silent


def skipped(result: DecodingResult, options: DecodeOptions) -> bool:
    """openai-whisper's no-speech rule: likely silence and not a confident decode."""
    if options.no_speech_threshold is None or result.no_speech_prob <= options.no_speech_threshold:
        return False
    return options.logprob_threshold is None or result.avg_logprob <= options.logprob_threshold


def segments(window: Window, tokenizer, first_id: int = 0) -> list[dict]:
    """openai-whisper's segments of one decoded window: split at each pair of consecutive timestamps. Text after
    the last pair stays in a segment that ends where the window's speech ends: the window ends at a pause. Times
    stay inside the window, so segments of consecutive windows never overlap; an instantaneous segment is dropped,
    as openai-whisper clears it."""
    result, begin = window.result, tokenizer.timestamp_begin
    tokens = torch.tensor(result.tokens[: window.cut], dtype=torch.long)
    offset, duration = window.start / SAMPLE_RATE, (window.end - window.start) / SAMPLE_RATE
    stamps = tokens.ge(begin)
    cuts = (torch.where(stamps[:-1] & stamps[1:])[0] + 1).tolist()
    if len(tokens) and cuts[-1:] != [len(tokens)]:
        cuts.append(len(tokens))
    found, last = [], 0
    for cut in cuts:
        piece = tokens[last:cut]
        last = cut
        text = [t for t in piece.tolist() if t < tokenizer.eot]
        if not text:
            continue
        start = (piece[0].item() - begin) * SECONDS_PER_TOKEN if piece[0] >= begin else 0.0
        end = (piece[-1].item() - begin) * SECONDS_PER_TOKEN if piece[-1] >= begin and len(piece) > 1 else duration
        if start == end:
            continue
        start, end = min(start, duration), min(max(start, end), duration)
        found.append({
            "id": first_id + len(found), "seek": window.seek, "start": round(offset + start, 3), "end": round(offset + end, 3),
            "text": tokenizer.decode(text), "tokens": piece.tolist(), "temperature": result.temperature,
            "avg_logprob": result.avg_logprob, "compression_ratio": result.compression_ratio, "no_speech_prob": result.no_speech_prob,
        })
    return found


def after(pieces: list[dict], last: float) -> float:
    """A window's timed words moved to start no earlier than `last`, where the words before them end; returns where its
    own end. The alignment can place a window's first word a little inside the audio the window before it timed (a rest
    starts at a timestamp token, not at a word's end): openai-whisper's seek loop moves on to the last word's end instead."""
    for segment in pieces:
        for word in segment.get("words", []):
            word["start"] = max(word["start"], last)
            word["end"] = last = max(word["end"], word["start"])
        if segment.get("words"):
            segment["start"] = max(segment["start"], segment["words"][0]["start"])
            segment["end"] = max(segment["end"], segment["start"])
    return last


class Batcher:
    """Decodes windows of any files in batches on one model; files come out whole, in order."""

    def __init__(self, model: Whisper, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self.tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages)  # token ids only

    def _options(self, options: DecodeOptions, window: Window, temperature: float) -> whisper.DecodingOptions:
        search = {"beam_size": options.beam_size} if temperature == 0 else {"best_of": options.best_of}
        return whisper.DecodingOptions(task=options.task, language=window.language, temperature=temperature,
                                       prompt=self._prompt(options, window), fp16=False, **search)

    def _prompt(self, options: DecodeOptions, window: Window) -> str | list[int] | None:
        """A window cut from the file is prompted with the initial prompt alone (no window before it is decoded yet); a
        rest with the text before it (`_rest`). `carry_initial_prompt` keeps the initial prompt in front of a rest's
        prompt where the decoder's context would cut it, and in front of a rest whose prompt was reset, as
        openai-whisper's transcribe keeps it."""
        if window.prompt is None:
            return options.initial_prompt
        if not (options.carry_initial_prompt and options.initial_prompt):
            return list(window.prompt)
        initial = list(self._initial_prompt(options))
        text = list(window.prompt)
        text = text[len(initial):] if text[: len(initial)] == initial else text
        room = max(0, self.model.dims.n_text_ctx // 2 - 1 - len(initial))
        return initial + text[len(text) - room:] if room else initial

    @torch.inference_mode()
    def decode(self, windows: list[Window], options: DecodeOptions) -> None:
        """Encode each window once, then decode them together; those that fail the thresholds go again, together,
        at the next temperature, as openai-whisper's `decode_with_fallback` does for one."""
        features = torch.cat([self.model.embed_audio(w.mel[None].to(self.model.device)) for w in windows])
        todo = list(range(len(windows)))
        for temperature in options.temperature:
            decoded = self.model.decode(features[todo], self._options(options, windows[0], temperature))
            for i, result in zip(todo, decoded):
                windows[i].result = replace(result, audio_features=None)  # the encoder's output, MBs a window: read no more
            todo = [i for i in todo if needs_fallback(windows[i].result, options)]
            if not todo:
                break

    def _language(self, window: Window, options: DecodeOptions) -> str:
        if options.language or not self.model.is_multilingual:
            return options.language or "en"
        with torch.inference_mode():
            _, probs = self.model.detect_language(window.mel.to(self.model.device))
        return max(probs, key=probs.get)

    def _open(self, file: File, options: DecodeOptions) -> None:
        """Read a file and cut it into windows; a file that cannot be read carries its error instead."""
        try:
            samples = read(file.source)
        except UserError as error:
            file.error = error
            return
        file.duration_s, file.regions = len(samples) / SAMPLE_RATE, speech_regions(samples)
        if len(samples) <= N_SAMPLES:  # one window: nothing to cut, so framed exactly as openai-whisper frames it
            mel = whisper.log_mel_spectrogram(samples, self.model.dims.n_mels, padding=N_SAMPLES)
            file.windows = [Window(file.index, 0, len(samples), whisper.pad_or_trim(mel[:, : mel.shape[-1] - N_FRAMES], N_FRAMES))]
        else:
            file.windows = [self._window(file, samples, start, end) for start, end in speech_windows(file.regions)]
        language = self._language(file.windows[0], options) if file.windows else (options.language or "en")
        for window in file.windows:
            window.language = language
        models.release_freed()  # the decoded audio and the VAD's buffers: a long file's are hundreds of MB

    def _window(self, file: File, samples: np.ndarray, start: int, end: int) -> Window:
        mel = whisper.log_mel_spectrogram(samples[start:end], self.model.dims.n_mels, padding=N_SAMPLES)[:, :N_FRAMES]
        return Window(file.index, start, end, mel)

    def _rest(self, file: File, window: Window, options: DecodeOptions) -> Window | None:
        """A window for what a decode left unfinished, by openai-whisper's seek rule: where the tokens do not end
        on a single timestamp, the text after the last pair of timestamps is decoded again from the first of that
        pair, prompted with the text before it (openai-whisper's `all_tokens`, reset after a temperature above 0.5).
        A decode ending on a single timestamp has consumed its window: decoding what follows, unprompted, invents
        words after the speech. Its mel is the window's own, sliced and zero-padded as openai-whisper slices a file's."""
        tokens, begin = window.result.tokens, self.tokenizer.timestamp_begin
        pairs = [i + 1 for i in range(len(tokens) - 1) if tokens[i] >= begin and tokens[i + 1] >= begin]
        if not pairs or tokens[-1] >= begin > tokens[-2] or skipped(window.result, options):
            return None
        frames = (tokens[pairs[-1] - 1] - begin) * 2  # openai-whisper's input_stride: mel frames per timestamp step
        start = window.start + frames * HOP_LENGTH
        speech = sum(max(0, min(b, window.end) - max(a, start)) for a, b in file.regions)
        if frames <= 0 or (window.end - start) / SAMPLE_RATE < REST_S or speech < SAMPLE_RATE // 2:
            return None
        window.cut = pairs[-1]
        prompt = ()
        if options.condition_on_previous_text and window.result.temperature <= 0.5:
            before = window.prompt if window.prompt is not None else self._initial_prompt(options)
            prompt = (*before, *(t for s in segments(window, self.tokenizer) for t in s["tokens"]))
        mel = whisper.pad_or_trim(window.mel[:, frames: (window.end - window.start) // HOP_LENGTH], N_FRAMES)
        return Window(file.index, start, window.end, mel, window.language, prompt=prompt)

    def _initial_prompt(self, options: DecodeOptions) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(" " + options.initial_prompt.strip())) if options.initial_prompt else ()

    def transcript(self, file: File, options: DecodeOptions) -> Transcript:
        language = file.windows[0].language if file.windows else (options.language or "en")
        tokenizer = get_tokenizer(self.model.is_multilingual, num_languages=self.model.num_languages, language=language, task=options.task)
        found: list[dict] = []
        last_speech = 0.0
        for window in sorted(file.windows, key=lambda w: w.start):
            if skipped(window.result, options):
                continue
            pieces = segments(window, tokenizer, len(found))
            if options.word_timestamps and pieces:
                add_word_timestamps(segments=pieces, model=self.model, tokenizer=tokenizer, mel=window.mel,
                                    num_frames=(window.end - window.start) // HOP_LENGTH, last_speech_timestamp=last_speech)
                last_speech = after(pieces, last_speech)
            found += pieces
        if guard.possible(found, file.duration_s):  # speech a window's decode moved past: decoded again, alone
            found = guarded(self.model, read(file.source), found, seconds(file.regions), options, language)
        return Transcript(guard.text_of(found), found, language, fallback_windows(found))

    def run(self, sources: Iterable[Path | np.ndarray], options: DecodeOptions, progress: bool = False) -> Iterator[tuple[Path | np.ndarray, Transcript | UserError]]:
        """(file, transcript or its error) for every source, in order, as soon as all of its windows are decoded."""
        pending: list[File] = []
        queue: list[Window] = []
        sources = iter(enumerate(sources))
        bar = tqdm(total=0, unit="window", desc="windows", disable=not progress, file=sys.stderr)
        exhausted = False
        while True:
            while not exhausted and len(queue) < self.batch_size:
                try:
                    index, source = next(sources)
                except StopIteration:
                    exhausted = True
                    break
                file = File(index, source)
                self._open(file, options)
                pending.append(file)
                queue += file.windows
                bar.total += len(file.windows)
                bar.refresh()
            while pending and pending[0].finished:
                file = pending.pop(0)
                if progress and file.error is None:
                    bar.write(f"done: {file.source if isinstance(file.source, Path) else 'array'} ({file.duration_s:.0f} s, {len(file.windows)} windows)")
                yield file.source, file.error or self.transcript(file, options)
            if not queue:
                if exhausted and not pending:
                    break
                continue
            key = (queue[0].language, queue[0].prompt)  # one language and one prompt per batch: both open every row's tokens
            batch = [w for w in queue if (w.language, w.prompt) == key][: self.batch_size]
            queue = [w for w in queue if not any(w is b for b in batch)]
            self.decode(batch, options)
            for window in batch:
                file = pending[window.file - pending[0].index]
                file.done += 1
                if (rest := self._rest(file, window, options)) is not None:
                    file.windows.append(rest)
                    queue.insert(0, rest)
                    bar.total += 1
                if not options.word_timestamps:
                    window.mel = None  # only word timing reads it again
            models.release_freed()  # what the batch's caches took: an hour's file would otherwise keep growing the heap
            bar.update(len(batch))
        bar.close()


def default_batch_size(model: Whisper) -> int:
    """`BATCH` windows, fewer where their decoder caches and audio features would take over a quarter of the free memory."""
    d = model.dims
    row = 4 * (2 * d.n_text_layer * (d.n_text_ctx + d.n_audio_ctx) * d.n_text_state + d.n_audio_ctx * d.n_audio_state + d.n_mels * N_FRAMES)
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(max(1, min(BATCH, free // 4 // row)))


class BatchedRunner(TorchRunner):
    """A `Runner` whose `many` is the batched pipeline over a stream of files, and `transcribe` that of one file."""

    def __init__(self, model: Whisper, weights: list, batch_size: int | None = None):
        super().__init__(model, weights)
        self.batch_size = batch_size or default_batch_size(model)

    def many(self, sources: Iterable[Path | np.ndarray], options: DecodeOptions, progress: bool = False):
        if options.clip_timestamps != "0" or options.hallucination_silence_threshold is not None:
            raise UserError("clip_timestamps and hallucination_silence_threshold belong to openai-whisper's sequential transcribe: "
                            "use a method without -batched")
        return Batcher(self.model, self.batch_size).run(sources, options, progress)

    def transcribe(self, source, options: DecodeOptions, progress: bool = False) -> Transcript:
        ((_, transcript),) = self.many([source], options, progress)
        if isinstance(transcript, UserError):
            raise transcript
        return transcript
