import ctypes
import subprocess
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper

from whisper_cpu import machine, models
from whisper_cpu.bench import ggml, isolate, native

PYWHISPERCPP = importlib.util.find_spec("_pywhispercpp")


def dequantize(raw: bytes, kind: str) -> np.ndarray:
    """Straight from ggml's dequantize_row_q8_0 / dequantize_row_q5_0, one block at a time from raw bytes."""
    size = {"q8_0": 34, "q5_0": 22}[kind]
    assert len(raw) % size == 0
    out = []
    for b in range(0, len(raw), size):
        d = float(np.frombuffer(raw[b : b + 2], "<f2")[0])
        if kind == "q8_0":
            q = np.frombuffer(raw[b + 2 : b + 34], np.int8).astype(int)
        else:
            qh = int.from_bytes(raw[b + 2 : b + 6], "little")
            qs = raw[b + 6 : b + 22]
            low = [(qs[j] & 0x0F) | (((qh >> j) & 1) << 4) for j in range(16)]
            high = [(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) for j in range(16)]
            q = np.array(low + high) - 16
        out.append(d * q)
    return np.concatenate(out)


@pytest.fixture(scope="module")
def values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 256)) * rng.choice([1e-3, 0.1, 3.0], (8, 1))
    x[0, :32] = 0.0  # an all-zero block must not divide by zero
    return x.astype(np.float16).astype(np.float32)  # checkpoints are float16, so is the quantizer's input


@pytest.mark.parametrize("kind, block_bytes, levels", [("q8_0", 34, 127), ("q5_0", 22, 16)])
def test_quantize_round_trip(values, kind, block_bytes, levels):
    raw = ggml.QUANTIZERS[kind][1](values).tobytes()
    assert len(raw) == values.size // 32 * block_bytes
    restored = dequantize(raw, kind).reshape(-1, 32)
    step = np.abs(values.reshape(-1, 32)).max(axis=1, keepdims=True) / levels  # |d| of each block, unrounded
    stored = np.abs(np.frombuffer(raw, np.dtype([("d", "<f2"), ("rest", "V", block_bytes - 2)]))["d"].astype(np.float64))
    error = np.abs(restored - values.reshape(-1, 32))
    # rounding costs half a step (q5_0 also clips +16 steps to +15: one step), storing d as float16 up to
    # `levels` times its rounding error
    bound = step * (1.0 if kind == "q5_0" else 0.5) + levels * np.abs(step - stored[:, None])
    assert np.all(error <= bound * (1 + 1e-6))
    assert np.all(restored[0] == 0)
    assert np.sqrt(np.mean(error[1:] ** 2 / step[1:] ** 2)) < 0.35  # uniform rounding noise: 0.29 steps


