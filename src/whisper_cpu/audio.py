"""Real speech by manifest: found in a mirror folder or downloaded, always verified by sha256, decoded with PyAV.

The clips themselves are never committed; `audio/manifest.csv` names them with their sha256, reference text
and public source. The benchmark's default input is one ~30 s window of consecutive LJSpeech sentences, like
the original experiment's 30 s clip, but with a known reference.
"""

import csv
import hashlib
import os
import shutil
import subprocess
import urllib.request
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np

from . import ROOT, UserError

SAMPLE_RATE = 16000
MANIFEST = ROOT / "audio" / "manifest.csv"
CACHE = ROOT / "audio" / "cache"
WINDOW_SERIES = "coqui_LJ001-"
SEED_URL = "https://www.youtube.com/watch?v=oKOtzIo-uYw"
SYNTH_TEXT = (
    "Printing, in the only sense with which we are at present concerned, differs from most if not from all "
    "the arts and crafts represented in the Exhibition."
)


@dataclass(frozen=True)
class Clip:
    id: str
    file: str
    sha256: str
    duration_s: float
    language: str
    reference: str
    source_url: str = ""


def mirror() -> Path | None:
    """The folder holding the real-speech clips: $AUDIO_MIRROR, else ../shared/audio beside the project."""
    if os.environ.get("AUDIO_MIRROR"):
        return Path(os.environ["AUDIO_MIRROR"])
    default = ROOT.parent / "shared" / "audio"
    return default if default.is_dir() else None


def read_manifest(path: Path = MANIFEST) -> list[Clip]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"file", "sha256", "language", "reference"}
    if not rows or need - rows[0].keys():
        raise UserError(f"{path}: a manifest needs the columns {', '.join(sorted(need))}")
    return [
        Clip(
            id=r.get("id") or Path(r["file"]).stem, file=r["file"], sha256=r["sha256"].lower(),
            duration_s=float(r.get("duration_s") or 0), language=r["language"], reference=r["reference"],
            source_url=r.get("source_url", ""),
        )
        for r in rows
    ]


@lru_cache(maxsize=None)
def _sha256(path: Path, size: int, mtime: float) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(path: Path, clip: Clip) -> Path:
    stat = path.stat()
    if _sha256(path, stat.st_size, stat.st_mtime) != clip.sha256:
        raise UserError(f"{path}: sha256 does not match the manifest entry for {clip.id}")
    return path


