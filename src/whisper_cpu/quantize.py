"""Our model transforms: each takes an fp32 openai-whisper model and returns one that computes in another way.

openai-whisper's `Linear` subclasses `nn.Linear`, and `quantize_dynamic` matches module types exactly, so
quantizing the model as shipped silently changes nothing. The original experiment forked whisper to make the
layers plain `nn.Linear`; `to_nn_linear` does that edit at load time instead.
"""

import types
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from whisper.model import Linear, TextDecoder, Whisper

from .models import release_freed


def to_nn_linear(model: Whisper) -> Whisper:
    """Replace every whisper `Linear` by a plain `nn.Linear` sharing its parameters (the original's fork)."""
    def plain(child: Linear) -> nn.Linear:
        linear = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")  # no weights of its own
        linear.weight, linear.bias = child.weight, child.bias
        return linear

    return replace_linears(model, plain, Linear)


def quantize_qint8(model: Whisper, per_channel: bool = False, part: str | None = None, full_range: bool = False,
                   batched: bool = False) -> Whisper:
    """Dynamic int8 for every nn.Linear of the model (or of one `part`, "encoder" or "decoder"): weights int8,
    activations quantized per call. The original's method has one weight scale per tensor; `per_channel`
    gives every output row its own, as CTranslate2 does, so one large row no longer coarsens all the others;
    `full_range`: activations on 8 bits, not 7 (`FullRangeLinear`: VNNI CPUs only); `batched`: the decoder's
    rows on their own scales whatever the batch, one window alone too (`RowScaledLinear`).

    Module by module, as `torch.ao.quantization.quantize_dynamic` converts them, each from its weights in fp32: a
    model loaded `lean` (float16 as stored) is quantized without an fp32 copy of the whole model ever made."""
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig if per_channel else torch.ao.quantization.default_dynamic_qconfig
    kind = FullRangeLinear if full_range else nnqd.Linear
    model = to_nn_linear(model)
    for name in ("encoder", "decoder") if part is None else (part,):
        replace_linears(getattr(model, name), lambda linear: _dynamic_int8(linear, qconfig, kind))
    if hasattr(model.decoder, "layers"):  # our fast decoder decodes windows in batches: keep its rows independent
        replace_linears(model.decoder, lambda linear: RowScaledLinear(linear, batched), kind)
    return _half_embedding(model).float()


def _dynamic_int8(linear: nn.Linear, qconfig, kind: type = nnqd.Linear) -> nnqd.Linear:
    """torch.ao's dynamic int8 Linear of `linear`, as `quantize_dynamic` converts it. A float16 weight is observed
    and rounded in fp32 by torch.ao itself; a float16 bias would be kept as it is, which the product then refuses."""
    linear.qconfig = qconfig
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach().float(), requires_grad=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")  # torch.ao eager quantization: deprecated, still shipped
        return kind.from_float(linear)


class FullRangeLinear(nnqd.Linear):
    """torch.ao's dynamic int8 Linear with its activations quantized on all 8 bits instead of 7.

    torch.ao always asks fbgemm for `reduce_range`, because on AVX2 (and AVX-512 without VNNI) its kernel adds
    pairs of u8 x s8 products in 16 bits, which full-range activations overflow: there the error of a product of
    zero-centred rows grows several times (the tests measure it). VNNI's instruction sums into 32 bits, so on such
    CPUs the eighth bit halves the activations' rounding instead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)


class Float16Linear(nn.Module):
    """An nn.Linear whose weights fbgemm keeps packed in float16 and widens to fp32 as its product loads them.

    Whisper's checkpoints ship float16 weights, so the packing loses nothing: the product is fp32's arithmetic on
    the same numbers, reading half the bytes, and no activation is rounded. It calls fbgemm's operators directly
    rather than through `torch.ao`'s dynamic-quantization modules, which are deprecated.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float(), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)

    def unpacked(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) in fp32, as packed."""
        return torch.ops.quantized.linear_unpack_fp16(self.packed)


def quantize_fp16(model: Whisper, parts: tuple[str, ...] = ("encoder", "decoder")) -> Whisper:
    """Every nn.Linear of the model's `parts` a `Float16Linear`. One token's decoder step reads every weight once
    (the vocabulary's most of all), so bytes are where its products' time goes. A model loaded `lean` (float16 as
    stored) is packed module by module, each weight freed once packed, and only what is left (norms,
    convolutions, embeddings) widened to fp32: no fp32 copy of the whole model is ever made."""
    model = to_nn_linear(model)
    for name in parts:
        replace_linears(getattr(model, name), Float16Linear)
    return _half_embedding(model).float()


class HalfEmbedding(nn.Module):
    """The token embedding kept in float16, as the checkpoints ship it, each row looked up and then widened: exactly
    fp32's rows at half the memory (53 MB saved for base, 106 for medium). Held as the float16's bits in int16, so
    that the model's `.float()` cannot widen it back."""

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self.register_buffer("bits", embedding.weight.detach().half().view(torch.int16))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.bits.view(torch.float16)).float()


