"""A faster decode for openai-whisper models: the same search, logit rules and results, less work per token.

openai-whisper's per-token loop is dominated by overhead, not arithmetic: forward hooks concatenate every
self-attention key and value onto a growing cache, q/k/v are three matrix products, every LayerNorm casts,
the vocabulary projection is an fp32 matmul that no module-based quantizer reaches, and the timestamp rules
walk each beam in Python. Here the search itself (greedy, sampling, beam search, ranking, fallback options)
stays openai-whisper's own `DecodingTask`; only the decoder forward and the logit rules are replaced:

- a static key/value cache written in place, beams reordered by one gather;
- cross-attention keys and values computed once per window, as one fused matrix product;
- q/k/v fused into one `nn.Linear`, the vocabulary projection an `nn.Linear`, so quantizers reach both;
- logits computed only for the positions the search reads (the no-speech position and the last token);
- the timestamp rules as batched tensor masks.

With float32 weights this produces openai-whisper's tokens (tested on real clips).
"""

import types
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from whisper.decoding import ApplyTimestampRules, BeamSearchDecoder, DecodingOptions, DecodingTask, GreedyDecoder, Inference, SuppressTokens
from whisper.model import TextDecoder, Whisper

from . import encoder
from .models import release_freed


def _fused(*linears: nn.Module) -> nn.Linear:
    """One nn.Linear computing several of whisper's Linears side by side (a missing bias counts as zero). A single
    Linear keeps its own tensors and several are joined in one copy, so that of the block being rebuilt a model being
    loaded holds at most two copies, never three."""
    def joined(tensors: list[Tensor]) -> nn.Parameter:
        return nn.Parameter(tensors[0] if len(tensors) == 1 else torch.cat(tensors), requires_grad=False)

    weights = [l.weight.detach() for l in linears]
    fused = nn.Linear(weights[0].shape[1], sum(w.shape[0] for w in weights), device="meta")  # no weights of its own
    fused.weight = joined(weights)
    fused.bias = joined([l.bias.detach() if l.bias is not None else weights[0].new_zeros(l.out_features) for l in linears])
    return fused


def _norm(ln: nn.LayerNorm) -> nn.LayerNorm:
    """A plain nn.LayerNorm: whisper's subclass casts to float and back on every call."""
    norm = nn.LayerNorm(ln.normalized_shape, eps=ln.eps, device=ln.weight.device)
    norm.load_state_dict(ln.state_dict())
    return norm.requires_grad_(False)


def _heads(x: Tensor, n_head: int) -> Tensor:
    """(batch, length, state) -> (batch, head, length, state per head)"""
    return x.view(*x.shape[:2], n_head, -1).transpose(1, 2)


def _attend(q: Tensor, keys_t: Tensor, values: Tensor, causal: bool = False, tap: nn.Module | None = None) -> Tensor:
    """Attention as two batched products: for one query row this beats the CPU flash kernel several times.

    `keys_t` arrive transposed, and they or `q` already scaled by 1/sqrt(state per head); `tap` is shown the scores.
    """
    weights = q @ keys_t
    if causal:
        weights = weights + torch.full(weights.shape[-2:], -np.inf, device=weights.device).triu_(1)
    if tap is not None:
        tap(weights)
    a = weights.softmax(dim=-1) @ values
    return a.transpose(1, 2).flatten(2)


class AlignmentTap(nn.Module):
    """Where openai-whisper's word timing hooks in: `find_alignment` registers a forward hook on each block's
    `cross_attn` and reads the last output, the cross-attention scores before the softmax. Only full passes
    (`FastTextDecoder.forward`, which word timing and language detection call) go through it, so the per-token
    loop pays nothing."""

    def forward(self, scores: Tensor) -> tuple[None, Tensor]:
        return None, scores.float()  # audio keys kept in bfloat16 give bfloat16 scores; the alignment works in fp32


