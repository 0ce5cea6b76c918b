"""Harder material for the accuracy gates, made here from the real English dev clips: seeded, deterministic, measured.

The dev clips are clean read speech. Users send noisy, telephone and quiet recordings, speech that trails off into
room noise, and files with no speech at all, where Whisper writes words nobody said; a quantized method may do so
more often than fp32 while its WER on clean clips stays the same. Every clip here is derived from a manifest clip
(or synthesized, for non-speech, whose reference is empty), with its `category`, source and parameters in the
manifest written beside it, so the short-clip gate can score each category (accuracy.score_categories).

Levels by one definition: a signal's power is its mean power over its active 20 ms frames (those within 40 dB of
its loudest), so pauses and leading silence do not dilute speech; the SNR is the speech's power over the noise's
mean power on the same samples; dBFS is 10 log10 of that power, full scale 1.0 (a full-scale sine is -3.01 dBFS).
Each clip draws from its own generator, seeded by (seed, its id): the same seed gives the same bytes.
"""

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from .. import UserError, workspace
from ..audio import SAMPLE_RATE, load, write_wav
from ..files import sha256, write_text
from . import inputs

FRAME = SAMPLE_RATE // 50  # 20 ms
ACTIVE_DB = 40.0
SNRS = (20, 10, 5)
NOISES = ("white", "pink", "babble")
BABBLE_TALKERS = 6
LOW_DBFS = -35.0
BAND = (300.0, 3400.0)
PHONE_RATE = 8000
TRAILS = {"noise": -50.0, "breath": -45.0}  # what follows the speech, at what level (dBFS)
TRAIL_S = (2.0, 10.0)
PEAK = 0.95  # a louder mixture is scaled down whole (speech and noise alike, so the SNR holds) rather than clipped
PER_CATEGORY = 8
HARD = "hard"  # the mirror's folder of real hard clips
LONGEST_S = 20.0  # longer sources are left out: with 10 s of trailing noise a clip still fits one 30 s window
CATEGORIES = (*(f"noise-{noise}-{snr}db" for noise in NOISES for snr in SNRS), "telephone", "low-level", "trailing-noise")
COLUMNS = ("id", "file", "sha256", "duration_s", "sample_rate", "channels", "language", "reference", "source_url", "licence",
           "category", "source", "params")


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")])


def active(x: np.ndarray) -> np.ndarray:
    """The samples of the 20 ms frames within ACTIVE_DB of the loudest frame."""
    frames = np.pad(x, (0, -len(x) % FRAME)).reshape(-1, FRAME)
    power = np.mean(frames.astype(float) ** 2, axis=1)
    return np.repeat(power >= power.max() * 10 ** (-ACTIVE_DB / 10), FRAME)[: len(x)]


def power(x: np.ndarray, mask: np.ndarray | None = None) -> float:
    return float(np.mean(np.asarray(x, float)[active(x) if mask is None else mask] ** 2))


def dbfs(x: np.ndarray) -> float:
    return 10 * np.log10(power(x))


def at_level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    return x * 10 ** ((level_dbfs - dbfs(x)) / 20)


def fit(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x), initial=0.0)
    return x * PEAK / peak if peak > PEAK else x