def _half_embedding(model: Whisper) -> Whisper:
    """Our fast decoder's embedding in float16 once its vocabulary projection holds a packed copy of its own (fp32's
    projection shares the embedding's weight, so it stays). Every checkpoint is float16, so nothing is rounded."""
    decoder = model.decoder
    if hasattr(decoder, "projection") and type(decoder.projection) is not nn.Linear and type(decoder.token_embedding) is nn.Embedding:
        decoder.token_embedding = HalfEmbedding(decoder.token_embedding)
        release_freed()
    return model


def bf16_encoder(model: Whisper) -> Whisper:
    """fast-fp16w's decoder, the encoder's products in bfloat16: on AMX and AVX-512-BF16 CPUs its 1500-row products
    run several times faster than in fp32 or fbgemm's int8; its activations keep 8 bits of mantissa."""
    model = quantize_fp16(model, parts=("decoder",))
    replace_linears(model.encoder, CastLinear)  # last: the fp32 widening above would undo it
    return model


def bf16_audio(model: Whisper) -> Whisper:
    """The fast decoder's cross-attention keys and values of each window kept and multiplied in bfloat16. A batched
    decoder step mostly reads them (float32 over 1500 frames in every layer), so on CPUs that multiply bfloat16
    natively half the bytes is most of a step's time; on AVX2 bfloat16 is converted in software and is slower."""
    for layer in model.decoder.layers:
        layer.cross_dtype = torch.bfloat16
    return model


