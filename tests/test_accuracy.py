import numpy as np
import pandas as pd
import pytest

from whisper_cpu.bench import accuracy, inputs, results, tables

from conftest import write_manifest


def test_english_normalization_makes_numbers_punctuation_and_case_agree():
    reference = "In fourteen sixty-five, Mr. Smith paid twenty dollars!"
    hypothesis = "in 1465 Mister Smith paid $20"
    assert accuracy.normalize(reference, "en") == accuracy.normalize(hypothesis, "en") == "in 1465 mister smith paid $20"
    assert accuracy.errors(reference, hypothesis, "en")["word_errors"] == 0


def test_word_errors_are_counted_on_normalized_words():
    counts = accuracy.errors("She had your dark suit in greasy wash water all year.", "she had your dog suit and greasy wash water all year", "en")
    # dark -> dog: 3 character edits, in -> and: 2
    assert counts == {"word_errors": 2, "words": 11, "char_errors": 5, "chars": len("she had your dark suit in greasy wash water all year")}
    assert accuracy.errors("a b c", "", "en")["word_errors"] == 3


def test_languages_without_spaces_are_scored_by_characters():
    counts = accuracy.errors("今日は、良い天気です。", "今日は良い天気だ", "ja")
    assert counts["words"] == counts["chars"] == len("今日は良い天気です")
    assert counts["word_errors"] == 2  # one substitution, one deletion


def test_bootstrap_has_a_known_answer_on_toy_sets():
    words = [10, 10, 10, 10]
    assert accuracy.bootstrap_delta([1, 2, 0, 3], [1, 2, 0, 3], words) == (0.0, 0.0, 0.0)
    delta, low, high = accuracy.bootstrap_delta([1, 2, 0, 3], [2, 3, 1, 4], words)
    assert delta == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 5, 200)
    delta, low, high = accuracy.bootstrap_delta(base, base + rng.integers(-1, 2, 200), [20] * 200)
    assert low < 0 < high and abs(delta) < 0.01


@pytest.fixture(scope="module")
def two_clip_run(tmp_path_factory, mirror):
    """One accuracy run for the tests that read it, its results in a folder of their own while they run."""
    folder = tmp_path_factory.mktemp("two_clip_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WHISPER_CPU_RESULTS", str(folder / "results"))
        manifest = write_manifest(folder / "manifest.csv", "deepspeech_LDC93S1", "leopard_test_de", "leopard_test")
        opts = accuracy.Options(models=("tiny.en",), methods=("qint8",), threads=1, manifest=manifest)
        notes = []
        run_id = accuracy.run(opts, log=notes.append)
        yield opts, run_id, notes


def test_two_clip_run_writes_records_and_scores(two_clip_run):
    opts, run_id, notes = two_clip_run
    records = pd.read_json(accuracy.transcripts_path(run_id, opts.decoding), lines=True)
    assert len(records) == 4 and set(records.method) == {"fp32", "qint8"}
    assert {"audio_id", "duration_s", "seconds", "reference", "hypothesis", "model", "method"} <= set(records.columns)
    assert notes == ["note: tiny.en does not know de; 1 clips skipped for it"]
    table = results.read("accuracy").set_index("method")
    assert set(table.decoding) == {"fallback+cond"} and table.loc["fp32", "fallbacks"] == 0
    assert table.loc["fp32", "n_utterances"] == 2 and table.loc["fp32", "language"] == "en"
    # fp32 greedy is deterministic: LDC93S1 "dark suit in" heard as "dog suit and", leopard_test word for word
    assert table.loc["fp32", "wer"] == round(2 / 28, 5) and table.loc["fp32", "cer"] == round(5 / 141, 5)
    assert records.set_index(["method", "audio_id"]).loc[("fp32", "leopard_test"), "hypothesis"] == (
        "Mr. Quilter is the apostle of the middle classes and we are glad to welcome his gospel.")
    by_category = results.read("categories").set_index("method")  # the dev clips are one category: the same WER
    assert set(by_category.category) == {"clean"} and by_category.loc["fp32", "wer"] == table.loc["fp32", "wer"]
    assert by_category.loc["fp32", "tail_insertions"] == 0 and by_category.loc["qint8", "wer"] == table.loc["qint8", "wer"]
    assert table.loc["qint8", "ci_low"] <= table.loc["qint8", "wer_delta"] <= table.loc["qint8", "ci_high"]
    assert pd.isna(table.loc["fp32", "wer_delta"])


def test_timings_show_wer_beside_speed(two_clip_run):
    opts, *_ = two_clip_run
    timings = pd.DataFrame([
        {"run_id": "r", "model": "tiny.en", "method": m, "device": "cpu", "beam_size": 1, "threads": 1, "audio_id": "w",
         "system": "whisper_cpu", "audio_s": 30.0, "load_s": 1.0, "wall_s": w, "encoder_s": 0.2, "decoder_s": 1.0,
         "window_tokens": 50, "contended": False}
        for m, w in (("fp32", 2.0), ("qint8", 1.0))
    ])
    table = tables.with_wer(tables.summary(timings), tables.load_accuracy()).set_index("method")
    assert table.loc["fp32", "wer_pct"] > 0 and table.loc["fp32", "wer_delta_ci"] == ""
    assert table.loc["qint8", "wer_delta_ci"].count("[") == 1


def test_a_clip_the_transcriber_refuses_is_scored_as_no_words(tmp_path):
    from whisper_cpu import UserError

    class Refuses:
        def transcribe(self, path, options):
            raise UserError("no signal (silence)")

    assert accuracy._transcribe(Refuses(), tmp_path / "silence.wav", accuracy.DecodeOptions()) == (None, "no signal (silence)")


def test_every_run_of_a_gate_samples_a_clips_fallback_alike(tmp_path, clips):
    """The gates seed each clip's sampling: at a temperature, two runs write the same words, and another seed other
    words (so the sampling is in play). Unseeded, the hard gate's fp32 baseline moved 7 points between two runs."""
    from whisper_cpu import registry

    clip = clips["leopard_test"]
    opts = accuracy.Options(models=("tiny.en",), methods=(), decoding=accuracy.DecodeOptions(language="en", temperature=(1.5,)))
    hypotheses = []
    for n in range(2):
        path = tmp_path / f"{n}.jsonl"
        accuracy.transcribe_config({"opts": opts, "clips": [(clip, inputs.locate(clip))], "threads": 1, "model": "tiny.en",
                                    "method": "fp32", "run_id": "r", "transcripts": path})
        hypotheses += [r["hypothesis"] for r in results.read_jsonl(path)]
    assert hypotheses[0] == hypotheses[1]
    accuracy.seed("another clip")
    runner = registry.get("fp32").load("tiny.en", 1)
    assert runner.transcribe(inputs.locate(clip), opts.decoding).text != hypotheses[0]
