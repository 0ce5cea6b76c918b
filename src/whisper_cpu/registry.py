"""One typed registry of every way of running Whisper that the project compares: our methods and the peers.

An entry carries everything the rest of the code needs to know about it: its system, what it does, the
number format of its matrix products, whether it can run here, which parts of the benchmark it takes part
in (tags), the original experiment's table row it reproduces, and how to load a `Runner`. Adding a method or
a peer is adding one entry; the benchmark registers the peers (`whisper_cpu.bench.peers`), the library only
ever runs our own methods.
"""

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import torch
from whisper.model import Whisper

from . import UserError, decoding, machine, models, pipeline, quantize
from .runner import Runner, TorchRunner


@dataclass(frozen=True)
class System:
    name: str  # the `system` column of result rows
    colour: str  # in every figure


OURS = System("whisper_cpu", "tab:blue")

# Tags: which parts of the benchmark an entry takes part in besides the 30 s window.
BENCH = "bench"  # `make bench`'s default list: the original experiment
SCALING = "scaling"  # timed at every thread count and on the long recordings
BEAM = "beam"  # scored with beam 5 too
LONGFORM = "longform"  # scored by the long-form accuracy gate
BATCHED = "batched"  # decodes windows in batches: timed on the long recordings
SWEPT = "swept"  # timed at every batch size of the sweep, with its peak memory and thread counts
SIZES = "sizes"  # timed on every size of the original's table (forced decoder steps: random weights too)


@dataclass(frozen=True)
class Entry:
    name: str
    system: System
    summary: str
    load: Callable[[str, int], Runner]  # (model name, threads) -> runner
    arithmetic: str = "fp32"  # the number format of its matrix products, for the share of this CPU's peak
    device: str = "cpu"
    unavailable: Callable[[], str | None] = lambda: None  # why it cannot run on this machine, if it cannot
    tags: frozenset[str] = frozenset()
    original: tuple[str, str, str] | None = None  # the original's (device, dtype, linear layer) row it reproduces
    prepare: Callable[[Whisper], Whisper] | None = None  # the model transform, for our PyTorch methods
    unforced: str | None = None  # why it cannot be driven to a fixed number of decoder steps, if it cannot

    @property
    def batched(self) -> bool:
        """Its runner has a settable `batch_size`: windows of one or many files decoded together."""
        return BATCHED in self.tags

    @property
    def ours(self) -> bool:
        """One of our methods on the CPU: what `whisper-cpu transcribe` runs."""
        return self.system == OURS and self.device == "cpu"


def torch_method(name: str, summary: str, prepare: Callable[[Whisper], Whisper], fp16: bool = False, guarded: bool = False,
                 lean: bool = False, **fields) -> Entry:
    """`guarded`: speech its seek loop moves past is transcribed again (`guard`); `lean`: `prepare` takes the
    checkpoint's float16 weights as they are (`models.load_model`)."""
    device = fields.get("device", "cpu")

    def load(model: str, threads: int) -> TorchRunner:
        loaded = prepare(models.load_model(model, lean=lean)).to(device)
        models.release_freed()
        weights = [models.checkpoint_path(model)]
        return pipeline.BatchedRunner(loaded, weights) if BATCHED in fields.get("tags", ()) else TorchRunner(loaded, weights, fp16, guarded)

    return Entry(name, OURS, summary, load, prepare=prepare, **fields)


def _no_cuda() -> str | None:
    return None if torch.cuda.is_available() else "CUDA is not available here (the GPU column is timed where it is: scripts/device_check.sh)"


def _no_bf16() -> str | None:
    return machine.cpu_has("avx512_bf16", "amx_bf16")


def _no_vnni() -> str | None:
    return machine.cpu_has("avx512_vnni")


def _no_fbgemm() -> str | None:
    return None if "fbgemm" in torch.backends.quantized.supported_engines else "torch's fbgemm engine (x86 CPUs) is not in this build"


def _no_torchao() -> str | None:
    return None if importlib.util.find_spec("torchao") else "it needs the torchao extra: pip install 'whisper-cpu[torchao]'"


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    REGISTRY[entry.name] = entry
    return entry