class Layer(nn.Module):
    """One residual decoder block of whisper, reading and writing a static key/value cache."""

    def __init__(self, block):
        super().__init__()
        attn, cross = block.attn, block.cross_attn
        self.n_head = attn.n_head
        self.scale = (attn.out.in_features // attn.n_head) ** -0.5
        self.attn_ln, self.cross_ln, self.mlp_ln = _norm(block.attn_ln), _norm(block.cross_attn_ln), _norm(block.mlp_ln)
        self.qkv, self.out = _fused(attn.query, attn.key, attn.value), _fused(attn.out)
        self.cross_q, self.cross_kv, self.cross_out = _fused(cross.query), _fused(cross.key, cross.value), _fused(cross.out)
        self.fc1, self.fc2 = _fused(block.mlp[0]), _fused(block.mlp[2])
        self.cross_attn = AlignmentTap()
        self.cross_dtype: torch.dtype | None = None  # the audio's keys and values in another dtype (`quantize.bf16_audio`)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, offset: int, cross_k: Tensor, cross_v: Tensor, tap: bool = False) -> Tensor:
        """keys/values: this layer's cache, (batch, head, context, state per head), filled up to `offset`."""
        end = offset + x.shape[1]
        q, k, v = (_heads(t, self.n_head) for t in self.qkv(self.attn_ln(x)).chunk(3, dim=-1))
        keys[:, :, offset:end], values[:, :, offset:end] = k * self.scale, v
        # several tokens at once only happen on the first pass (offset 0), where the plain causal mask is right
        x = x + self.out(_attend(q, keys[:, :, :end].transpose(-1, -2), values[:, :, :end], causal=x.shape[1] > 1))
        x = x + self.cross_out(self.cross_attend(self.cross_q(self.cross_ln(x)) * self.scale, cross_k, cross_v, self.cross_attn if tap else None))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))

    def cross_attend(self, q: Tensor, keys_t: Tensor, values: Tensor, tap: nn.Module | None = None) -> Tensor:
        """Beams of one window share its keys: their queries go in as rows of one product, not separate ones.

        (With one row per window, as on full passes, the scores are (batch, head, token, frame), as whisper's.)"""
        windows, (batch, length, state) = keys_t.shape[0], q.shape
        q = q.view(windows, batch // windows * length, self.n_head, -1).transpose(1, 2)
        return _attend(q.to(keys_t.dtype), keys_t, values, tap=tap).reshape(batch, length, state).to(q.dtype)

    def audio(self, audio_features: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys (transposed) and values of the window, computed once, in `cross_dtype` where set. The
        scale goes on each token's query instead of on 1500 keys: 1/8 for Whisper's 64 wide heads, a power of two, so
        the scores are the same to the last bit."""
        k, v = (_heads(t, self.n_head) for t in self.cross_kv(audio_features).chunk(2, dim=-1))
        dtype = self.cross_dtype or audio_features.dtype
        return k.transpose(-1, -2).to(dtype).contiguous(), v.to(dtype).contiguous()


class Cache:
    """Self-attention keys/values for every layer, preallocated for every token the decode can hold, and the audio's."""

    def __init__(self, decoder: "FastTextDecoder", audio_features: Tensor, batch: int, length: int | None = None):
        """`length`: the most tokens this decode can hold (the prompt and what the search may add), the context's at most."""
        n_head = decoder.layers[0].n_head
        length = min(decoder.n_ctx, length or decoder.n_ctx)
        shape = (len(decoder.layers), 2, batch, n_head, length, audio_features.shape[-1] // n_head)
        self.kv = audio_features.new_empty(shape)
        self.cross = [layer.audio(audio_features) for layer in decoder.layers]  # beams and samples of a window share it
        self.offset = 0

    def reorder(self, source: list[int]) -> None:
        self.kv[:, :, :, :, : self.offset] = self.kv[:, :, source, :, : self.offset]

    def keep(self, rows: Tensor) -> None:
        """Only these rows (one per window) go on: the others have ended their text. Layer by layer, so that each
        layer's old audio keys and values are freed before the next layer's are copied."""
        self.kv = self.kv[:, :, rows]
        for i, (k, v) in enumerate(self.cross):
            self.cross[i] = (k[rows], v[rows])


class FastTextDecoder(nn.Module):
    """whisper's TextDecoder rebuilt from its weights for `decode`; `forward` keeps the usual signature.

    `decoder`'s blocks are taken from it as they are rebuilt, each let go once its weights are copied, so a model
    being loaded never holds two decoders (medium's are 0.8 GB in float16)."""

    def __init__(self, decoder: TextDecoder):
        super().__init__()
        self.token_embedding = decoder.token_embedding
        self.positional_embedding = decoder.positional_embedding
        self.n_ctx = decoder.positional_embedding.shape[0]
        self.layers = nn.ModuleList()
        for i, block in enumerate(decoder.blocks):
            self.layers.append(Layer(block))
            decoder.blocks[i] = nn.Identity()
            release_freed()  # the block's heap, before the next block's copies are made
        self.ln = _norm(decoder.ln)
        self.projection = nn.Linear(*decoder.token_embedding.weight.shape[::-1], bias=False, device="meta")  # its weight is the embedding's
        self.projection.weight = decoder.token_embedding.weight
        self.building = False

    @property
    def blocks(self) -> tuple | nn.ModuleList:
        """What openai-whisper's word timing hooks (`block.cross_attn`). Hidden while a DecodingTask is built:
        the kv-cache inference it makes first (then replaced by ours) looks for whisper's attention modules."""
        return () if self.building else self.layers

    def step(self, tokens: Tensor, cache: Cache, positions: list[int], tap: bool = False) -> Tensor:
        """Logits at `positions` of `tokens`, which continue what the cache holds; `tap`: show the alignment taps."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[cache.offset : cache.offset + length]
        for layer, (keys, values), (cross_k, cross_v) in zip(self.layers, cache.kv, cache.cross):
            x = layer(x, keys, values, cache.offset, cross_k, cross_v, tap)
        cache.offset += length
        return self.projection(self.ln(x[:, positions]))

    def forward(self, x: Tensor, xa: Tensor, kv_cache: dict | None = None) -> Tensor:
        """All positions' logits without a cache kept, as language detection and word timing call it."""
        return self.step(x, Cache(self, xa, x.shape[0], x.shape[1]), list(range(x.shape[1])), tap=True)


class FastInference(Inference):
    def __init__(self, decoder: FastTextDecoder, initial_token_length: int, sample_len: int):
        """The cache holds the prompt and `sample_len` tokens: a batch of windows keeps no unreachable context."""
        self.decoder, self.initial_token_length, self.length = decoder, initial_token_length, initial_token_length + sample_len
        self.cache: Cache | None = None

    def logits(self, tokens: Tensor, audio_features: Tensor, positions: list[int] = [-1]) -> Tensor:
        if self.cache is None:
            self.cache = Cache(self.decoder, audio_features, tokens.shape[0], self.length)
        if tokens.shape[-1] > self.initial_token_length:
            tokens = tokens[:, -1:]
        return self.decoder.step(tokens, self.cache, positions)

    def rearrange_kv_cache(self, source_indices) -> None:
        if source_indices != list(range(len(source_indices))):
            self.cache.reorder(source_indices)

    def cleanup_caching(self) -> None:
        self.cache = None


class MaskTokens(SuppressTokens):
    def __init__(self, suppress_tokens):
        super().__init__(suppress_tokens)
        self.index = torch.tensor(self.suppress_tokens, dtype=torch.long)

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        logits.index_fill_(1, self.index.to(logits.device), -np.inf)


class TimestampRules(ApplyTimestampRules):
    """openai-whisper's timestamp rules for all beams at once, as masks instead of a Python loop per beam."""

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        begin, eot = self.tokenizer.timestamp_begin, self.tokenizer.eot
        text, stamps = logits[:, :begin], logits[:, begin:]  # views: masks fill them in place
        if self.tokenizer.no_timestamps is not None:
            logits[:, self.tokenizer.no_timestamps] = -np.inf
        sampled = tokens[:, self.sample_begin :]
        if sampled.shape[1]:
            stamp = sampled >= begin
            last = stamp[:, -1]
            penultimate = stamp[:, -2] if sampled.shape[1] >= 2 else torch.ones_like(last)
            closing = last & ~penultimate  # a timestamp just opened a pair: the next one must close it
            stamps.masked_fill_((last & penultimate)[:, None], -np.inf)
            logits[:, :eot].masked_fill_(closing[:, None], -np.inf)
            where = torch.where(stamp, torch.arange(sampled.shape[1], device=tokens.device), -1).amax(dim=1)
            floor = sampled.gather(1, where.clamp(min=0)[:, None]) + (~closing).long()[:, None]
            stamps.masked_fill_((where >= 0)[:, None] & (torch.arange(begin, logits.shape[-1], device=logits.device) < floor), -np.inf)
        else:
            text.fill_(-np.inf)
            if self.max_initial_timestamp_index is not None:
                logits[:, begin + self.max_initial_timestamp_index + 1 :] = -np.inf
        # openai-whisper compares log-softmaxes, which shift a row's logits all by one amount: the logits compare alike
        text.masked_fill_((stamps.float().logsumexp(dim=-1) > text.float().amax(dim=-1))[:, None], -np.inf)


def _faster(rule):
    if type(rule) is SuppressTokens:
        return MaskTokens(rule.suppress_tokens)
    if type(rule) is ApplyTimestampRules:
        return TimestampRules(rule.tokenizer, rule.sample_begin, rule.max_initial_timestamp_index)
    return rule


class FastDecodingTask(DecodingTask):
    """openai-whisper's DecodingTask with the fast decoder forward and batched logit rules."""

    def __init__(self, model: Whisper, options: DecodingOptions):
        model.decoder.building = True
        try:
            super().__init__(model, options)
        finally:
            model.decoder.building = False
        self.inference = FastInference(model.decoder, len(self.initial_tokens), self.sample_len)
        if isinstance(self.decoder, BeamSearchDecoder):
            self.decoder.inference = self.inference
        self.logit_filters = [_faster(rule) for rule in self.logit_filters]

    def _get_audio_features(self, mel: Tensor) -> Tensor:
        """One row per beam or sample, as openai-whisper's `run` reads them after its loop (every `n_group`-th: with
        one row per window, a batch of windows with beams or best-of failed its assertion); the decoder is given one
        per window, which its beams share (`_main_loop`)."""
        features = super()._get_audio_features(mel)
        return features.repeat_interleave(self.n_group, dim=0) if self.n_group > 1 else features

    def _detect_language(self, audio_features: Tensor, tokens: Tensor):
        return super()._detect_language(audio_features[:: self.n_group], tokens)

    def _main_loop(self, audio_features: Tensor, tokens: Tensor):
        """openai-whisper's loop; with one row per window, rows that ended their text leave the batch (and the cache)
        once a quarter of it has ended, instead of being decoded on, and come back padded with end-of-text as its
        greedy decoder leaves them."""
        audio_features = audio_features[:: self.n_group]  # one row per window (`Cache.cross`)
        sum_logprobs = torch.zeros(tokens.shape[0], device=audio_features.device)
        no_speech_probs = [np.nan] * tokens.shape[0]
        shrink = isinstance(self.decoder, GreedyDecoder) and self.n_group == 1 and tokens.shape[0] > 1
        rows, ended = torch.arange(tokens.shape[0], device=tokens.device), {}
        try:
            for i in range(self.sample_len):
                if i == 0:
                    first = self.inference.logits(tokens, audio_features, [self.sot_index, -1])
                    if self.tokenizer.no_speech is not None:
                        no_speech_probs = first[:, 0].float().softmax(dim=-1)[:, self.tokenizer.no_speech].tolist()
                    logits = first[:, 1]
                else:
                    logits = self.inference.logits(tokens, audio_features)[:, -1]
                for logit_filter in self.logit_filters:
                    logit_filter.apply(logits, tokens)
                tokens, completed = self.decoder.update(tokens, logits, sum_logprobs)
                if completed or tokens.shape[-1] > self.n_ctx:
                    break
                if shrink and 4 * (done := tokens[:, -1] == self.tokenizer.eot).sum() >= len(rows):  # copies amortized
                    ended |= {rows[j].item(): (tokens[j], sum_logprobs[j]) for j in done.nonzero()[:, 0].tolist()}
                    tokens, sum_logprobs, rows = tokens[~done], sum_logprobs[~done], rows[~done]
                    self.inference.cache.keep(~done)
        finally:
            self.inference.cleanup_caching()
        return (*self._restore(tokens, sum_logprobs, rows, ended), no_speech_probs) if ended else (tokens, sum_logprobs, no_speech_probs)

    def _restore(self, tokens: Tensor, sum_logprobs: Tensor, rows: Tensor, ended: dict) -> tuple[Tensor, Tensor]:
        """All rows again, in their order, the ended ones padded with end-of-text."""
        full = tokens.new_full((len(rows) + len(ended), tokens.shape[1]), self.tokenizer.eot)
        logprobs = sum_logprobs.new_zeros(full.shape[0])
        full[rows], logprobs[rows] = tokens, sum_logprobs
        for row, (done, logprob) in ended.items():
            full[row, : len(done)], logprobs[row] = done, logprob
        return full, logprobs


@torch.no_grad()
def decode(model: Whisper, mel: Tensor, options: DecodingOptions = DecodingOptions(), **kwargs):
    """Drop-in for `whisper.decode` on a model whose decoder is a FastTextDecoder."""
    if single := mel.ndim == 2:
        mel = mel.unsqueeze(0)
    if kwargs:
        options = replace(options, **kwargs)
    result = FastDecodingTask(model, options).run(mel)
    return result[0] if single else result


def fast(model: Whisper) -> Whisper:
    """The model with the fast decoder, and the encoder's attention on this CPU's faster kernel (`encoder`);
    `model.transcribe` and `model.decode` use them from then on."""
    encoder.fast(model)
    model.decoder = FastTextDecoder(model.decoder)
    model.decode = types.MethodType(decode, model)
    return model
