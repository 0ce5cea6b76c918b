"""The registry: every way of running Whisper that the benchmark compares, methods and peers alike.

An entry loads a runner for a model name; every runner transcribes a file the way a user would and times the
encoder and the decoder alone on one 30 s window, so the harness, the accuracy scorer and the report treat
our methods and the peer systems the same way.

openai-whisper's `Linear` subclasses `nn.Linear`, and `quantize_dynamic` matches module types exactly, so
quantizing the model as shipped silently changes nothing. The original experiment forked whisper to make the
layers plain `nn.Linear`; `to_nn_linear` does that edit at load time instead.
"""

import os
import time
import types
import warnings
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
import whisper
from torch import nn
from whisper.model import Linear, TextDecoder, Whisper

from . import UserError, audio, models, peers


class Runner(Protocol):
    multilingual: bool
    weights: list  # the files it loaded, for model size on disk

    def transcribe(self, path, language: str, beam_size: int | None) -> dict:
        """{"text": ..., "tokens": n} for a whole file: decode, features, encoder, decoder."""

    def split_times(self, samples, language: str, beam_size: int | None) -> tuple[float, float, int]:
        """(encoder_s, decoder_s, tokens) for the first 30 s window alone."""


class TorchRunner:
    """openai-whisper's own transcribe and decode on a (possibly transformed) PyTorch model."""

    def __init__(self, model: Whisper, weights: list):
        self.model, self.weights = model, weights
        self.multilingual = model.is_multilingual

    def transcribe(self, path, language: str, beam_size: int | None) -> dict:
        result = self.model.transcribe(
            audio.load(path), language=language, temperature=0.0, beam_size=beam_size,
            condition_on_previous_text=False, fp16=False, verbose=None,
        )
        return {"text": result["text"].strip(), "tokens": sum(len(s["tokens"]) for s in result["segments"])}

    def split_times(self, samples, language: str, beam_size: int | None) -> tuple[float, float, int]:
        model = self.model
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(samples), model.dims.n_mels)[None].to(model.device)
        options = whisper.DecodingOptions(language=language, temperature=0.0, beam_size=beam_size, fp16=False)
        with torch.inference_mode():
            start = time.perf_counter()
            features = model.embed_audio(mel)
            _sync(model)
            encoder_s = time.perf_counter() - start
            start = time.perf_counter()
            decoded = whisper.decode(model, features, options)
            _sync(model)
        return encoder_s, time.perf_counter() - start, len(decoded[0].tokens)


def _sync(model: Whisper) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def to_nn_linear(model: Whisper) -> Whisper:
    """Replace every whisper `Linear` by a plain `nn.Linear` sharing its parameters (the original's fork)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is Linear:
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                plain.weight, plain.bias = child.weight, child.bias
                setattr(module, name, plain)
    return model


def quantize_qint8(model: Whisper) -> Whisper:
    """The original's method: dynamic int8 for every nn.Linear (weights int8, activations quantized per call)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")  # torch.ao eager quantization: deprecated, still shipped
        return torch.ao.quantization.quantize_dynamic(to_nn_linear(model), {nn.Linear}, dtype=torch.qint8)


def _projected_forward(self: TextDecoder, x, xa, kv_cache=None):
    """TextDecoder.forward with the vocabulary projection done by a module, so quantizers can reach it."""
    offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
    x = self.token_embedding(x) + self.positional_embedding[offset : offset + x.shape[-1]]
    x = x.to(xa.dtype)
    for block in self.blocks:
        x = block(x, xa, mask=self.mask, kv_cache=kv_cache)
    return self.vocab_projection(self.ln(x)).float()


def with_vocab_projection(model: Whisper, transform: Callable[[Whisper], Whisper]) -> Whisper:
    """Expose `x @ token_embedding.weight.T` (per token the largest matrix product) as an nn.Linear, transform.

    openai-whisper computes the logits with a bare matmul, so module-based quantization leaves it in fp32;
    for tiny and base it is most of the decoder's arithmetic per token.
    """
    decoder = to_nn_linear(model).decoder
    decoder.vocab_projection = nn.Linear(decoder.token_embedding.embedding_dim, decoder.token_embedding.num_embeddings, bias=False)
    decoder.vocab_projection.weight = decoder.token_embedding.weight
    model = transform(model)
    model.decoder.forward = types.MethodType(_projected_forward, model.decoder)
    return model


class BF16Linear(nn.Module):
    """A Linear with bfloat16 weights: inputs cast down, outputs back up, so the rest stays float32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16), requires_grad=False)

    def forward(self, x):
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


def replace_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is nn.Linear:
                setattr(module, name, make(child))
    return model


def cpu_has(*flags: str) -> str | None:
    """None when the CPU has any of the flags, else why a method cannot run here."""
    text = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    present = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return None if present & set(flags) else f"needs a CPU with {' or '.join(flags)}"


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    load: Callable[[str, int], Runner]  # (model name, threads) -> runner
    system: str = "whisper_cpu"
    prepare: Callable[[Whisper], Whisper] | None = None  # the model transform, for PyTorch methods
    device: str = "cpu"
    unavailable: Callable[[], str | None] = lambda: None  # why it cannot run on this machine, if it cannot


def torch_method(name: str, summary: str, prepare: Callable[[Whisper], Whisper], device: str = "cpu", unavailable=lambda: None) -> Method:
    def load(model: str, threads: int) -> TorchRunner:
        return TorchRunner(prepare(models.load_model(model)).to(device), [models.checkpoint_path(model)])

    return Method(name, summary, load, prepare=prepare, device=device, unavailable=unavailable)


REGISTRY = {
    m.name: m
    for m in [
        torch_method("fp32", "openai-whisper as shipped, float32 on the CPU", lambda model: model),
        torch_method("fp32-nn", "float32 after turning whisper's Linear into plain nn.Linear (the original's fork)", to_nn_linear),
        torch_method("qint8", "the original's torch dynamic int8 quantization of every nn.Linear", quantize_qint8),
        torch_method("qint8-logits", "qint8 plus the vocabulary projection, which the original left in fp32",
                     lambda model: with_vocab_projection(model, quantize_qint8)),
        torch_method("bf16", "bfloat16 weights and matrix products for every Linear and the vocabulary projection",
                     lambda model: with_vocab_projection(model, lambda m: replace_linears(m, BF16Linear)),
                     unavailable=lambda: cpu_has("avx512_bf16", "amx_bf16")),
        Method("faster-whisper-fp32", "faster-whisper (CTranslate2) compute_type float32, same weights",
               lambda model, threads: peers.FasterWhisperRunner(model, "float32", threads), system="faster-whisper"),
        Method("faster-whisper-int8", "faster-whisper (CTranslate2) compute_type int8, same weights",
               lambda model, threads: peers.FasterWhisperRunner(model, "int8", threads), system="faster-whisper"),
        torch_method("fp32-gpu", "the original's GPU column: openai-whisper float32 on CUDA (only where CUDA exists)", lambda model: model, "cuda"),
    ]
}


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise UserError(f"unknown method '{name}': use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