for _entry in [
    torch_method("fp32", "openai-whisper as shipped, float32 on the CPU", lambda model: model,
                 tags=frozenset({BENCH, SCALING, BEAM, LONGFORM, SIZES}), original=("cpu", "fp32", "Linear")),
    torch_method("fp32-nn", "float32 after turning whisper's Linear into plain nn.Linear (the original's fork)", quantize.to_nn_linear,
                 tags=frozenset({BENCH, SIZES}), original=("cpu", "fp32", "nn.Linear")),
    torch_method("qint8", "the original's torch dynamic int8 quantization of every nn.Linear", quantize.quantize_qint8, arithmetic="int8",
                 tags=frozenset({BENCH, SCALING, LONGFORM, SIZES}), original=("cpu", "qint8", "nn.Linear")),
    torch_method("qint8-logits", "qint8 plus the vocabulary projection, which the original left in fp32",
                 lambda model: quantize.with_vocab_projection(model, quantize.quantize_qint8), arithmetic="int8", tags=frozenset({SCALING})),
    torch_method("bf16", "bfloat16 weights and matrix products for every Linear and the vocabulary projection",
                 lambda model: quantize.with_vocab_projection(model, lambda m: quantize.replace_linears(m, quantize.CastLinear)),
                 unavailable=_no_bf16, arithmetic="bf16"),
    torch_method("torchao-int8dq", "torchao int8 dynamic activations + int8 per-row weights, eager", quantize.torchao_method("int8dq"),
                 unavailable=_no_torchao, arithmetic="int8"),
    torch_method("torchao-int8dq-compile", "torchao int8 dynamic activations + int8 weights, encoder and decoder torch.compiled",
                 quantize.torchao_method("int8dq", compile=True), unavailable=_no_torchao, arithmetic="int8"),
    torch_method("torchao-int8wo", "torchao int8 weight-only, eager (compile matches only bf16 activations, so it gains nothing)",
                 quantize.torchao_method("int8wo"), unavailable=_no_torchao),
    torch_method("torchao-int4wo", "torchao int4 weight-only, groups of 128, CPU packing, bfloat16 activations",
                 quantize.torchao_method("int4wo"), unavailable=lambda: _no_torchao() or _no_bf16(), arithmetic="bf16"),
    torch_method("fast-fp32", "openai-whisper's search on our decoder: static kv-cache, fused q/k/v, audio keys once, batched rules",
                 decoding.fast, guarded=True, tags=frozenset({LONGFORM})),
    torch_method("fast-qint8", "the fast decoder with dynamic int8 for every matrix product, vocabulary projection included",
                 lambda model: quantize.quantize_qint8(decoding.fast(model)), arithmetic="int8", guarded=True, lean=True,
                 tags=frozenset({SCALING, BEAM, LONGFORM})),
    torch_method("fast-qint8-pc", "fast-qint8 with one int8 scale per output row of every weight (per channel, as CTranslate2), not per tensor",
                 lambda model: quantize.quantize_qint8(decoding.fast(model), per_channel=True), arithmetic="int8",
                 guarded=True, lean=True, tags=frozenset({SCALING, BEAM, LONGFORM, SIZES})),
    torch_method("fast-qint8-vnni", "fast-qint8-pc with activations on 8 bits, not 7: VNNI sums int8 products in 32 bits, where AVX2's 16 overflow",
                 lambda model: quantize.quantize_qint8(decoding.fast(model), per_channel=True, full_range=True), unavailable=_no_vnni,
                 arithmetic="int8", guarded=True, lean=True, tags=frozenset({SCALING, LONGFORM})),
    torch_method("fast-qint8-dec", "the fast decoder's products in per-channel dynamic int8, the encoder kept in fp32",
                 lambda model: quantize.quantize_qint8(decoding.fast(model), per_channel=True, part="decoder"), arithmetic="int8",
                 guarded=True, lean=True, tags=frozenset({LONGFORM})),
    torch_method("fast-fp16w", "the fast decoder with every weight packed in float16, the checkpoint's own precision: fp32 products reading half the bytes",
                 lambda model: quantize.quantize_fp16(decoding.fast(model)), unavailable=_no_fbgemm, guarded=True, lean=True,
                 tags=frozenset({SCALING, BEAM, LONGFORM})),
    torch_method("fast-bf16enc", "fast-fp16w with the encoder's products in bfloat16, native on AMX and AVX-512-BF16 CPUs",
                 lambda model: quantize.bf16_encoder(decoding.fast(model)), unavailable=lambda: _no_bf16() or _no_fbgemm(), guarded=True,
                 lean=True, arithmetic="bf16", tags=frozenset({LONGFORM})),
    torch_method("fast-fp32-batched", "fast-fp32 on the batched pipeline: windows cut at pauses (Silero VAD), decoded in batches, fallback per window",
                 decoding.fast, tags=frozenset({BATCHED, LONGFORM})),
    torch_method("fast-qint8-pc-batched", "fast-qint8-pc on the batched pipeline, each batch row's activations quantized on its own scale",
                 lambda model: quantize.quantize_qint8(decoding.fast(model), per_channel=True, batched=True), arithmetic="int8", lean=True,
                 tags=frozenset({BATCHED, SWEPT, LONGFORM})),
    torch_method("fast-fp16w-batched", "fast-fp16w on the batched pipeline: no activation is rounded, so a row's words never depend on the batch",
                 lambda model: quantize.quantize_fp16(decoding.fast(model)), unavailable=_no_fbgemm, lean=True,
                 tags=frozenset({BATCHED, SWEPT, LONGFORM})),
    torch_method("fast-qint8-vnni-batched", "fast-qint8-vnni on the batched pipeline, each batch row's activations on 8 bits of its own scale",
                 lambda model: quantize.quantize_qint8(decoding.fast(model), per_channel=True, full_range=True, batched=True),
                 unavailable=_no_vnni, arithmetic="int8", lean=True, tags=frozenset({BATCHED, SWEPT, LONGFORM})),
    torch_method("fast-bf16-batched", "fast-fp16w-batched with the encoder's products and the audio's keys and values in bfloat16, native on AMX and AVX-512-BF16 CPUs",
                 lambda model: quantize.bf16_audio(quantize.bf16_encoder(decoding.fast(model))), unavailable=lambda: _no_bf16() or _no_fbgemm(),
                 lean=True, arithmetic="bf16", tags=frozenset({BATCHED, SWEPT, LONGFORM})),
    torch_method("fp32-gpu", "the original's GPU column: openai-whisper float32 on CUDA (only where CUDA exists)", lambda model: model,
                 device="cuda", unavailable=_no_cuda, tags=frozenset({BENCH, SIZES}), original=("gpu", "fp32", "Linear")),
    torch_method("fp16-gpu", "openai-whisper on CUDA as it runs there by default: float32 weights, float16 activations", lambda model: model,
                 fp16=True, device="cuda", unavailable=_no_cuda, arithmetic="fp16", tags=frozenset({SIZES})),
    torch_method("fast-fp32-gpu", "the fast decoder on CUDA, float32", decoding.fast, device="cuda", unavailable=_no_cuda, tags=frozenset({SIZES})),
]:
    register(_entry)

