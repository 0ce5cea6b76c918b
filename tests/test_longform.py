import pytest

from whisper_cpu.bench import inputs, longform, results

PARTS = (("a", "the cat sat on the mat"), ("b", "a dog ran far away"), ("c", "birds sing at dawn"))


def test_errors_are_attributed_to_the_clips_whose_words_they_touch():
    hypothesis = "the cat sat on a mat a dog ran ran far birds sing at dawn"  # sub in a, insert + deletion in b
    errors, words, counts = longform.per_clip_errors(PARTS, hypothesis)
    assert words.tolist() == [6, 5, 4]
    assert errors.tolist() == [1, 2, 0]
    assert counts == {"deletions": 1, "insertions": 1, "substitutions": 1}
    errors, _, counts = longform.per_clip_errors(PARTS, "")
    assert errors.tolist() == [6, 5, 4] and counts["deletions"] == 15


def test_repeated_ngrams_count_loops_beyond_the_reference():
    reference = "red green blue cyan pink gray black"
    assert longform.repeated_ngrams(reference, reference) == 0
    looped = reference + " red green blue cyan pink red green blue cyan pink"
    assert longform.repeated_ngrams(reference, looped) == 2


def test_scores_pool_the_recordings_and_bootstrap_over_clips():
    recordings = [inputs.Input(name, None, 10.0, "en", "", parts=PARTS) for name in ("r1", "r2")]
    perfect = " ".join(text for _, text in PARTS)
    records = [{"model": "m", "method": method, "system": "whisper_cpu", "audio_id": r.id, "audio_s": 10.0, "wall_s": 1.0,
                "windows": 1, "fallbacks": fallbacks, "hypothesis": text}
               for r in recordings for method, text, fallbacks in (("fp32", perfect, 0), ("int8", perfect.replace("dog", "frog"), 1))]
    rows = {(r["method"], r["audio_id"]): r for r in longform.score(records, recordings)}
    pooled = rows[("int8", "all")]
    assert pooled["wer"] == pytest.approx(2 / 30, abs=1e-5) and pooled["fallbacks"] == 2 and pooled["windows"] == 2
    assert pooled["wer_delta"] == pytest.approx(2 / 30, abs=1e-5) and 0 <= pooled["ci_low"] < pooled["ci_high"] and pooled["substitutions"] == 2
    assert "wer_delta" not in rows[("fp32", "all")] and rows[("fp32", "r1")]["wer"] == 0


def test_a_small_long_form_run_scores_every_method_against_fp32(scratch, mirror, manifest_of):
    manifest = manifest_of("deepspeech_LDC93S1", "deepspeech_new-home-in-the-stars-16k", "whisper_jfk")
    opts = longform.Options(models=("tiny.en",), methods=("qint8",), threads=1, manifest=manifest)
    run_id = longform.run(opts, log=lambda *_: None)
    table = results.read("longform").set_index(["method", "audio_id"])
    assert set(table.index) == {(m, a) for m in ("fp32", "qint8") for a in ("longform-en-a", "longform-en-b", "all")}
    # fp32 greedy is deterministic: one window per recording, LDC93S1's words misheard (2 in a, 1 in b), nothing else
    fp32 = table.xs("fp32")[["wer", "substitutions", "deletions", "insertions", "windows", "fallbacks", "audio_s"]]
    assert fp32.loc[["longform-en-a", "longform-en-b", "all"]].values.tolist() == [
        [round(2 / 42, 5), 2, 0, 0, 1, 0, 19.511], [round(1 / 42, 5), 1, 0, 0, 1, 0, 18.511], [round(3 / 84, 5), 3, 0, 0, 2, 0, 38.022]]
    qint8 = table.loc[("qint8", "all")]
    errors = qint8.substitutions + qint8.deletions + qint8.insertions
    assert qint8.wer == round(errors / 84, 5) and qint8.wer_delta == round((errors - 3) / 84, 5)
    assert qint8.ci_low <= qint8.wer_delta <= qint8.ci_high
    assert set(table.decoding) == {"fallback+cond"} and set(table.status) == {"ok"}
    assert len(results.read_jsonl(longform.transcripts_path(run_id))) == 4

    longform.run(opts, run_id=run_id, log=lambda *_: None)  # resumed: nothing transcribed or scored again
    assert len(results.read_jsonl(longform.transcripts_path(run_id))) == 4
    again = results.read("longform").set_index(["method", "audio_id"])
    assert len(again) == len(table) and again.wer.equals(table.wer) and again.wer_delta.equals(table.wer_delta)


def test_pooled_loops_are_the_recordings_own_not_errors_that_recur_across_them():
    recordings = [inputs.Input(name, None, 10.0, "en", "", parts=PARTS) for name in ("r1", "r2")]
    consistent = " ".join(text for _, text in PARTS).replace("a dog ran far away", "a frog ran far off")  # the same error twice
    records = [{"model": "m", "method": "fp32", "system": "whisper_cpu", "audio_id": r.id, "audio_s": 10.0, "wall_s": 1.0,
                "windows": 1, "fallbacks": 0, "hypothesis": consistent} for r in recordings]
    assert {r["audio_id"]: r["repeated_ngrams"] for r in longform.score(records, recordings)} == {"r1": 0, "r2": 0, "all": 0}