@pytest.mark.skipif(PYWHISPERCPP is None, reason="pywhispercpp is not installed")
@pytest.mark.parametrize("kind", ["q8_0", "q5_0"])
def test_quantize_matches_ggml_bit_for_bit(values, kind):
    lib_path = Path(PYWHISPERCPP.origin).parent / "libggml-base.so.0"
    if not lib_path.exists():
        pytest.skip(f"{lib_path} not found")
    lib = ctypes.CDLL(str(lib_path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    ttype, quantize = ggml.QUANTIZERS[kind]
    dst = np.zeros(values.nbytes, np.uint8)
    size = lib.ggml_quantize_chunk(ttype, values.ctypes.data, dst.ctypes.data, 0, *values.shape, None)
    assert quantize(values).tobytes() == dst[:size].tobytes()


def read_ggml(path: Path):
    """Parse a whisper.cpp model file: hparams, mel filters, vocab and each tensor's (type, dims); checks it ends exactly."""
    data = path.read_bytes()
    pos = 0

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    magic, *hparams = take("<I11i")
    assert magic == 0x67676D6C
    n_mel, n_fft = take("<ii")
    filters = np.frombuffer(data, np.float32, n_mel * n_fft, pos).reshape(n_mel, n_fft)
    pos += filters.nbytes
    vocab = []
    for _ in range(take("<i")[0]):
        (length,) = take("<i")
        vocab.append(data[pos : pos + length])
        pos += length
    bytes_per_32 = {0: 128, 1: 64, 6: 22, 8: 34}
    tensors = {}
    while pos < len(data):
        n_dims, length, ttype = take("<iii")
        dims = take(f"<{n_dims}i")
        name = data[pos : pos + length].decode()
        pos += length + int(np.prod(dims)) * bytes_per_32[ttype] // 32
        tensors[name] = (ttype, list(dims))
    assert pos == len(data)
    return hparams, filters, vocab, tensors


@pytest.fixture(scope="module")
def checkpoint():
    return torch.load(models.checkpoint_path("tiny.en"), map_location="cpu", weights_only=True)


def test_f16_file_reads_back(tmp_path, checkpoint):
    hparams, filters, vocab, tensors = read_ggml(ggml.write(checkpoint, tmp_path / "tiny.en-f16.bin", "f16"))
    dims = checkpoint["dims"]
    order = ["n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
             "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels"]
    assert hparams == [dims[k] for k in order] + [1]
    with np.load(Path(whisper.__file__).parent / "assets" / "mel_filters.npz") as npz:
        assert np.array_equal(filters, npz["mel_80"])
    encoding = whisper.tokenizer.get_encoding("gpt2")  # tiktoken's view of the same file
    assert vocab == [encoding.decode_single_token_bytes(i) for i in range(encoding.eot_token)]  # the ordinary tokens
    assert set(tensors) == set(checkpoint["model_state_dict"])
    assert tensors["encoder.conv1.bias"] == (0, [1, 384])
    assert tensors["encoder.conv1.weight"] == (1, [3, 80, 384])
    assert tensors["encoder.positional_embedding"] == (0, [384, 1500])
    assert tensors["decoder.token_embedding.weight"] == (1, [384, 51864])
    assert tensors["decoder.blocks.0.attn.query.bias"] == (0, [384])


@pytest.mark.parametrize("ftype, qtype", [("q8_0", 8), ("q5_0", 6)])
def test_quantized_files_quantize_what_whisper_cpp_does(ftype, qtype):
    hparams, _, _, tensors = read_ggml(ggml.model_file("tiny.en", ftype))
    assert hparams[-1] == 2000 + {"q8_0": 7, "q5_0": 8}[ftype]
    for name, (ttype, dims) in tensors.items():
        expected = 0 if len(dims) == 1 or name in ggml.KEEP_F32 else qtype if len(dims) == 2 else 1
        assert ttype == expected, name


@pytest.mark.skipif(PYWHISPERCPP is None, reason="pywhispercpp is not installed")
def test_whisper_cpp_transcribes_our_q8_0_file(clips, mirror):
    """In a process of its own, as the benchmark runs it: a native crash fails this test, not the suite."""
    if native.record().get("q8_0_works") is False:
        pytest.skip(f"whisper.cpp q8_0 fails on this CPU with every build `make whispercpp` tried: {native.record()['failures']}")
    assert isolate.call("whisper_cpu.bench.native:check", None, timeout=300) is None


def test_an_amx_host_gets_a_second_build_with_amx_off(monkeypatch):
    monkeypatch.setattr(machine, "flags", lambda: {"avx2", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"})
    assert [(name, cflags) for name, _, cflags in native.builds()] == [("native", ""), ("native, AMX off", native.NO_AMX)]
    monkeypatch.setattr(machine, "flags", lambda: {"avx2"})
    assert [name for name, *_ in native.builds()] == ["native"]


def test_no_amx_flags_beat_march_native_in_the_compiler():
    """The second build relies on GCC keeping an explicit -mno-amx-* whatever -march turns on."""
    defines = subprocess.run(["gcc", *native.NO_AMX.split(), "-march=sapphirerapids", "-dM", "-E", "-"], input="", capture_output=True,
                             text=True, check=True).stdout
    assert "__AVX512VNNI__" in defines and "__AMX" not in defines
