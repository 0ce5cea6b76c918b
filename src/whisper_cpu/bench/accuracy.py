"""What a method costs in accuracy on short clips: WER per model x method, deltas against fp32 with CIs.

Each clip is transcribed by `Runner.transcribe` with the transcriber's own decoding options (temperature
fallback included), so the gate measures what users run. Scoring follows the Whisper paper and the Open ASR
Leaderboard: both sides through openai-whisper's EnglishTextNormalizer (BasicTextNormalizer for other
languages), errors summed over the corpus, languages written without spaces scored by characters. Raw
per-utterance records come first (results/transcripts/<run_id>.jsonl); every score is derived from them.
"""

import sys
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import jiwer
import numpy as np
import torch
from tqdm import tqdm
from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

from .. import UserError, machine, models, registry, workspace
from ..runner import DecodeOptions, Transcript, spoken
from ..transcribe import faithful, faithful_everywhere
from . import inputs, isolate, results

CHARACTER_LANGUAGES = {"ja", "ko", "zh", "th", "lo", "my", "km"}
_ENGLISH, _BASIC = EnglishTextNormalizer(), BasicTextNormalizer()


def normalize(text: str, language: str) -> str:
    normalized = (_ENGLISH if language == "en" else _BASIC)(text)
    return "".join(normalized.split()) if language in CHARACTER_LANGUAGES else " ".join(normalized.split())


def errors(reference: str, hypothesis: str, language: str) -> dict:
    """Edit counts on normalized text: words (characters where words are not spaced), and characters."""
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    if not ref:
        raise ValueError("empty reference after normalization")
    chars = jiwer.process_characters(ref, hyp)
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    if language in CHARACTER_LANGUAGES:
        return {"word_errors": char_errors, "words": len(ref), "char_errors": char_errors, "chars": len(ref)}
    words = jiwer.process_words(ref, hyp)
    return {
        "word_errors": words.substitutions + words.deletions + words.insertions, "words": len(ref.split()),
        "char_errors": char_errors, "chars": len(ref),
    }


