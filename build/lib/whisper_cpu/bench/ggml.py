"""whisper.cpp model files (ggml format) written from openai-whisper checkpoints.

whisper.cpp reads only its own ggml files. Writing them here, from the very checkpoint every other method
loads, means whisper.cpp is compared on the same weights rather than on separately downloaded files. The
layout is that of whisper.cpp's models/convert-pt-to-ggml.py (the f16 file) and the quantized variants are
what its examples/quantize tool makes of that file: the same tensors quantized (2-D, not on the skip list),
with ggml's reference quantizers (quantize_row_q8_0_ref, quantize_row_q5_0_ref) reproduced bit for bit.
"""

import base64
import struct
from pathlib import Path

import numpy as np
import torch
import whisper

from .. import UserError, models, workspace
from ..files import write_with

GGML_MAGIC = 0x67676D6C
QNT_VERSION = 2  # GGML_QNT_VERSION: quantized files carry it in ftype as 1000 * version + ftype
FTYPES = {"f16": 1, "q8_0": 1000 * QNT_VERSION + 7, "q5_0": 1000 * QNT_VERSION + 8}  # hparams.ftype
F32, F16, Q5_0, Q8_0 = 0, 1, 6, 8  # ggml_type of one tensor
QK = 32  # values per block for both quantized types

# whisper.cpp keeps these in float32 whatever the file type (its converter writes them so and its
# quantizer skips them); every other 1-D tensor is float32 too, 3-D conv weights stay float16.
KEEP_F32 = {"encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding"}

# Block layouts of ggml-common.h, packed exactly as in C (34 and 22 bytes).
BLOCK_Q8_0 = np.dtype([("d", "<f2"), ("qs", "i1", QK)])
BLOCK_Q5_0 = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", QK // 2)])


def _inverse(d: np.ndarray) -> np.ndarray:
    """1/d in float32, 0 where d is 0 (the `d ? 1.0f/d : 0.0f` of the C code)."""
    return np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_0_ref: per 32 values, d = amax/127 and q = roundf(x/d) (ties away from zero)."""
    blocks = np.asarray(x, np.float32).reshape(-1, QK)
    d = np.abs(blocks).max(axis=1) / np.float32(127)
    v = blocks * _inverse(d)[:, None]  # float32 products, as in C
    out = np.empty(len(blocks), BLOCK_Q8_0)
    out["d"] = d.astype(np.float16)
    # floor(|v| + 0.5) in float64 is exact for float32 v, unlike float32 arithmetic near .5
    out["qs"] = np.sign(v) * np.floor(np.abs(v).astype(np.float64) + 0.5)
    return out


def quantize_q5_0(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q5_0_ref: d = -max/16 from the signed value of largest magnitude (first one on ties),
    q = min(31, trunc(x/d + 16.5)); low nibbles pair value j with j+16, the fifth bits go to qh bit j."""
    blocks = np.asarray(x, np.float32).reshape(-1, QK)
    rows = np.arange(len(blocks))
    peak = blocks[rows, np.abs(blocks).argmax(axis=1)]
    peak = np.where(peak == 0, np.float32(0), peak)  # C starts from +0.0f, so an all-zero block gives d = -0.0
    d = peak / np.float32(-16)
    q = np.minimum(31, (blocks * _inverse(d)[:, None] + np.float32(16.5)).astype(np.int8)).astype(np.uint8)
    out = np.empty(len(blocks), BLOCK_Q5_0)
    out["d"] = d.astype(np.float16)
    out["qs"] = (q[:, : QK // 2] & 0x0F) | ((q[:, QK // 2 :] & 0x0F) << 4)
    out["qh"] = (((q >> 4) & 1).astype(np.uint32) << np.arange(QK, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    return out


QUANTIZERS = {"q8_0": (Q8_0, quantize_q8_0), "q5_0": (Q5_0, quantize_q5_0)}


def _vocab(multilingual: bool) -> list[bytes]:
    """Token bytes in file order, read from openai-whisper's tiktoken file as convert-pt-to-ggml.py does."""
    path = Path(whisper.__file__).parent / "assets" / ("multilingual.tiktoken" if multilingual else "gpt2.tiktoken")
    tokens = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in path.read_bytes().splitlines() if line)}
    return list(tokens)


def _tensor(f, name: str, data: np.ndarray, ftype: str) -> None:
    """One tensor record: n_dims, name length, ggml type, dims innermost first, name, data."""
    if name in {"encoder.conv1.bias", "encoder.conv2.bias"}:
        data = data.reshape(-1, 1)  # whisper.cpp wants ne = [1, n_state]: a bias broadcast over time
    if data.ndim < 2 or name in KEEP_F32:
        ttype, payload = F32, data.astype(np.float32)
    elif data.ndim == 2 and ftype in QUANTIZERS:
        # the quantizer starts from the f16 file, so round to float16 first
        ttype, quantize = QUANTIZERS[ftype]
        payload = quantize(data.astype(np.float16).astype(np.float32))
    else:
        ttype, payload = F16, data.astype(np.float16)
    encoded = name.encode()
    f.write(struct.pack("<iii", data.ndim, len(encoded), ttype))
    f.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
    f.write(encoded)
    f.write(np.ascontiguousarray(payload).tobytes())


def write(checkpoint: dict | str | Path, target: str | Path, ftype: str = "f16") -> Path:
    """Write a ggml model file for whisper.cpp from an openai-whisper checkpoint (dict or .pt path)."""
    if ftype not in FTYPES:
        raise UserError(f"unknown ggml type '{ftype}': use one of {', '.join(FTYPES)}")
    if not isinstance(checkpoint, dict):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    dims = checkpoint["dims"]
    with np.load(Path(whisper.__file__).parent / "assets" / "mel_filters.npz") as npz:
        filters = npz[f"mel_{dims['n_mels']}"].astype(np.float32)
    vocab = _vocab(multilingual=dims["n_vocab"] >= 51865)
    target = Path(target)
    with open(target, "wb") as f:
        hparams = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
                   "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels")
        f.write(struct.pack("<I11i", GGML_MAGIC, *(dims[k] for k in hparams), FTYPES[ftype]))
        f.write(struct.pack("<ii", *filters.shape))
        f.write(filters.tobytes())
        f.write(struct.pack("<i", len(vocab)))
        for token in vocab:
            f.write(struct.pack("<i", len(token)) + token)
        for name, tensor in checkpoint["model_state_dict"].items():
            _tensor(f, name, tensor.float().numpy(), ftype)
    return target


def model_file(name: str, ftype: str = "f16") -> Path:
    """The cached ggml file models/ggml/<name>-<ftype>.bin, written (atomically) on first use."""
    target = workspace.get().models / "ggml" / f"{name}-{ftype}.bin"
    if not target.exists():
        source = models.checkpoint_path(name)
        write_with(lambda tmp: write(source, tmp, ftype), target)
    return target
