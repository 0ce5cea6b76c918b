"""The benchmark's inputs: real speech by manifest (mirror or download, always verified by sha256), the 30 s
window, long recordings for the long-form gate, and a synthesized clip where no real speech can be had.

The clips themselves are never committed; `audio/manifest.csv` names them with their sha256, reference text
and public source. The default input is one ~30 s window of consecutive LJSpeech sentences, like the original
experiment's 30 s clip, but with a known reference.
"""

import csv
import os
import shutil
import subprocess
import urllib.request
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import UserError, workspace
from ..files import sha256, sha256_text
from ..audio import SAMPLE_RATE, load, write_wav

WINDOW_SERIES = "coqui_LJ001-"
SEED_URL = "https://www.youtube.com/watch?v=oKOtzIo-uYw"
SYNTH_TEXT = (
    "Printing, in the only sense with which we are at present concerned, differs from most if not from all "
    "the arts and crafts represented in the Exhibition."
)
# Two long recordings from the same clips, so that one lucky order or pause length cannot decide the gate.
LONGFORM = (("longform-en-a", False, 1.0), ("longform-en-b", True, 0.5))  # (id, reversed order, pause seconds)
HOUR_S, HOUR_PREFIX = 3600.0, "hour-"  # `hour`'s length, and the prefix of its audio id
DEV = "dev"  # the material of the dev manifest (audio/manifest.csv): clean read speech
HARDER = "harder-seed0"  # the harder material (`whisper-cpu audio harder`): derived from the dev clips, and the mirror's real hard clips
HARD = "hard"  # the mirror's real hard clips alone (its hard/manifest.csv): the long recordings of hard speech
NONSPEECH = "nonspeech"  # the category whose clips hold no speech: their reference is empty, every word written an insertion


@dataclass(frozen=True)
class Clip:
    id: str
    file: str
    sha256: str
    duration_s: float
    language: str
    reference: str
    source_url: str = ""
    category: str = "clean"
    folder: str = ""  # the manifest's own folder, where its files are looked for first (the mirror's hard/, the harder material)


def material(manifest: Path | None = None) -> str:
    """What a gate scored, as its rows record it: HARDER for the harder material (`harder_manifest`), HARD for the
    mirror's real hard clips alone, DEV for the dev clips and any other manifest (a user's own clips gate as before)."""
    path = Path(manifest or workspace.get().manifest).resolve()
    mirror = workspace.get().mirror
    if mirror is not None and path == (mirror / HARD / "manifest.csv").resolve():
        return HARD
    return HARDER if path.parent.name == HARDER and path.name == "manifest.csv" else DEV


def hard_manifest() -> Path:
    """The mirror's manifest of real hard clips."""
    path = workspace.get().mirror / HARD / "manifest.csv" if workspace.get().mirror else None
    if path is None or not path.is_file():
        raise UserError(f"the audio mirror has no {HARD}/manifest.csv (set AUDIO_MIRROR to the folder of the shared clips)")
    return path


def harder_manifest() -> Path:
    """The harder material's manifest, written first where it is missing (`whisper-cpu audio harder`)."""
    from . import augment  # it reads manifests through this module

    path = workspace.get().cache / f"{HARDER}" / "manifest.csv"
    return path if path.is_file() else augment.write()


def read_manifest(path: Path | None = None) -> list[Clip]:
    """A manifest's clips. Its `file`s are relative to its own folder, else to the mirror or the audio cache; a clip with
    no `category` is "clean"; only a "nonspeech" clip may have an empty reference, and with no language it is decoded
    as English, like the rest of the gate. Where two files share a stem and no `id` is given, the file name is the id."""
    path = Path(path or workspace.get().manifest)
    if not path.is_file():
        raise UserError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"file", "sha256", "language", "reference"}
    if not rows or need - rows[0].keys():
        raise UserError(f"{path}: a manifest needs the columns {', '.join(sorted(need))}")
    if empty := [r["file"] for r in rows if not r["reference"].strip() and r.get("category") != NONSPEECH]:
        raise UserError(f"{path}: {empty[0]} has an empty reference, which only a {NONSPEECH} clip may have")
    stems = Counter(Path(r["file"]).stem for r in rows)
    return [
        Clip(
            id=r.get("id") or (Path(r["file"]).stem if stems[Path(r["file"]).stem] == 1 else r["file"]), file=r["file"],
            sha256=r["sha256"].lower(), duration_s=float(r.get("duration_s") or 0), language=r["language"] or "en",
            reference=r["reference"], source_url=r.get("source_url", ""), category=r.get("category") or "clean",
            folder=str(path.resolve().parent),
        )
        for r in rows
    ]


@lru_cache(maxsize=None)
def _cached_sha256(path: Path, size: int, mtime: float) -> str:
    return sha256(path)


def _verified(path: Path, clip: Clip) -> Path:
    stat = path.stat()
    if _cached_sha256(path, stat.st_size, stat.st_mtime) != clip.sha256:
        raise UserError(f"{path}: sha256 does not match the manifest entry for {clip.id}")
    return path


