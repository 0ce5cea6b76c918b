"""The registry: every way of running Whisper that the benchmark compares, one entry each.

openai-whisper's `Linear` subclasses `nn.Linear`, and `quantize_dynamic` matches module types exactly, so
quantizing the model as shipped silently changes nothing. The original experiment forked whisper to make the
layers plain `nn.Linear`; `to_nn_linear` does that edit at load time instead.
"""

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from whisper.model import Linear, Whisper

from . import UserError


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


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    prepare: Callable[[Whisper], Whisper]
    system: str = "whisper_cpu"
    baseline: str = "fp32"


REGISTRY = {
    m.name: m
    for m in [
        Method("fp32", "openai-whisper as shipped, float32 on the CPU", lambda model: model),
        Method("fp32-nn", "float32 after turning whisper's Linear into plain nn.Linear (the original's fork)", to_nn_linear),
        Method("qint8", "the original's torch dynamic int8 quantization of every nn.Linear", quantize_qint8),
    ]
}


def get(name: str) -> Method:
    if name not in REGISTRY:
        raise UserError(f"unknown method '{name}': use one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
