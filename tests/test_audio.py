import re
import shutil

import numpy as np
import pytest

from whisper_cpu import UserError, audio, workspace
from whisper_cpu.bench import inputs


def test_manifest_lists_every_clip_and_all_verify(clips, mirror):
    assert len(clips) == 46
    found = inputs.available(list(clips.values()))
    assert len(found) == 46


def test_decodes_44k_stereo_flac_to_16k_mono(clips, mirror):
    samples = audio.load(inputs.locate(clips["whisper_jfk"]))
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / audio.SAMPLE_RATE - 11.0) < 0.05
    assert 0.1 < np.abs(samples).max() <= 1.0


def test_sha256_mismatch_is_refused(tmp_path, clips, mirror):
    clip = clips["deepspeech_LDC93S1"]
    (tmp_path / clip.file).write_bytes((mirror / clip.file).read_bytes()[:-10])
    with pytest.raises(UserError, match="sha256 does not match"):
        inputs.locate(clip, tmp_path)


def test_a_16k_mono_wav_is_read_as_pyav_decodes_it(tmp_path, clips, mirror, monkeypatch):
    source = inputs.locate(clips["deepspeech_LDC93S1"])  # 16 kHz mono 16-bit PCM
    fast = audio.load(source)
    assert audio._plain_wav(source) is not None and audio._plain_wav(inputs.locate(clips["whisper_jfk"])) is None
    audio.write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(UserError, match="no audio samples"):  # no frames: PyAV's path says so
        audio.load(tmp_path / "empty.wav")
    monkeypatch.setattr(audio, "_plain_wav", lambda path: None)
    assert np.array_equal(fast, audio.load(source))


@pytest.mark.parametrize("content, message", [(None, "audio file not found: {}$"), ("folder", "{} is a folder, not an audio file$"),
                                              (b"RIFF garbage" * 50, "cannot decode audio {}: Invalid data found when processing input$")])
def test_bad_files_give_one_clear_error_naming_the_file_once(tmp_path, content, message):
    path = tmp_path / "clip.wav"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message.format(re.escape(str(path)))):  # not PyAV's raw errno and the path again
        audio.load(path)


def test_window_joins_whole_consecutive_ljspeech_sentences(clips, mirror):
    chosen = inputs.window_clips(list(clips.values()), 30.0)
    assert [c.id for c in chosen] == [f"coqui_LJ001-000{i}" for i in range(1, 5)]
    clip = inputs.window()
    assert clip.real and 25.0 < clip.duration_s <= 30.0
    assert clip.reference.startswith("Printing, in the only sense") and clip.reference.endswith("printed book,")
    assert abs(len(audio.load(clip.path)) / audio.SAMPLE_RATE - sum(c.duration_s for c in chosen)) < 0.05


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed and `make test` could not install it (not root)")
def test_without_real_speech_the_window_falls_back_to_espeak(monkeypatch, tmp_path):
    monkeypatch.setattr(workspace.Workspace, "mirror", property(lambda self: None))
    monkeypatch.setattr(workspace.Workspace, "cache", property(lambda self: tmp_path))

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(inputs.urllib.request, "urlopen", offline)
    clip = inputs.window()
    assert not clip.real and clip.id == "espeak-fallback"
    assert clip.duration_s > 3.0


def test_long_recordings_join_every_english_clip_in_two_orders(clips, mirror):
    a, b = inputs.longform()
    english = [c for c in clips.values() if c.language == "en"]
    assert [p[0] for p in a.parts] == [c.id for c in english] and [p[0] for p in b.parts] == [c.id for c in english][::-1]
    speech = sum(c.duration_s for c in english)
    assert abs(a.duration_s - (speech + (len(english) - 1) * 1.0)) < 0.2
    assert abs(b.duration_s - (speech + (len(english) - 1) * 0.5)) < 0.2