def locate(clip: Clip, audio_dir: Path | None = None) -> Path:
    """The verified local file of a clip: from audio_dir or the mirror, else downloaded into audio/cache."""
    for folder in (audio_dir, mirror(), CACHE):
        if folder is not None and (Path(folder) / clip.file).is_file():
            return _verified(Path(folder) / clip.file, clip)
    if not clip.source_url:
        raise UserError(f"clip {clip.id} is not in the audio mirror and has no source URL")
    target = CACHE / clip.file
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(clip.source_url, timeout=30) as response, open(f"{target}.part", "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as error:
        raise UserError(f"clip {clip.id} is not in the audio mirror (set AUDIO_MIRROR) and cannot be downloaded: {error}")
    os.replace(f"{target}.part", target)
    return _verified(target, clip)


def available(clips: list[Clip], audio_dir: Path | None = None) -> list[tuple[Clip, Path]]:
    """The clips that can be had here (mirror or network), skipping the others."""
    found = []
    for clip in clips:
        try:
            found.append((clip, locate(clip, audio_dir)))
        except UserError as error:
            if "sha256" in str(error):
                raise
    return found


def load(path: Path) -> np.ndarray:
    """Decode any file PyAV reads to 16 kHz mono float32, as openai-whisper's ffmpeg call would."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file not found: {path}")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise UserError(f"{path}: no audio stream")
            for frame in container.decode(audio=0):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    except av.error.FFmpegError as error:
        raise UserError(f"cannot decode audio {path}: {error}") from None
    if not chunks or sum(c.size for c in chunks) == 0:
        raise UserError(f"{path}: no audio samples")
    return np.concatenate(chunks, axis=1).reshape(-1).astype(np.float32) / 32768.0


def write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2")
    with wave.open(str(path) + ".part", "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    os.replace(str(path) + ".part", path)


def window_clips(clips: list[Clip], seconds: float = 30.0) -> list[Clip]:
    """Consecutive whole LJSpeech sentences from the first, as many as fit in `seconds`."""
    series = sorted((c for c in clips if c.file.startswith(WINDOW_SERIES)), key=lambda c: c.file)
    chosen, total = [], 0.0
    for clip in series:
        if total + clip.duration_s > seconds:
            break
        chosen.append(clip)
        total += clip.duration_s
    return chosen


def synthesize(text: str, path: Path) -> Path:
    """Speech the project makes itself, for machines with no real speech at all."""
    if shutil.which("espeak-ng") is None:
        raise UserError("no real speech here (no audio mirror, no network) and espeak-ng is missing: apt-get install espeak-ng")
    raw = path.with_suffix(".espeak.wav")
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True, capture_output=True)
    write_wav(path, load(raw))
    raw.unlink()
    return path


@dataclass(frozen=True)
class Input:
    """One benchmark input: a file a user would pass, with what it says."""

    id: str
    path: Path
    duration_s: float
    language: str
    reference: str
    real: bool = True


def window(seconds: float = 30.0, manifest: Path = MANIFEST) -> Input:
    """The default benchmark input: a ~30 s real-speech window written to audio/cache, else a synthetic clip."""
    chosen = window_clips(read_manifest(manifest), seconds)
    try:
        paths = [locate(c) for c in chosen]
    except UserError as error:
        if "sha256" in str(error):
            raise
        paths = []
    if chosen and paths:
        target = CACHE / f"lj-window-{int(seconds)}s.wav"
        if not target.exists():
            write_wav(target, np.concatenate([load(p) for p in paths]))
        reference = " ".join(c.reference for c in chosen)
        return Input(f"lj-window-{int(seconds)}s", target, len(load(target)) / SAMPLE_RATE, "en", reference)
    target = synthesize(SYNTH_TEXT, CACHE / "espeak-fallback.wav")
    return Input("espeak-fallback", target, len(load(target)) / SAMPLE_RATE, "en", SYNTH_TEXT, real=False)


def longform(manifest: Path = MANIFEST) -> Input:
    """A multi-minute recording: every English clip of the mirror, whole, in manifest order."""
    found = [(c, p) for c, p in available(read_manifest(manifest)) if c.language == "en"]
    if not found:
        raise UserError("no English real-speech clips here for the long-form input (set AUDIO_MIRROR)")
    seconds = sum(c.duration_s for c, _ in found)
    target = CACHE / f"longform-en-{int(seconds)}s.wav"
    if not target.exists():
        write_wav(target, np.concatenate([load(p) for _, p in found]))
    reference = " ".join(c.reference for c, _ in found)
    return Input(target.stem, target, len(load(target)) / SAMPLE_RATE, "en", reference)


def file_input(path: Path, language: str = "en", reference: str = "") -> Input:
    samples = load(path)
    return Input(Path(path).stem, Path(path), len(samples) / SAMPLE_RATE, language, reference)


def fetch_seed(target: Path = CACHE / "seed-30s.wav") -> Path:
    """The original experiment's exact input: the first 30 s of its video (needs internet and yt-dlp)."""
    try:
        import yt_dlp
    except ImportError:
        raise UserError("yt-dlp is not installed: make venv installs it") from None
    CACHE.mkdir(parents=True, exist_ok=True)
    options = {"format": "bestaudio", "outtmpl": str(CACHE / "seed-source.%(ext)s"), "quiet": True, "noprogress": True}
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(SEED_URL, download=True)
    except Exception as error:  # yt-dlp raises its own DownloadError, network errors and more
        raise UserError(f"cannot fetch the original's clip from {SEED_URL} (needs internet): {str(error).splitlines()[0]}") from None
    source = Path(ydl.prepare_filename(info))
    write_wav(target, load(source)[: 30 * SAMPLE_RATE])
    return target
