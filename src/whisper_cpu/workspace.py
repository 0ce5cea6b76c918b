"""Where the project's files live: results, model weights, audio, figures; one object, set by flag or environment.

A source checkout is its own workspace (results/ and audio/ beside src/). An installed wheel has no checkout,
so it uses $WHISPER_CPU_HOME, else ~/.local/share/whisper-cpu; `--workspace DIR` overrides both. Nothing reads
a path at import time, so a flag set by the CLI reaches every module.
"""

import os
from dataclasses import dataclass
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]
_current: "Workspace | None" = None


@dataclass(frozen=True)
class Workspace:
    home: Path

    @property
    def results(self) -> Path:
        return Path(os.environ.get("WHISPER_CPU_RESULTS", self.home / "results"))

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    @property
    def choices(self) -> Path:
        """The measured choices of `--method auto`, derived from the results by the report."""
        return self.results / "choices.json"

    @property
    def models(self) -> Path:
        return Path(os.environ.get("WHISPER_CPU_MODELS", self.home / "models"))

    @property
    def manifest(self) -> Path:
        return self.home / "audio" / "manifest.csv"

    @property
    def cache(self) -> Path:
        return self.home / "audio" / "cache"

    @property
    def mirror(self) -> Path | None:
        """The real-speech clips: $AUDIO_MIRROR, else ../shared/audio beside the workspace."""
        if os.environ.get("AUDIO_MIRROR"):
            return Path(os.environ["AUDIO_MIRROR"])
        default = self.home.parent / "shared" / "audio"
        return default if default.is_dir() else None


def _default_home() -> Path:
    if os.environ.get("WHISPER_CPU_HOME"):
        return Path(os.environ["WHISPER_CPU_HOME"])
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "results").is_dir():
        return _CHECKOUT
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "whisper-cpu"


def get() -> Workspace:
    global _current
    if _current is None:
        _current = Workspace(_default_home().resolve())
    return _current


def use(home: Path | None) -> Workspace:
    """Switch to another workspace (the CLI's --workspace, or a test's temporary folder)."""
    global _current
    _current = Workspace(Path(home).resolve()) if home is not None else None
    return get()
