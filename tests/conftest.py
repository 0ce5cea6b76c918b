import csv
import os
from pathlib import Path

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


def write_manifest(path: Path, *ids: str) -> Path:
    """A manifest of a few dev clips (by id)."""
    with open(workspace.get().manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["id"] in ids]
    assert len(rows) == len(ids), f"not in the manifest: {set(ids) - {r['id'] for r in rows}}"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def manifest_of(scratch):
    """A manifest of a few dev clips (by id), beside the scratch results."""
    return lambda *ids: write_manifest(scratch.parent / "manifest.csv", *ids)


@pytest.fixture
def plugins(monkeypatch):
    """tests/plugin_methods.py's entries registered here and in every child process of the benchmark."""
    from whisper_cpu import registry

    folder = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("WHISPER_CPU_PLUGINS", "plugin_methods")
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    monkeypatch.syspath_prepend(folder)
    import importlib

    import plugin_methods

    importlib.reload(plugin_methods)  # registers into this test's copy of the registry
    return registry.REGISTRY