def band(x: np.ndarray, low: float, high: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Everything outside low-high Hz removed (an ideal filter: nothing leaks)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    spectrum[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spectrum, len(x))


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    n = round(len(x) * to / rate)
    spectrum = np.zeros(n // 2 + 1, complex)
    kept = np.fft.rfft(x)[: len(spectrum)]
    spectrum[: len(kept)] = kept
    return np.fft.irfft(spectrum, n) * n / len(x)


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Power falling 3 dB per octave from 20 Hz, like most room and fan noise (none below: half the power of a 20 s
    pink noise from DC would lie where no one hears it, and the SNR would flatter the speech)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum[freqs < 20] = 0
    spectrum[freqs >= 20] /= np.sqrt(freqs[freqs >= 20])
    return np.fft.irfft(spectrum, n)


def babble(n: int, others: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Other dev clips at equal level, each looped from a random offset: talkers the model may transcribe too."""
    mix = np.zeros(n)
    for i in rng.choice(len(others), min(BABBLE_TALKERS, len(others)), replace=False):
        talker = others[i] / np.sqrt(power(others[i]))
        mix += np.roll(np.resize(talker, max(n, len(talker))), -rng.integers(len(talker)))[:n]
    return mix


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Speech plus noise scaled to `snr_db` over the speech's active samples."""
    mask = active(speech)
    gain = np.sqrt(power(speech, mask) / (power(noise, mask) * 10 ** (snr_db / 10)))
    return fit(speech + gain * noise)


def mulaw(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711's 8-bit mu-law, encoded and decoded: the telephone codec's quantization."""
    coded = np.round(np.sign(x) * np.log1p(mu * np.abs(np.clip(x, -1, 1))) / np.log1p(mu) * 127) / 127
    return np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu


def telephone(x: np.ndarray) -> np.ndarray:
    """A narrowband call: 8 kHz, 300-3400 Hz, mu-law, and back to 16 kHz through the same band (the codec's noise too)."""
    narrow = mulaw(band(resample(x, SAMPLE_RATE, PHONE_RATE), *BAND, PHONE_RATE))
    return fit(band(resample(narrow, PHONE_RATE, SAMPLE_RATE), *BAND))


def breath(n: int, rng: np.random.Generator) -> np.ndarray:
    """Breathing-like noise: band-limited hiss in inhale/exhale swells with pauses between."""
    envelope, at = np.zeros(n), 0
    while at < n:
        for seconds, gain in ((rng.uniform(0.8, 1.3), 1.0), (rng.uniform(1.0, 1.6), 0.7)):
            length = min(int(seconds * SAMPLE_RATE), n - at)
            envelope[at : at + length] = gain * np.sin(np.pi * np.arange(length) / int(seconds * SAMPLE_RATE)) ** 2
            at += length + int(rng.uniform(0.3, 0.8) * SAMPLE_RATE)
    return band(pink(n, rng), 100, 4000) * envelope


def trailing(speech: np.ndarray, kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    return np.concatenate([fit(speech), at_level(pink(n, rng) if kind == "noise" else breath(n, rng), TRAILS[kind])])


def derive(category: str, index: int, speech: np.ndarray, others: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A category's version of one clip, and the parameters that made it."""
    if category.startswith("noise-"):
        _, noise, snr = category.split("-")
        generated = babble(len(speech), others, rng) if noise == "babble" else (white if noise == "white" else pink)(len(speech), rng)
        return mix(speech, generated, float(snr[:-2])), {"noise": noise, "snr_db": float(snr[:-2])}
    if category == "telephone":
        return telephone(speech), {"band_hz": list(BAND), "rate_hz": PHONE_RATE, "codec": "G.711 mu-law"}
    if category == "low-level":
        return at_level(speech, LOW_DBFS), {"dbfs": LOW_DBFS}
    kind, seconds = list(TRAILS)[index % 2], round(float(rng.uniform(*TRAIL_S)), 1)
    return trailing(speech, kind, seconds, rng), {"trail": kind, "trail_s": seconds, "trail_dbfs": TRAILS[kind]}


def _tone(n: int, hz: float, harmonics=(1.0,), rng: np.random.Generator | None = None) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    phases = rng.uniform(0, 2 * np.pi, len(harmonics)) if rng is not None else np.zeros(len(harmonics))
    return sum(a * np.sin(2 * np.pi * hz * k * t + p) for k, (a, p) in enumerate(zip(harmonics, phases), 1))


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """A plucked pentatonic melody over a bass line: tonal and rhythmic like music, with no words to find."""
    scale = 220 * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16]) / 12)
    out, at = np.zeros(n), 0
    while at < n:
        length = min(int(rng.choice([0.25, 0.5, 0.75]) * SAMPLE_RATE), n - at)
        note = rng.choice(scale)
        decay = np.exp(-4 * np.arange(length) / SAMPLE_RATE)
        out[at : at + length] += (_tone(length, note, (1, 0.5, 0.3, 0.2)) + 0.6 * _tone(length, note / 4, (1, 0.3))) * decay
        at += length
    return out


def clicks(n: int, rng: np.random.Generator, per_s: float = 2.0) -> np.ndarray:
    """Sparse 2 ms decaying clicks of random sign and height."""
    out, burst = np.zeros(n), np.exp(-np.arange(SAMPLE_RATE // 500) / 4)
    for at in rng.choice(n - len(burst), int(per_s * n / SAMPLE_RATE), replace=False):
        out[at : at + len(burst)] += rng.choice([-1, 1]) * rng.uniform(0.05, 0.5) * burst
    return out


# (id, seconds, level in dBFS or None as made, maker): sounds users send that hold no speech
NONSPEECH = (
    ("digital-silence", 30, None, lambda n, rng: np.zeros(n)),
    ("floor-white", 20, -60.0, white),
    ("floor-pink", 20, -45.0, pink),
    ("hum-50hz", 15, -30.0, lambda n, rng: _tone(n, 50, (1, 0.2, 0.5, 0.1, 0.3, 0.05, 0.15), rng)),
    ("hum-60hz", 15, -30.0, lambda n, rng: _tone(n, 60, (1, 0.2, 0.5, 0.1, 0.3, 0.05, 0.15), rng)),
    ("tone-440hz", 10, -20.0, lambda n, rng: _tone(n, 440)),
    ("tone-1khz", 10, -20.0, lambda n, rng: _tone(n, 1000)),
    ("beeps-1khz", 10, -20.0, lambda n, rng: _tone(n, 1000) * (np.arange(n) % SAMPLE_RATE < SAMPLE_RATE // 2)),
    ("music-a", 30, -20.0, music),
    ("music-b", 20, -20.0, music),
    ("clicks", 15, None, clicks),
    ("clicks-on-floor", 15, None, lambda n, rng: clicks(n, rng) + at_level(white(n, rng), -60.0)),
)


def save(path: Path, samples: np.ndarray) -> None:
    """16-bit WAV, rounded to the nearest step first: write_wav truncates, which takes 0.03 dB off noise at -50 dBFS."""
    write_wav(path, np.round(np.asarray(samples, float) * 32768) / 32768)


def sources(manifest: Path | None = None) -> list[tuple[inputs.Clip, np.ndarray]]:
    """The English speech clips of the manifest that are here and short enough, with their samples."""
    found = [(c, load(p)) for c, p in inputs.available(inputs.read_manifest(manifest))
             if c.language == "en" and c.reference.strip() and c.duration_s <= LONGEST_S]
    if not found:
        raise UserError("no English dev clips here to derive the harder material from (set AUDIO_MIRROR)")
    return found


def real_hard() -> list[dict]:
    """The mirror's real hard clips (its hard/manifest.csv: noisy, accented, telephone, spontaneous, non-speech), as rows
    of this manifest whose files are found through the mirror: the gates score them beside the derived ones."""
    mirror = workspace.get().mirror
    path = mirror / HARD / "manifest.csv" if mirror else None
    if path is None or not path.is_file():
        return []
    return [{"id": clip.id, "file": f"{HARD}/{clip.file}", "sha256": clip.sha256, "duration_s": f"{clip.duration_s:.3f}",
             "sample_rate": "", "channels": "", "language": clip.language if clip.reference else "", "reference": clip.reference,
             "source_url": clip.source_url, "licence": "see the mirror's hard/manifest.csv", "category": clip.category,
             "source": f"{HARD}/manifest.csv", "params": ""}
            for clip in inputs.read_manifest(path)]


def write(seed: int = 0, manifest: Path | None = None, per_category: int = PER_CATEGORY, folder: Path | None = None) -> Path:
    """Every category's clips as 16 kHz mono WAV (each written whole) and their manifest, the mirror's real hard clips
    listed after them; the manifest's path."""
    folder = Path(folder or workspace.get().cache / f"harder-seed{seed}")
    pool = sources(manifest)
    rows = []

    def add(clip_id: str, category: str, samples: np.ndarray, source: str, reference: str, params: dict) -> None:
        path = folder / f"{clip_id}.wav"
        save(path, samples)
        rows.append({"id": clip_id, "file": path.name, "sha256": sha256(path), "duration_s": f"{len(samples) / SAMPLE_RATE:.3f}",
                     "sample_rate": SAMPLE_RATE, "channels": 1, "language": "en" if reference else "", "reference": reference,
                     "source_url": "", "licence": "derived from dev clips: see audio/manifest.csv" if source else "synthesized",
                     "category": category, "source": source, "params": json.dumps({**params, "seed": seed}, sort_keys=True)})

    for category in CATEGORIES:
        picked = sorted(_rng(seed, category).choice(len(pool), min(per_category, len(pool)), replace=False))
        for index, i in enumerate(picked):
            clip, speech = pool[i]
            others = [samples for other, samples in pool if other.id != clip.id]
            samples, params = derive(category, index, speech, others, _rng(seed, f"{category}-{clip.id}"))
            add(f"{category}-{clip.id}", category, samples, clip.id, clip.reference, params)
    for name, seconds, level, make in NONSPEECH:
        samples = make(seconds * SAMPLE_RATE, _rng(seed, name))
        add(f"nonspeech-{name}", inputs.NONSPEECH, samples if level is None else at_level(samples, level), "", "",
            {"kind": name, "seconds": seconds, "dbfs": level})
    rows += real_hard()
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(folder / "manifest.csv", text.getvalue())
