import pytest

from whisper_cpu import models, workspace
from whisper_cpu.bench import inputs


@pytest.fixture(scope="session")
def mirror():
    folder = workspace.get().mirror
    assert folder is not None, "the real-speech mirror (../shared/audio or AUDIO_MIRROR) is needed by the tests"
    return folder


@pytest.fixture(scope="session")
def clips():
    return {c.id: c for c in inputs.read_manifest()}


@pytest.fixture(scope="session")
def tiny():
    return models.load_model("tiny.en")


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A workspace whose results are a temporary folder; models and audio stay the checkout's (already provisioned)."""
    monkeypatch.setenv("WHISPER_CPU_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"
