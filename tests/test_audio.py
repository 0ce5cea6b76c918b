import numpy as np
import pytest

from whisper_cpu import UserError, audio


def test_manifest_lists_every_clip_and_all_verify(clips, mirror):
    assert len(clips) == 46
    found = audio.available(list(clips.values()))
    assert len(found) == 46


def test_decodes_44k_stereo_flac_to_16k_mono(clips, mirror):
    samples = audio.load(audio.locate(clips["whisper_jfk"]))
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / audio.SAMPLE_RATE - 11.0) < 0.05
    assert 0.1 < np.abs(samples).max() <= 1.0


def test_sha256_mismatch_is_refused(tmp_path, clips, mirror):
    clip = clips["deepspeech_LDC93S1"]
    (tmp_path / clip.file).write_bytes((mirror / clip.file).read_bytes()[:-10])
    with pytest.raises(UserError, match="sha256 does not match"):
        audio.locate(clip, tmp_path)


@pytest.mark.parametrize("content, message", [(None, "audio file not found"), (b"RIFF garbage" * 50, "cannot decode audio")])
def test_bad_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        audio.load(path)


def test_window_joins_whole_consecutive_ljspeech_sentences(clips, mirror):
    chosen = audio.window_clips(list(clips.values()), 30.0)
    assert [c.id for c in chosen] == [f"coqui_LJ001-000{i}" for i in range(1, 5)]
    clip = audio.window()
    assert clip.real and 25.0 < clip.duration_s <= 30.0
    assert clip.reference.startswith("Printing, in the only sense") and clip.reference.endswith("printed book,")
    assert abs(len(audio.load(clip.path)) / audio.SAMPLE_RATE - sum(c.duration_s for c in chosen)) < 0.05


def test_without_real_speech_the_window_falls_back_to_espeak(monkeypatch, tmp_path):
    monkeypatch.setattr(audio, "mirror", lambda: None)
    monkeypatch.setattr(audio, "CACHE", tmp_path)

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(audio.urllib.request, "urlopen", offline)
    clip = audio.window()
    assert not clip.real and clip.id == "espeak-fallback"
    assert clip.duration_s > 3.0
