import pytest

from whisper_cpu import audio, models


@pytest.fixture(scope="session")
def mirror():
    folder = audio.mirror()
    assert folder is not None, "the real-speech mirror (../shared/audio or AUDIO_MIRROR) is needed by the tests"
    return folder


@pytest.fixture(scope="session")
def clips():
    return {c.id: c for c in audio.read_manifest()}


@pytest.fixture(scope="session")
def tiny():
    return models.load_model("tiny.en")