# `auto` where this CPU has no measurements: the checkpoint's own weights, no activation rounded, only the order of a
# product's sums differs from fp32 (the same words in every committed gate: docs/accuracy.md); without fbgemm, fp32
DEFAULT, FALLBACK = "fast-fp16w", "fast-fp32"


def default() -> str:
    return FALLBACK if REGISTRY[DEFAULT].unavailable() else DEFAULT


def load_plugins() -> None:
    """Import the modules named in $WHISPER_CPU_PLUGINS (comma-separated): each registers entries of its own, a method
    or a peer the project does not ship, and every benchmark process (children included) sees them."""
    for module in filter(None, (name.strip() for name in os.environ.get("WHISPER_CPU_PLUGINS", "").split(","))):
        importlib.import_module(module)


def get(name: str) -> Entry:
    if name not in REGISTRY:
        raise UserError(f"unknown method '{name}': use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def tagged(tag: str) -> tuple[str, ...]:
    return tuple(name for name, entry in REGISTRY.items() if tag in entry.tags)


def ours(name: str) -> Entry:
    """A method the transcriber runs: ours, in PyTorch on the CPU; peers only make sense timed side by side."""
    entry = get(name)
    if not entry.ours:
        names = ", ".join(n for n, e in REGISTRY.items() if e.ours)
        raise UserError(f"'{name}' is not one of our CPU methods: the transcriber runs our PyTorch methods ({names}); use `bench` to time peers")
    if why := entry.unavailable():
        raise UserError(f"method '{name}' cannot run here: {why}")
    return entry
