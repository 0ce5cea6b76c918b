import csv
import json
from functools import partial

import numpy as np
import pytest

from whisper_cpu import UserError, workspace
from whisper_cpu.audio import load
from whisper_cpu.bench import accuracy, augment, inputs
from whisper_cpu.cli import main
from whisper_cpu.transcribe import faithful_everywhere

SOURCES = ("coqui_LJ001-0008", "coqui_LJ001-0002", "coqui_LJ001-0013", "deepspeech_LDC93S1")  # the shortest: seconds to derive


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A manifest of four short dev clips."""
    with open(workspace.get().manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["id"] in SOURCES]
    path = tmp_path_factory.mktemp("sources") / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def material(small, tmp_path_factory):
    return augment.write(seed=0, manifest=small, per_category=2, folder=tmp_path_factory.mktemp("seed0"))


def _rows(path, real=False):
    """The manifest's derived rows (with `real`, also the mirror's real hard clips listed after them)."""
    with open(path, newline="", encoding="utf-8") as f:
        return {r["id"]: r for r in csv.DictReader(f) if real or not r["file"].startswith(f"{augment.HARD}/")}


def test_the_same_seed_writes_the_same_bytes_and_another_seed_others(material, small, tmp_path):
    again = augment.write(seed=0, manifest=small, per_category=2, folder=tmp_path / "again")
    assert again.read_bytes() == material.read_bytes()
    assert all((again.parent / r["file"]).read_bytes() == (material.parent / r["file"]).read_bytes() for r in _rows(material).values())
    other = augment.write(seed=1, manifest=small, per_category=2, folder=tmp_path / "other")
    assert other.read_bytes() != material.read_bytes()
    for name in ("nonspeech-floor-white.wav", "nonspeech-music-a.wav", "nonspeech-clicks.wav"):
        assert (other.parent / name).read_bytes() != (material.parent / name).read_bytes()


def test_the_manifest_is_read_with_categories_and_every_clip_is_found(material, small):
    rows = _rows(material)
    everything = inputs.read_manifest(material)
    clips = [c for c in everything if c.id in rows]
    counts = {c: sum(clip.category == c for clip in clips) for c in dict.fromkeys(clip.category for clip in clips)}
    assert counts == {**{c: 2 for c in augment.CATEGORIES}, inputs.NONSPEECH: len(augment.NONSPEECH)}
    real = inputs.read_manifest(inputs.hard_manifest())  # the mirror's real hard clips join, found through the mirror
    assert [(c.id, c.category, c.reference) for c in everything if c.id not in rows] == [(c.id, c.category, c.reference) for c in real]
    assert len(inputs.available(everything)) == len(everything)  # from the manifest's own folder or the mirror, sha256 verified
    references = {c.id: c.reference for c in inputs.read_manifest(small)}
    for clip in clips:
        assert clip.reference == references.get(rows[clip.id]["source"], ""), clip.id
        assert (clip.reference == "") == (clip.category == inputs.NONSPEECH) and clip.language == "en"


def test_snr_holds_on_the_written_mixture(small, tmp_path):
    clip = inputs.read_manifest(small)[0]
    speech = load(inputs.locate(clip)).astype(float)
    others = [load(inputs.locate(c)).astype(float) for c in inputs.read_manifest(small)[1:]]
    rng = np.random.default_rng(0)
    for noise in (augment.white(len(speech), rng), augment.pink(len(speech), rng), augment.babble(len(speech), others, rng)):
        for snr in augment.SNRS:
            augment.save(tmp_path / "mix.wav", augment.mix(speech, noise, snr))
            written = load(tmp_path / "mix.wav").astype(float)
            (a, _), *_ = np.linalg.lstsq(np.stack([speech, noise], 1), written, rcond=None)  # written = a (speech + g noise)
            mask = augment.active(speech)
            assert 10 * np.log10(augment.power(a * speech, mask) / augment.power(written - a * speech, mask)) == pytest.approx(snr, abs=0.01)


def test_levels_band_and_trailing_noise_hold_in_the_files(material, small):
    folder = material.parent
    sources = {c.id: len(load(inputs.locate(c))) for c in inputs.read_manifest(small)}
    for r in _rows(material).values():
        samples = load(folder / r["file"]).astype(float)
        params = json.loads(r["params"])
        if r["category"] == "low-level":
            assert augment.dbfs(samples) == pytest.approx(-35.0, abs=0.01)
        elif r["category"] == "telephone":
            power = np.abs(np.fft.rfft(samples)) ** 2
            freqs = np.fft.rfftfreq(len(samples), 1 / 16000)
            inside = (freqs >= 300) & (freqs <= 3400)
            assert 10 * np.log10(power[~inside].sum() / power[inside].sum()) < -30
        elif r["category"] == "trailing-noise":
            tail = samples[sources[r["source"]]:]
            assert 2 <= params["trail_s"] <= 10 and len(tail) == int(params["trail_s"] * 16000)
            assert augment.dbfs(tail) == pytest.approx(params["trail_dbfs"], abs=0.01)
        elif r["category"].startswith("noise-"):
            assert params["snr_db"] == float(r["category"].split("-")[2][:-2])
        elif params["dbfs"] is not None:
            assert augment.dbfs(samples) == pytest.approx(params["dbfs"], abs=0.01)
    assert not load(folder / "nonspeech-digital-silence.wav").any()
    hum = np.abs(np.fft.rfft(load(folder / "nonspeech-hum-50hz.wav")))
    assert np.argmax(hum) * 16000 / (2 * (len(hum) - 1)) == pytest.approx(50, abs=0.1)


def test_the_mirror_hard_clips_are_read_with_categories_and_found(mirror):
    path = mirror / "hard" / "manifest.csv"
    if not path.is_file():
        pytest.skip("no hard/ folder in this audio mirror")
    clips = inputs.read_manifest(path)
    assert len({c.id for c in clips}) == len(clips)  # ns_wts_empty.mp3 and .wav share a stem
    assert {c.category for c in clips} >= {"noisy", "accented", "telephone", "spontaneous", inputs.NONSPEECH}
    assert all((c.reference == "") == (c.category == inputs.NONSPEECH) for c in clips)
    shortest = min(clips, key=lambda c: c.duration_s)
    assert inputs.locate(shortest) == mirror / "hard" / shortest.file


def test_an_empty_reference_is_refused_on_speech(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("file,sha256,language,reference,category\na.wav,00,en,,noisy\n", encoding="utf-8")
    with pytest.raises(UserError, match="empty reference"):
        inputs.read_manifest(path)


def test_trailing_insertions_count_only_words_past_the_reference():
    assert accuracy.trailing_insertions("the cat sat", "the cat sat on mats", "en") == 2
    assert accuracy.trailing_insertions("the cat sat", "oh the cat sat", "en") == 0
    assert accuracy.trailing_insertions("the cat sat", "the sat", "en") == 0
    assert accuracy.trailing_insertions("", "Thank you for watching.", "en") == 4


def _record(method, audio_id, reference, hypothesis, seconds=30.0):
    return {"model": "m", "method": method, "audio_id": audio_id, "language": "en", "duration_s": seconds,
            "reference": reference, "hypothesis": hypothesis}


SPEECH = "the cat sat on the mat"
CATEGORIES = {**{f"s{i}": "clean" for i in range(4)}, **{f"n{i}": inputs.NONSPEECH for i in range(3)}}


def _records(method, silent_hypothesis, speech_hypothesis=SPEECH):
    return [_record(method, a, SPEECH, speech_hypothesis, 5.0) for a in CATEGORIES if a[0] == "s"] + \
           [_record(method, a, "", silent_hypothesis) for a in CATEGORIES if a[0] == "n"]


def test_category_scores_have_exact_values():
    records = _records("fp32", "") + _records("talks", "thank you") + _records("loops", "", SPEECH + " thank you thank you thank you thank you")
    rows = {(r["method"], r["category"]): r for r in accuracy.score_categories(records, CATEGORIES)}
    assert rows["talks", inputs.NONSPEECH]["nonspeech_words_per_min"] == 4.0  # 6 words in 1.5 minutes
    assert rows["talks", inputs.NONSPEECH]["wer"] is None
    assert rows["talks", inputs.NONSPEECH]["ins_per_min_delta"] == rows["talks", inputs.NONSPEECH]["ins_ci_low"] == 4.0
    assert rows["talks", "clean"]["wer_delta"] == rows["talks", "clean"]["ins_ci_high"] == 0
    loops = rows["loops", "clean"]
    assert (loops["tail_insertions"], loops["repeated_ngrams"], loops["wer"]) == (32, 16, round(32 / 24, 5))
    assert rows["fp32", inputs.NONSPEECH]["nonspeech_words_per_min"] == 0 and "ins_ci_low" not in rows["fp32", inputs.NONSPEECH]
    single = accuracy.score_categories([_record("fp32", "x", "", "a b c")], {"x": inputs.NONSPEECH})[0]
    assert single["nonspeech_words_per_min"] == 6.0  # 3 words on a 30 s clip


def test_a_method_passes_only_if_no_category_shows_more_errors_or_insertions():
    records = _records("fp32", "") + _records("same", "") + _records("talks", "thank you") + _records("wrong", "", "the dog sat")
    assert accuracy.passes(accuracy.score_categories(records, CATEGORIES)) == {
        ("m", "fp32"): True, ("m", "same"): True, ("m", "talks"): False, ("m", "wrong"): False}
    unpaired = [r for r in _records("same", "") if r["audio_id"] != "n0"] + _records("fp32", "")
    assert accuracy.passes(accuracy.score_categories(unpaired, CATEGORIES))[("m", "same")] is False  # no CI on non-speech


def test_the_rule_needs_every_ci_to_reach_zero():
    assert faithful_everywhere("int8", {"clean": (-0.01, 0.0), "nonspeech": (0.0,)})
    assert not faithful_everywhere("int8", {"clean": (-0.01, 0.0), "nonspeech": (0.5,)})
    assert not faithful_everywhere("int8", {"clean": (None, -1.0)})
    assert not faithful_everywhere("int8", {"clean": (float("nan"),)})
    assert not faithful_everywhere("int8", {}) and faithful_everywhere("fp32", {})


def test_the_wer_score_skips_non_speech():
    records = [{**_record(m, a, ref, ref), "seconds": 1.0} for m in ("fp32", "qint8") for a, ref in (("s", SPEECH), ("n", ""))]
    assert [r["n_utterances"] for r in accuracy.score(records)] == [1, 1]


def test_audio_harder_prints_the_manifest_and_counts(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(augment, "write", partial(augment.write, per_category=1, folder=tmp_path))
    assert main(["audio", "harder", "--manifest", str(small)]) == 0
    out = capsys.readouterr().out
    real = [c.category for c in inputs.read_manifest(inputs.hard_manifest())]  # the mirror's real hard clips join their categories
    assert str(tmp_path / "manifest.csv") in out and f"telephone: {1 + real.count('telephone')} clips" in out
    assert f"nonspeech: {len(augment.NONSPEECH) + real.count(inputs.NONSPEECH)} clips" in out and f"accented: {real.count('accented')} clips" in out


def test_gate_rows_name_their_material(material):
    assert inputs.material() == inputs.DEV and inputs.material(material) == inputs.DEV  # a manifest of one's own: as the dev clips
    assert inputs.material(inputs.hard_manifest()) == inputs.HARD
    assert inputs.material(workspace.get().cache / inputs.HARDER / "manifest.csv") == inputs.HARDER
