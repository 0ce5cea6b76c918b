"""Decoding any file to what Whisper reads: 16 kHz mono float32, through PyAV (no ffmpeg binary needed)."""

import os
import wave
from pathlib import Path

import av
import numpy as np

from . import UserError

SAMPLE_RATE = 16000


def load(path: Path) -> np.ndarray:
    """Decode any file PyAV reads to 16 kHz mono float32, as openai-whisper's ffmpeg call would."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is a folder, not an audio file" if path.is_dir() else f"audio file not found: {path}")
    if (samples := _plain_wav(path)) is not None:
        return samples
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise UserError(f"{path}: no audio stream")
            for frame in container.decode(audio=0):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    except av.error.FFmpegError as error:  # its str repeats the path after a raw errno: FFmpeg's own words alone
        raise UserError(f"cannot decode audio {path}: {error.strerror or error}") from None
    if not chunks or sum(c.size for c in chunks) == 0:
        raise UserError(f"{path}: no audio samples")
    return _scaled(np.concatenate(chunks, axis=1).reshape(-1))


def _plain_wav(path: Path) -> np.ndarray | None:
    """The samples of a WAV file that is already 16 kHz mono 16-bit PCM, read as they are: the same numbers PyAV's
    decode and resample give, in a twentieth of the time (a long recording's read is a share of its transcription)."""
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype()) != (SAMPLE_RATE, 1, 2, "NONE"):
                return None
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError):
        return None
    samples = np.frombuffer(data[: len(data) // 2 * 2], "<i2")
    return _scaled(samples) if samples.size else None


def _scaled(pcm: np.ndarray) -> np.ndarray:
    """16-bit PCM as float32 in [-1, 1), divided in place: an hour's file holds one float copy at a time, not two."""
    samples = pcm.astype(np.float32)
    samples /= 32768.0
    return samples


def write_wav(path: Path, samples: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2")
    with wave.open(str(path) + ".part", "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    os.replace(str(path) + ".part", path)