def bootstrap_delta(base_errors, errors_, words, n: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Paired bootstrap over utterances of the corpus-WER difference: (delta, 2.5%, 97.5%)."""
    base_errors, errors_, words = (np.asarray(a, dtype=float) for a in (base_errors, errors_, words))
    delta = (errors_.sum() - base_errors.sum()) / words.sum()
    index = np.random.default_rng(seed).integers(0, len(words), size=(n, len(words)))
    samples = (errors_[index].sum(1) - base_errors[index].sum(1)) / words[index].sum(1)
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(delta), float(low), float(high)


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...] = ("tiny.en", "base")
    methods: tuple[str, ...] = ("fp32", "fp32-nn", "qint8")
    decoding: DecodeOptions = DecodeOptions()
    threads: int = 0
    manifest: Path | None = None
    audio_dir: Path | None = None
    timeout: float = isolate.TIMEOUT  # seconds one model x method may take (in its own process) before it counts as hung


def seed(audio_id: str) -> None:
    """Every method of ours samples a clip's temperature fallback from the same seed, in any run, order or process.

    Unseeded, openai-whisper's fallback draws differ from run to run, and on hard speech a window that falls back
    can loop or not: the hard long-form gate's fp32 baseline moved by several WER points between two runs of the
    same code. The bootstrap's intervals resample clips, not these draws, so the gates and timings seed them.
    """
    value = zlib.crc32(audio_id.encode())
    torch.manual_seed(value)
    if ctranslate2 := sys.modules.get("ctranslate2"):
        # faster-whisper samples in CTranslate2, whose worker thread seeds its generator once, at its first draw:
        # its runs repeat given the same clips in the same order, not clip by clip
        ctranslate2.set_random_seed(value)


def transcribe_config(spec: dict) -> None:
    """In a child: one model x method over its pending clips, one record per utterance as the Open ASR Leaderboard keeps
    them, each appended as soon as it is decoded."""
    opts, clips = spec["opts"], spec["clips"]
    torch.set_num_threads(spec["threads"])
    runner = registry.get(spec["method"]).load(spec["model"], spec["threads"])

    def decoding(clip: inputs.Clip) -> DecodeOptions:
        return replace(opts.decoding, language=spoken(runner, clip.language))

    shortest = min(clips, key=lambda item: item[0].duration_s)
    _transcribe(runner, shortest[1], decoding(shortest[0]))  # warm-up, so RTFx is steady-state
    for clip, path in clips:
        seed(clip.id)
        start = time.perf_counter()
        transcript, refused = _transcribe(runner, path, decoding(clip))
        results.append_jsonl(spec["transcripts"], [{
            "run_id": spec["run_id"], "model": spec["model"], "method": spec["method"], "audio_id": clip.id,
            "language": clip.language, "duration_s": clip.duration_s, "seconds": round(time.perf_counter() - start, 4),
            "decoding": opts.decoding.tag, "fallbacks": transcript.fallbacks if transcript else None,
            "reference": clip.reference, "hypothesis": transcript.text if transcript else "", **({"refused": refused} if refused else {}),
        }])
        isolate.report(1)


def _transcribe(runner, path: Path, options: DecodeOptions) -> tuple[Transcript | None, str | None]:
    """(transcript, None), or (None, the one-line refusal users get instead): the batched runner refuses a file of
    digital silence, as `whisper-cpu transcribe` does every method. No words, scored as such."""
    try:
        return runner.transcribe(path, options), None
    except UserError as error:
        return None, str(error)


def score(records: list[dict]) -> list[dict]:
    """Per model x method x language: corpus WER/CER, RTFx, and the delta against fp32 with its 95% CI."""
    scored = [r | errors(r["reference"], r["hypothesis"], r["language"]) for r in records if normalize(r["reference"], r["language"])]
    groups: dict[tuple, list[dict]] = {}
    for r in scored:
        groups.setdefault((r["model"], r["method"], r["language"]), []).append(r)
    rows = []
    for (model, method, language), group in groups.items():
        group = sorted(group, key=lambda r: r["audio_id"])
        row = {
            "model": model, "method": method, "system": registry.get(method).system.name, "language": language,
            "n_utterances": len(group), "audio_s": round(sum(r["duration_s"] for r in group), 3),
            "wer": round(sum(r["word_errors"] for r in group) / sum(r["words"] for r in group), 5),
            "cer": round(sum(r["char_errors"] for r in group) / sum(r["chars"] for r in group), 5),
            "rtfx": round(sum(r["duration_s"] for r in group) / seconds, 2) if (seconds := sum(r["seconds"] for r in group)) else None,
            "metric": "cer" if language in CHARACTER_LANGUAGES else "wer",
            "fallbacks": sum(r.get("fallbacks") or 0 for r in group),
        }
        base = sorted(groups.get((model, "fp32", language), []), key=lambda r: r["audio_id"])
        if method != "fp32" and [r["audio_id"] for r in base] == [r["audio_id"] for r in group]:
            delta, low, high = bootstrap_delta([r["word_errors"] for r in base], [r["word_errors"] for r in group], [r["words"] for r in group])
            same = [normalize(a["hypothesis"], language) == normalize(b["hypothesis"], language) for a, b in zip(base, group)]
            row |= {"wer_delta": round(delta, 5), "ci_low": round(low, 5), "ci_high": round(high, 5),
                    "identical_to_fp32": round(float(np.mean(same)), 3)}
        rows.append(row)
    return rows


def tokens(text: str, language: str) -> list[str]:
    normalized = normalize(text, language)
    return list(normalized) if language in CHARACTER_LANGUAGES else normalized.split()


def trailing_insertions(reference: str, hypothesis: str, language: str) -> int:
    """Words written past the reference's last word (every word, where the reference is empty): what Whisper makes up in
    the noise or silence after speech, where a method's insertions hide in its WER."""
    ref, hyp = tokens(reference, language), tokens(hypothesis, language)
    if not ref or not hyp:
        return 0 if ref else len(hyp)
    return sum(chunk.hyp_end_idx - chunk.hyp_start_idx for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]
               if chunk.type == "insert" and chunk.ref_start_idx == len(ref))