class RowScaledLinear(nn.Module):
    """A dynamic int8 Linear whose input rows are quantized each on its own range, not on the batch's.

    fbgemm's dynamic Linear quantizes its input with one scale for the whole tensor, so in a batch of windows
    one window's large activation would coarsen the others' and change their words with the batch. Here each
    row is divided by its largest magnitude first (a row of 1 and -1 appended pins the tensor's range to
    [-1, 1]) and the output rows multiplied back: symmetric per-row scales, as CTranslate2 quantizes its inputs.
    Sequential decoding gives one window, which takes the plain path: that decoding is exactly what it was before
    batches existed. The batched pipeline (`batched`) row-scales one window too: a batch ends on its longest row
    alone, and a file or request may come alone or beside others, and on the plain path then a window's words
    changed with what it was decoded beside.
    """

    def __init__(self, linear: "nnqd.Linear", batched: bool = False):
        super().__init__()
        self.batched = batched
        weight, bias = linear.weight(), linear.bias()
        self.inner = type(linear)(linear.in_features, linear.out_features, bias_=False, dtype=torch.qint8)  # full range kept
        self.inner.set_weight_bias(weight, None)
        self.register_buffer("bias", bias if bias is not None else torch.zeros(linear.out_features))
        self.register_buffer("pins", torch.tensor([[1.0, -1.0] + [0.0] * (linear.in_features - 2)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if x.shape[0] == 1 and not self.batched:  # one window (its prompt, its audio's keys/values, its token): fbgemm's own scale, as before
            return self.inner(x) + self.bias
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min_(1e-30)
        y = self.inner(torch.cat([rows / scale, self.pins]))[:-1]
        return torch.addcmul(self.bias, y, scale).reshape(*x.shape[:-1], -1)


def _projected_forward(self: TextDecoder, x, xa, kv_cache=None):
    """TextDecoder.forward with the vocabulary projection done by a module, so quantizers can reach it."""
    offset = next(iter(kv_cache.values())).shape[1] if kv_cache else 0
    x = self.token_embedding(x) + self.positional_embedding[offset : offset + x.shape[-1]]
    x = x.to(xa.dtype)
    for block in self.blocks:
        x = block(x, xa, mask=self.mask, kv_cache=kv_cache)
    return self.vocab_projection(self.ln(x))[..., : self.token_embedding.num_embeddings].float()


def with_vocab_projection(model: Whisper, transform: Callable[[Whisper], Whisper], multiple: int = 1) -> Whisper:
    """Expose `x @ token_embedding.weight.T` (per token the largest matrix product) as an nn.Linear, transform.

    openai-whisper computes the logits with a bare matmul, so module-based quantization leaves it in fp32;
    for tiny and base it is most of the decoder's arithmetic per token. Kernels that need the output size to
    be a multiple of some block get zero rows appended, and the forward drops their logits again.
    """
    decoder = to_nn_linear(model).decoder
    weight = decoder.token_embedding.weight
    rows = -(-weight.shape[0] // multiple) * multiple
    decoder.vocab_projection = nn.Linear(weight.shape[1], rows, bias=False)
    if rows == weight.shape[0]:
        decoder.vocab_projection.weight = weight
    else:
        decoder.vocab_projection.weight = nn.Parameter(F.pad(weight.detach(), (0, 0, 0, rows - weight.shape[0])), requires_grad=False)
    model = transform(model)
    model.decoder.forward = types.MethodType(_projected_forward, model.decoder)
    return model


class CastLinear(nn.Module):
    """An nn.Linear kept in a lower dtype: inputs cast down, outputs back up, so the rest stays float32.

    The inner layer is a plain nn.Linear, so weight quantizers that need bfloat16 activations can replace it.
    """

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.inner = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, dtype=dtype)
        with torch.no_grad():
            self.inner.weight.copy_(linear.weight)
            if linear.bias is not None:
                self.inner.bias.copy_(linear.bias)
        self.inner.requires_grad_(False)

    def forward(self, x):
        return self.inner(x.to(self.inner.weight.dtype)).to(x.dtype)


def replace_linears(model: nn.Module, make: Callable[[nn.Module], nn.Module], kind: type = nn.Linear) -> nn.Module:
    """Every `kind` module of the model replaced by `make` of it, one at a time: only where each sits is held, so the
    module replaced is let go at once and its heap returned: packed weights are laid out otherwise than the ones
    freed, so glibc would otherwise keep both until the end."""
    places = [(module, name) for module in model.modules() for name, child in module.named_children() if type(child) is kind]
    for module, name in places:
        setattr(module, name, make(getattr(module, name)))
        release_freed()
    return model


def torchao_quantize(model: Whisper, config) -> Whisper:
    """torchao's quantize_ on every nn.Linear (the vocabulary projection included)."""
    from torchao.quantization import quantize_

    quantize_(model, config)
    return model


def _torchao_configs() -> dict:
    """name -> (config, needs bfloat16 activations, output rows a multiple of): the CPU variants of torchao."""
    import logging

    for noisy in ("torchao", "torch.utils._pytree"):  # CUDA-only extensions that fail to load on a CPU build
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import torchao.quantization as q
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return {
        "int8dq": (q.Int8DynamicActivationInt8WeightConfig(), False, 1),
        "int8wo": (q.Int8WeightOnlyConfig(), False, 1),
        "int4wo": (PrototypeInt4WeightOnlyConfig(group_size=128), True, 16),  # the CPU packing (Int4OpaqueTensor)
    }


def torchao_method(name: str, compile: bool = False) -> Callable[[Whisper], Whisper]:
    def prepare(model: Whisper) -> Whisper:
        config, bf16, multiple = _torchao_configs()[name]
        cast = (lambda m: replace_linears(m, CastLinear)) if bf16 else (lambda m: m)
        model = with_vocab_projection(model, lambda m: torchao_quantize(cast(m), config), multiple)
        return compiled(model) if compile else model

    return prepare


def compiled(model: Whisper) -> Whisper:
    """torch.compile of the encoder and the whole decoder (kv-cache hooks trace without graph breaks).

    Dynamo keys its caches on TextDecoder.forward's code, not on the model, so each compiled model starts
    from a reset; the first transcribe (the benchmark's warm-up) pays the compile time.
    """
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = 32
    model.encoder = torch.compile(model.encoder)
    model.decoder = torch.compile(model.decoder)
    return model