def locate(clip: Clip, audio_dir: Path | None = None) -> Path:
    """The verified local file of a clip: from audio_dir, its manifest's folder or the mirror, else downloaded into the audio cache."""
    cache = workspace.get().cache
    for folder in (audio_dir, clip.folder or None, workspace.get().mirror, cache):
        if folder is not None and (Path(folder) / clip.file).is_file():
            return _verified(Path(folder) / clip.file, clip)
    if not clip.source_url:
        raise UserError(f"clip {clip.id} is not in the audio mirror and has no source URL")
    target = cache / clip.file
    cache.mkdir(parents=True, exist_ok=True)
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
    """One benchmark input: a file a user would pass, with what it says.

    `parts` are the (clip id, reference) pairs a joined recording is made of, in order, so that errors can
    be attributed to clips and resampled by the long-form gate's bootstrap.
    """

    id: str
    path: Path
    duration_s: float
    language: str
    reference: str
    real: bool = True
    parts: tuple[tuple[str, str], ...] = ()


def _joined(target: Path, paths: list[Path], pause_s: float = 0.0) -> float:
    """Write the clips one after the other with `pause_s` of silence between; its duration in seconds."""
    if not target.exists():
        gap = np.zeros(int(pause_s * SAMPLE_RATE), dtype=np.float32)
        pieces = [piece for p in paths for piece in (gap, load(p))][1:] if paths else []
        write_wav(target, np.concatenate(pieces))
    return len(load(target)) / SAMPLE_RATE


def window(seconds: float = 30.0, manifest: Path | None = None) -> Input:
    """The default benchmark input: a ~30 s real-speech window written to the audio cache, else a synthetic clip."""
    chosen = window_clips(read_manifest(manifest), seconds)
    try:
        paths = [locate(c) for c in chosen]
    except UserError as error:
        if "sha256" in str(error):
            raise
        paths = []
    cache = workspace.get().cache
    if chosen and paths:
        target = cache / f"lj-window-{int(seconds)}s.wav"
        duration = _joined(target, paths)
        return Input(target.stem, target, duration, "en", " ".join(c.reference for c in chosen),
                     parts=tuple((c.id, c.reference) for c in chosen))
    target = synthesize(SYNTH_TEXT, cache / "espeak-fallback.wav")
    return Input("espeak-fallback", target, len(load(target)) / SAMPLE_RATE, "en", SYNTH_TEXT, real=False)


def longform(manifest: Path | None = None) -> list[Input]:
    """Long recordings of every English clip of the manifest: in order with 1 s pauses, and reversed with 0.5 s."""
    found = [(c, p) for c, p in available(read_manifest(manifest)) if c.language == "en"]
    if not found:
        raise UserError("no English real-speech clips here for the long-form recordings (set AUDIO_MIRROR)")
    recordings = []
    for name, backwards, pause in LONGFORM:
        ordered = found[::-1] if backwards else found
        tag = sha256_text(" ".join(c.sha256 for c, _ in ordered))[:10]  # another manifest, another file
        target = workspace.get().cache / f"{name}-{len(ordered)}clips-{tag}.wav"
        duration = _joined(target, [p for _, p in ordered], pause)
        recordings.append(Input(name, target, duration, "en", " ".join(c.reference for c, _ in ordered),
                                parts=tuple((c.id, c.reference) for c, _ in ordered)))
    return recordings


def hour(manifest: Path | None = None) -> Input:
    """About an hour of speech: the first long recording again and again, 0.5 s apart. Memory on a file this long
    is what users of a batched transcriber meet (whole-file buffers grow with it, a window's do not)."""
    first = longform(manifest)[0]
    repeats = max(1, round(HOUR_S / first.duration_s))
    target = workspace.get().cache / f"hour-{first.path.stem}.wav"
    duration = _joined(target, [first.path] * repeats, 0.5)
    return Input(f"{HOUR_PREFIX}{first.id}", target, duration, "en", " ".join([first.reference] * repeats), parts=first.parts * repeats)


def file_input(path: Path, language: str = "en", reference: str = "") -> Input:
    samples = load(path)
    return Input(Path(path).stem, Path(path), len(samples) / SAMPLE_RATE, language, reference)


def fetch_seed(target: Path | None = None) -> Path:
    """The original experiment's exact input: the first 30 s of its video (needs internet and yt-dlp)."""
    try:
        import yt_dlp
    except ImportError:
        raise UserError("yt-dlp is not installed: make venv installs it") from None
    cache = workspace.get().cache
    target = target or cache / "seed-30s.wav"
    cache.mkdir(parents=True, exist_ok=True)
    options = {"format": "bestaudio", "outtmpl": str(cache / "seed-source.%(ext)s"), "quiet": True, "noprogress": True}
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(SEED_URL, download=True)
    except Exception as error:  # yt-dlp raises its own DownloadError, network errors and more
        raise UserError(f"cannot fetch the original's clip from {SEED_URL} (needs internet): {str(error).splitlines()[0]}") from None
    source = Path(ydl.prepare_filename(info))
    write_wav(target, load(source)[: 30 * SAMPLE_RATE])
    return target