def score_categories(records: list[dict], categories: dict[str, str]) -> list[dict]:
    """Per model x method x language x category (by audio_id, "clean" where unknown): WER of the speech, words per
    minute of non-speech (empty reference), words past the reference's end, repeated 5-grams; against fp32, paired
    bootstrap CIs of the WER change and of the change in those insertions per minute of audio (on non-speech every
    word is one, so their CI is that of the words written on it)."""
    from .longform import repeated_ngrams  # longform imports this module

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        speech = bool(tokens(r["reference"], r["language"]))
        r = r | (errors(r["reference"], r["hypothesis"], r["language"]) if speech else {"word_errors": 0, "words": 0}) | {
            "speech": speech, "minutes": r["duration_s"] / 60, "tail": trailing_insertions(r["reference"], r["hypothesis"], r["language"]),
            "repeated": repeated_ngrams(r["reference"], r["hypothesis"])}
        groups.setdefault((r["model"], r["method"], r["language"], categories.get(r["audio_id"], "clean")), []).append(r)
    rows = []
    for (model, method, language, category), group in groups.items():
        group = sorted(group, key=lambda r: r["audio_id"])
        silent = [r for r in group if not r["speech"]]
        row = {
            "model": model, "method": method, "language": language, "category": category, "n_utterances": len(group),
            "audio_s": round(sum(r["duration_s"] for r in group), 3),
            "wer": round(sum(r["word_errors"] for r in group) / words, 5) if (words := sum(r["words"] for r in group)) else None,
            "nonspeech_words_per_min": round(sum(r["tail"] for r in silent) / sum(r["minutes"] for r in silent), 3) if silent else None,
            "tail_insertions": sum(r["tail"] for r in group), "repeated_ngrams": sum(r["repeated"] for r in group),
        }
        base = sorted(groups.get((model, "fp32", language, category), []), key=lambda r: r["audio_id"])
        if method != "fp32" and [r["audio_id"] for r in base] == [r["audio_id"] for r in group]:
            if speech := [i for i, r in enumerate(group) if r["speech"]]:
                delta, low, high = bootstrap_delta([base[i]["word_errors"] for i in speech], [group[i]["word_errors"] for i in speech],
                                                   [group[i]["words"] for i in speech])
                row |= {"wer_delta": round(delta, 5), "wer_ci_low": round(low, 5), "wer_ci_high": round(high, 5)}
            delta, low, high = bootstrap_delta([r["tail"] for r in base], [r["tail"] for r in group], [r["minutes"] for r in group])
            row |= {"ins_per_min_delta": round(delta, 4), "ins_ci_low": round(low, 4), "ins_ci_high": round(high, 4)}
        rows.append(row)
    return rows


def _lows(rows: list[dict]) -> dict[tuple[str, str], dict[tuple[str, str], tuple]]:
    """model x method -> (language, category) -> the CI low ends a verdict reads: the WER change's where there is speech
    (a WER), the insertions' everywhere."""
    lows: dict[tuple, dict] = {}
    for r in rows:
        wer = r["wer"] is not None and r["wer"] == r["wer"]  # None or NaN (read back from a table): no speech
        lows.setdefault((r["model"], r["method"]), {})[(r["language"], r["category"])] = (
            *((r.get("wer_ci_low"),) if wer else ()), r.get("ins_ci_low"))
    return lows


def passes(rows: list[dict]) -> dict[tuple[str, str], bool]:
    """Per model x method of `score_categories`' rows: `faithful_everywhere` over its categories, the WER CI where there
    is speech and the insertion CI everywhere (a missing one fails)."""
    return {key: faithful_everywhere(key[1], by_category) for key, by_category in _lows(rows).items()}


def failing(rows: list[dict]) -> dict[tuple[str, str], list[str]]:
    """Per model x method: the categories where it measurably loses or adds words, or where a CI is missing."""
    return {key: [category for (_, category), lows in by_category.items() if not faithful(key[1], *lows)]
            for key, by_category in _lows(rows).items()}


def transcripts_path(run_id: str, decoding: DecodeOptions) -> Path:
    beam = decoding.beam_size or 1
    return workspace.get().results / "transcripts" / (f"{run_id}.jsonl" if beam == 1 else f"{run_id}-beam{beam}.jsonl")


