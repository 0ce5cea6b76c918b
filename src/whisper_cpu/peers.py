"""The systems a user would pick instead, run through the same harness on the same weights.

Decoding must match ours to compare fairly: faster-whisper's defaults differ from openai-whisper's (beam 5,
temperature fallback, VAD options), which is the most common cause of wrong comparisons. Here both get greedy
or the same beam width, temperature 0 with no fallback, no VAD, no conditioning on previous text, timestamps
on, and the segment generator is consumed inside the timed region.
"""

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
