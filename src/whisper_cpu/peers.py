"""The systems a user would pick instead, run through the same harness on the same weights.

Decoding must match ours to compare fairly: faster-whisper's defaults differ from openai-whisper's (beam 5,
temperature fallback, VAD options), which is the most common cause of wrong comparisons. Here both get greedy
or the same beam width, temperature 0 with no fallback, no VAD, no conditioning on previous text, timestamps
on, and the segment generator is consumed inside the timed region.
"""

import re
import time
from pathlib import Path

import numpy as np

from . import UserError, audio, models


def ct2_model_dir(name: str) -> Path:
    """The CTranslate2 directory holding the same weights as our openai-whisper checkpoint."""
    path = Path(name)
    if path.is_dir() and (path / "model.bin").exists():
        return path
    if name not in models.OFFLINE_PACKAGES:
        raise UserError(f"faster-whisper needs a CTranslate2 directory for '{name}': pass its path as the model")
    return models.ct2_dir(name)


class FasterWhisperRunner:
    def __init__(self, name: str, compute_type: str, threads: int):
        from faster_whisper import WhisperModel

        folder = ct2_model_dir(name)
        self.model = WhisperModel(str(folder), device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=1)
        self.weights = [folder / "model.bin"]
        self.multilingual = self.model.model.is_multilingual

    def transcribe(self, path, language: str, beam_size: int | None) -> dict:
        segments, _ = self.model.transcribe(
            audio.load(path), language=language, beam_size=beam_size or 1, best_of=1, temperature=0.0,
            condition_on_previous_text=False, vad_filter=False, without_timestamps=False,
        )
        segments = list(segments)
        return {"text": "".join(s.text for s in segments).strip(), "tokens": sum(len(s.tokens) for s in segments)}

    def split_times(self, samples, language: str, beam_size: int | None) -> tuple[float, float, int]:
        from faster_whisper.tokenizer import Tokenizer

        window = np.pad(samples[: audio.SAMPLE_RATE * 30], (0, max(0, audio.SAMPLE_RATE * 30 - len(samples))))
        features = self.model.feature_extractor(window)[:, : self.model.feature_extractor.nb_max_frames]
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
        start = time.perf_counter()
        encoded = self.model.encode(features)
        encoder_s = time.perf_counter() - start
        start = time.perf_counter()
        (result,) = self.model.model.generate(encoded, [list(tokenizer.sot_sequence)], beam_size=beam_size or 1, max_length=448, suppress_blank=True, suppress_tokens=[-1])
        return encoder_s, time.perf_counter() - start, len(result.sequences_ids[0])


def whispercpp_missing() -> str | None:
    """Why whisper.cpp cannot run here, if it cannot (make whispercpp builds it)."""
    try:
        import _pywhispercpp  # noqa: F401
    except ImportError as error:
        return f"pywhispercpp is not installed or does not load ({error}): run `make whispercpp`"
    return None


class WhisperCppRunner:
    """whisper.cpp (through pywhispercpp, compiled natively) on ggml files our code writes from the same checkpoint."""

    def __init__(self, name: str, ftype: str, threads: int):
        from . import ggml

        self.path, self.threads = ggml.model_file(name, ftype), threads
        self.weights = [self.path]
        self.multilingual = models.dims(name).n_vocab >= 51865
        self._models = {None: self._load(None)}

    def _load(self, beam_size: int | None):
        from pywhispercpp.model import Model

        search = {"params_sampling_strategy": 1, "beam_search": {"beam_size": beam_size, "patience": -1.0}} if beam_size else {}
        return Model(str(self.path), n_threads=self.threads, temperature=0.0, temperature_inc=0.0, no_context=True,
                     print_progress=False, print_realtime=False, redirect_whispercpp_logs_to=None, **search)

    def _model(self, beam_size: int | None):
        if beam_size not in self._models:
            self._models[beam_size] = self._load(beam_size)
        return self._models[beam_size]

    def transcribe(self, path, language: str, beam_size: int | None) -> dict:
        import _pywhispercpp as pw

        model = self._model(beam_size)
        segments = model.transcribe(audio.load(path), language=language)
        tokens = sum(pw.whisper_full_n_tokens(model._ctx, i) for i in range(len(segments)))
        return {"text": "".join(s.text for s in segments).strip(), "tokens": tokens}

    def split_times(self, samples, language: str, beam_size: int | None) -> tuple[float, float, int]:
        """whisper.cpp's own timings of one 30 s window: encode, and decode + batched decode + prompt."""
        import _pywhispercpp as pw

        model = self._model(beam_size)
        pw.whisper_reset_timings(model._ctx)
        model.transcribe(samples[: audio.SAMPLE_RATE * 30], language=language)
        lines: list[str] = []
        pw.whisper_log_set(lambda level, text: lines.append(text))
        try:
            pw.whisper_print_timings(model._ctx)
        finally:
            pw.whisper_log_set(None)  # a Python callback left set aborts the interpreter at exit
        found = {k: (float(ms), int(runs or 0)) for k, ms, runs in re.findall(r"(\w+) time = +([\d.]+) ms(?: / +(\d+) runs)?", "".join(lines))}
        decoder = [found.get(k, (0.0, 0)) for k in ("decode", "batchd", "prompt")]
        return found["encode"][0] / 1000, sum(ms for ms, _ in decoder) / 1000, found.get("decode", (0, 0))[1] + found.get("batchd", (0, 0))[1]