def run(opts: Options, run_id: str | None = None, log=print) -> str:
    """Transcribe every available clip with every model x method (fp32 always, as the baseline)."""
    models.refuse_random(opts.models)
    run_id = run_id or results.new_run_id()
    threads = opts.threads or machine.default_threads()
    torch.set_num_threads(threads)
    manifest = opts.manifest or workspace.get().manifest
    found = inputs.available(inputs.read_manifest(manifest), opts.audio_dir)
    if not found:
        raise UserError(f"no clip of {manifest} is here (set AUDIO_MIRROR or --audio-dir) or downloadable")
    transcripts = transcripts_path(run_id, opts.decoding)
    done = {(r["model"], r["method"], r["audio_id"]) for r in results.read_jsonl(transcripts)}
    todo = []
    for model_name in opts.models:
        known = models.languages(model_name)
        clips = [(c, p) for c, p in found if c.language in known]
        if skipped := sorted({c.language for c, _ in found} - set(known)):
            log(f"note: {model_name} does not know {', '.join(skipped)}; {len(found) - len(clips)} clips skipped for it")
        for method_name in dict.fromkeys(("fp32", *opts.methods)):
            pending = [(c, p) for c, p in clips if (model_name, method_name, c.id) not in done]
            if pending:
                todo.append((model_name, method_name, pending))
    bar = tqdm(total=sum(len(p) for *_, p in todo), desc=f"accuracy {run_id}", unit="clip")
    failed = {}
    for model_name, method_name, pending in todo:
        bar.set_postfix_str(f"{model_name} {method_name}")
        spec = {"opts": opts, "model": model_name, "method": method_name, "clips": pending, "threads": threads, "run_id": run_id,
                "transcripts": transcripts}
        if why := isolate.call("whisper_cpu.bench.accuracy:transcribe_config", spec, opts.timeout, bar.update):
            bar.write(f"note: {model_name} {method_name} failed: {why}")
            failed[(model_name, method_name)] = why
    bar.close()
    ids = {clip.id for clip, _ in found}
    records = [r for r in results.read_jsonl(transcripts) if r["audio_id"] in ids]  # this material's clips alone
    material = inputs.material(manifest)
    append_scores("accuracy", run_id, opts.models, opts.methods, opts.decoding, threads, failed, score, records, material)
    categories = {clip.id: clip.category for clip, _ in found}
    append_scores("categories", run_id, opts.models, opts.methods, opts.decoding, threads, failed,
                  lambda kept: score_categories(kept, categories), records, material)
    return run_id


IDENTITY = {"accuracy": ("language",), "categories": ("language", "category"), "longform": ("audio_id",)}  # what a score row is of


def append_scores(table: str, run_id: str, model_names, method_names, decoding: DecodeOptions, threads: int, failed: dict, scorer,
                  records, material: str) -> None:
    """A gate's rows on one `material`: the scores of every model x method that finished (fp32 always, as the baseline),
    and a failed row with its reason for each that did not (its partial records are not scored). A resumed run adds
    only scores its run does not hold yet."""
    wanted = {(m, k) for m in model_names for k in ("fp32", *method_names)} - set(failed)
    common = {"run_id": run_id, "timestamp": results.now(), **results.environment(threads), "beam_size": decoding.beam_size or 1,
              "decoding": decoding.tag, "material": material}
    held = results.read(table)
    held = held[(held.run_id == run_id) & (held.status != results.FAILED)] if len(held) else held
    keys = ["model", "method", "beam_size", "decoding", *IDENTITY[table]]
    seen = set(map(tuple, held[keys].itertuples(index=False))) if len(held) else set()
    rows = [{**common, **row, "status": "ok"} for row in scorer([r for r in records if (r["model"], r["method"]) in wanted])]
    results.append(table, [
        *(row for row in rows if tuple(row[k] for k in keys) not in seen),
        *({**common, "model": m, "method": k, "system": registry.get(k).system.name, "status": results.FAILED, "error": why}
          for (m, k), why in failed.items())])
