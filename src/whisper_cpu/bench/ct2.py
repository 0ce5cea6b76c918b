"""CTranslate2 (faster-whisper) model directories written from openai-whisper checkpoints: the inverse of
`models.ct2_to_checkpoint`.

faster-whisper reads only CTranslate2 directories. Writing them from the very checkpoint our methods load
means it is timed on the same weights, random timing-only ones included: model.bin in the layout of
CTranslate2's own Whisper converter (binary version 6, q/k/v fused, output projection an alias of the
embedding), float16 as the published conversions are, and the vocabulary, tokenizer.json and mel size that
faster-whisper reads, derived from openai-whisper's tiktoken files (no download).
"""

import base64
import gzip
import json
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import whisper
from whisper.tokenizer import get_tokenizer

from .. import models, workspace
from ..files import write_with

VERSION, SPEC, REVISION = 6, "WhisperSpec", 3
FLOAT16, INT8, INT16 = 4, 1, 2  # CTranslate2 DataType codes
GELU = 3  # CTranslate2's ActivationType::GELU
# Scalars of each side, as CTranslate2's converter writes them: (name, dtype, value); None takes the head count
SCALARS = {
    "encoder": [("num_heads", INT16, None)],
    "decoder": [("activation", INT8, GELU), ("alibi", INT8, 0), ("alignment_heads", INT16, 1), ("alignment_layer", INT16, -1),
                ("num_heads", INT16, None), ("pre_norm", INT8, 1), ("scale_embeddings", INT8, 0), ("start_from_zero_embedding", INT8, 0)],
}


def _attention(state: dict, src: str, cross: bool) -> dict:
    get = lambda name: state[f"{src}.{name}"]  # noqa: E731
    key_bias = torch.zeros_like(get("value.bias"))
    if cross:
        fused = {"linear_0/weight": get("query.weight"), "linear_0/bias": get("query.bias"),
                 "linear_1/weight": torch.cat([get("key.weight"), get("value.weight")]),
                 "linear_1/bias": torch.cat([key_bias, get("value.bias")]),
                 "linear_2/weight": get("out.weight"), "linear_2/bias": get("out.bias")}
    else:
        fused = {"linear_0/weight": torch.cat([get("query.weight"), get("key.weight"), get("value.weight")]),
                 "linear_0/bias": torch.cat([get("query.bias"), key_bias, get("value.bias")]),
                 "linear_1/weight": get("out.weight"), "linear_1/bias": get("out.bias")}
    return fused | {"layer_norm/gamma": state[f"{src}_ln.weight"], "layer_norm/beta": state[f"{src}_ln.bias"]}


def _layer(state: dict, src: str, cross: bool) -> dict:
    parts = {"self_attention": _attention(state, f"{src}.attn", False)}
    if cross:
        parts["attention"] = _attention(state, f"{src}.cross_attn", True)
    parts["ffn"] = {"linear_0/weight": state[f"{src}.mlp.0.weight"], "linear_0/bias": state[f"{src}.mlp.0.bias"],
                    "linear_1/weight": state[f"{src}.mlp.2.weight"], "linear_1/bias": state[f"{src}.mlp.2.bias"],
                    "layer_norm/gamma": state[f"{src}.mlp_ln.weight"], "layer_norm/beta": state[f"{src}.mlp_ln.bias"]}
    return {f"{part}/{name}": tensor for part, tensors in parts.items() for name, tensor in tensors.items()}


def variables(checkpoint: dict) -> dict[str, torch.Tensor]:
    """CTranslate2's tensors of a checkpoint, by name (scalars apart)."""
    state, dims = checkpoint["model_state_dict"], checkpoint["dims"]
    out = {
        "encoder/conv1/weight": state["encoder.conv1.weight"], "encoder/conv1/bias": state["encoder.conv1.bias"],
        "encoder/conv2/weight": state["encoder.conv2.weight"], "encoder/conv2/bias": state["encoder.conv2.bias"],
        "encoder/position_encodings/encodings": state["encoder.positional_embedding"],
        "encoder/layer_norm/gamma": state["encoder.ln_post.weight"], "encoder/layer_norm/beta": state["encoder.ln_post.bias"],
        "decoder/embeddings/weight": state["decoder.token_embedding.weight"],
        "decoder/position_encodings/encodings": state["decoder.positional_embedding"],
        "decoder/layer_norm/gamma": state["decoder.ln.weight"], "decoder/layer_norm/beta": state["decoder.ln.bias"],
    }
    for side, layers in (("encoder", dims["n_audio_layer"]), ("decoder", dims["n_text_layer"])):
        for i in range(layers):
            out |= {f"{side}/layer_{i}/{k}": v for k, v in _layer(state, f"{side}.blocks.{i}", side == "decoder").items()}
    return out


def _string(text: str) -> bytes:
    encoded = text.encode() + b"\0"
    return struct.pack("<H", len(encoded)) + encoded


def write_model_bin(checkpoint: dict, f) -> None:
    """model.bin, float16, its variables sorted by name as CTranslate2 writes them."""
    dims = checkpoint["dims"]
    heads = {"encoder": dims["n_audio_head"], "decoder": dims["n_text_head"]}
    records = {name: (FLOAT16, tensor.to(torch.float16).contiguous().numpy()) for name, tensor in variables(checkpoint).items()}
    for side, scalars in SCALARS.items():
        for name, dtype, value in scalars:
            records[f"{side}/{name}"] = (dtype, np.array(heads[side] if value is None else value, {INT8: np.int8, INT16: np.int16}[dtype]))
    f.write(struct.pack("<I", VERSION) + _string(SPEC) + struct.pack("<II", REVISION, len(records)))
    for name in sorted(records):
        dtype, array = records[name]
        f.write(_string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape))
        f.write(struct.pack("<BI", dtype, array.nbytes) + array.tobytes())
    f.write(struct.pack("<I", 1) + _string("decoder/projection/weight") + _string("decoder/embeddings/weight"))


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
    heads = checkpoint.get("alignment_heads") or []
    suppress = {*tokenizer.non_speech_tokens, tokenizer.sot, tokenizer.translate, tokenizer.transcribe, tokenizer.sot_lm,
                tokenizer.sot_prev, tokenizer.no_speech}  # what openai-whisper's suppress_tokens="-1" comes to
    return {"alignment_heads": [list(map(int, h)) for h in heads], "lang_ids": sorted(tokenizer.all_language_tokens),
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
        checkpoint["alignment_heads"] = _official_heads(name, checkpoint["dims"])
        write(checkpoint, target)
    return target


def _official_heads(name: str, dims: dict) -> list[list[int]]:
    """openai-whisper's alignment heads of an official name as (layer, head) pairs (its packed boolean mask)."""
    if name not in whisper._ALIGNMENT_HEADS:
        return []
    mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS[name])), dtype=bool)
    return np.argwhere(mask.reshape(dims["n_text_layer"], dims["n_text_head"])).tolist()
