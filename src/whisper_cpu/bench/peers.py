"""The systems a user would pick instead, run through the same contract on the same weights, and registered.

Decoding must match ours to compare fairly: faster-whisper's defaults differ from openai-whisper's (beam 5,
VAD options), which is the most common cause of wrong comparisons. Both peers get the `DecodeOptions` our
transcriber runs: the same beam width, the same temperature fallback and thresholds (whisper.cpp judges
repetition by entropy, not compression ratio: its threshold 2.4 is its own default), the same conditioning on
previous text, no VAD, timestamps on; the segment generator is consumed inside the timed region.
"""

import re
from dataclasses import asdict, replace
import time

import numpy as np

from .. import UserError, audio, models, registry
from .. import ct2
from ..registry import Entry, System, register
from ..runner import DecodeOptions, Runner, Transcript, fallback_windows, samples_of

FASTER_WHISPER = System("faster-whisper", "tab:orange")
WHISPER_CPP = System("whisper.cpp", "tab:green")


class FasterWhisperRunner(Runner):
    def __init__(self, name: str, compute_type: str, threads: int):
        import ctranslate2
        from faster_whisper import WhisperModel

        folder = ct2.model_dir(name)
        self.model = WhisperModel(str(folder), device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=1)
        self.weights = [folder / "model.bin"]
        self.multilingual = self.model.model.is_multilingual
        self.build = f"ctranslate2 {ctranslate2.__version__}, compute_type {compute_type}"  # recorded with its rows

    def transcribe(self, source, options: DecodeOptions, progress: bool = False) -> Transcript:
        segments, info = self.model.transcribe(
            samples_of(source), language=options.language, task=options.task, beam_size=options.beam_size or 1,
            best_of=options.best_of or 1, temperature=list(options.temperature),
            compression_ratio_threshold=options.compression_ratio_threshold, log_prob_threshold=options.logprob_threshold,
            no_speech_threshold=options.no_speech_threshold, condition_on_previous_text=options.condition_on_previous_text,
            initial_prompt=options.initial_prompt, vad_filter=False, without_timestamps=False, word_timestamps=options.word_timestamps,
        )
        segments = [{"seek": s.seek, "start": s.start, "end": s.end, "text": s.text, "tokens": s.tokens,
                     "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                     **({"words": [asdict(w) for w in s.words]} if s.words else {})} for s in segments]
        return Transcript("".join(s["text"] for s in segments).strip(), segments, info.language, fallback_windows(segments))

    def split_times(self, samples, options: DecodeOptions, forced: int | None = None) -> tuple[float, float, int]:
        """`forced`: as ours, greedy, end of text suppressed, no timestamps; CTranslate2 samples at most `max_length // 2`
        tokens (openai-whisper's `n_text_ctx // 2` default, seen here), so twice the steps are asked for."""
        from faster_whisper.tokenizer import Tokenizer

        window = np.pad(samples[: audio.SAMPLE_RATE * 30], (0, max(0, audio.SAMPLE_RATE * 30 - len(samples))))
        features = self.model.feature_extractor(window)[:, : self.model.feature_extractor.nb_max_frames]
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task=options.task, language=options.language)
        prompt = [*tokenizer.sot_sequence, *([tokenizer.no_timestamps] if forced else [])]
        search = (dict(beam_size=1, max_length=2 * forced, suppress_tokens=[-1, tokenizer.eot]) if forced else
                  dict(beam_size=options.beam_size or 1, max_length=448, suppress_tokens=[-1]))
        start = time.perf_counter()
        encoded = self.model.encode(features)
        encoder_s = time.perf_counter() - start
        start = time.perf_counter()
        (result,) = self.model.model.generate(encoded, [prompt], suppress_blank=True, **search)
        decoder_s, tokens = time.perf_counter() - start, len(result.sequences_ids[0])
        if forced and tokens != forced:
            raise RuntimeError(f"faster-whisper's forced decoding ran {tokens} steps, not {forced}")
        return encoder_s, decoder_s, tokens


class FasterWhisperBatchedRunner(FasterWhisperRunner):
    """faster-whisper's `BatchedInferencePipeline`: its Silero VAD chunks decoded in batches of `batch_size`.

    It has no temperature fallback and no conditioning (it ignores those options); timestamps are asked for,
    as ours produce them, where its own default leaves them out."""

    def __init__(self, name: str, compute_type: str, threads: int, batch_size: int = 8):
        from faster_whisper import BatchedInferencePipeline

        super().__init__(name, compute_type, threads)
        self.pipeline, self.batch_size = BatchedInferencePipeline(self.model), batch_size

    def transcribe(self, source, options: DecodeOptions, progress: bool = False) -> Transcript:
        segments, info = self.pipeline.transcribe(
            samples_of(source), language=options.language, task=options.task, beam_size=options.beam_size or 1,
            initial_prompt=options.initial_prompt, without_timestamps=False, word_timestamps=options.word_timestamps,
            batch_size=self.batch_size, log_progress=progress)
        segments = [{"seek": s.seek, "start": s.start, "end": s.end, "text": s.text, "tokens": s.tokens,
                     **({"words": [asdict(w) for w in s.words]} if s.words else {})} for s in segments]
        return Transcript("".join(s["text"] for s in segments).strip(), segments, info.language)


UNFORCED = ("whisper.cpp stops at its own end of text; suppressing it needs a Python logits-filter callback on every token "
            "(pywhispercpp's binding), which would add per-token Python work to the time measured, so it is not timed on forced steps")


def whispercpp_missing(ftype: str = "f16") -> str | None:
    """Why whisper.cpp (with ggml files of `ftype`) cannot run here, if it cannot: `make whispercpp` builds it and checks
    that q8_0 transcribes correctly on this CPU (`native`)."""
    from . import native

    try:
        import _pywhispercpp  # noqa: F401
    except ImportError as error:
        return f"pywhispercpp is not installed or does not load ({error}): run `make whispercpp`"
    built = native.record()
    if ftype.startswith("q8_0") and built.get("q8_0_works") is False:
        return f"whisper.cpp's q8_0 gives wrong text or crashes on this CPU with every build tried ({'; '.join(built['failures'])})"
    return None


class WhisperCppRunner(Runner):
    """whisper.cpp (through pywhispercpp, compiled natively) on ggml files our code writes from the same checkpoint."""

    def __init__(self, name: str, ftype: str, threads: int):
        from . import ggml

        from . import native

        self.path, self.threads = ggml.model_file(name, ftype), threads
        built = native.record()
        self.build = f"{built.get('build', 'unrecorded build')}: {native.system_info()}"  # recorded with its rows
        self.batch_size: int | None = None  # `whisper_full_parallel`: equal parts of the audio side by side, at most one per thread
        self.weights = [self.path]
        self.multilingual = models.multilingual(name)
        self._models: dict[tuple, object] = {}

    @property
    def processors(self) -> int | None:
        return min(self.batch_size, self.threads) if self.batch_size else None

    def _model(self, options: DecodeOptions):
        """One whisper.cpp context per set of options (its parameters are fixed when the context is made)."""
        key = (options.__class__(**{**vars(options), "language": None}), self.processors)
        if key not in self._models:
            from pywhispercpp.model import Model

            search = ({"params_sampling_strategy": 1, "beam_search": {"beam_size": options.beam_size, "patience": -1.0}} if options.beam_size
                      else {"greedy": {"best_of": options.best_of or 1}})  # its own default samples 5 at each fallback; ours 1
            prompt = {"initial_prompt": options.initial_prompt} if options.initial_prompt else {}  # None is refused
            steps = np.diff(options.temperature)
            self._models[key] = Model(
                str(self.path), n_threads=self.threads // (self.processors or 1), temperature=options.temperature[0],
                temperature_inc=float(steps[0]) if len(steps) else 0.0, no_context=not options.condition_on_previous_text,
                logprob_thold=options.logprob_threshold if options.logprob_threshold is not None else -np.inf,
                no_speech_thold=options.no_speech_threshold if options.no_speech_threshold is not None else 1.0,
                print_progress=False, print_realtime=False, redirect_whispercpp_logs_to=None, **search, **prompt)
        return self._models[key]

    def transcribe(self, source, options: DecodeOptions, progress: bool = False) -> Transcript:
        import _pywhispercpp as pw

        if options.word_timestamps:
            raise UserError("word timestamps are not wired for the whisper.cpp peer")
        model = self._model(options)
        segments = model.transcribe(samples_of(source), language=options.language or "auto", n_processors=self.processors)
        tokens = [[0] * pw.whisper_full_n_tokens(model._ctx, i) for i in range(len(segments))]
        segments = [{"start": s.t0 / 100, "end": s.t1 / 100, "text": s.text, "tokens": t} for s, t in zip(segments, tokens)]
        return Transcript("".join(s["text"] for s in segments).strip(), segments, options.language or "")

    def split_times(self, samples, options: DecodeOptions) -> tuple[float, float, int]:
        """whisper.cpp's own timings of one 30 s window at temperature 0 and unprompted, as ours and faster-whisper's are
        split (its fallback decoded the window again at random, and a context prompts each call with the text of the
        one before, so a repeat's tokens were not another's): one encoder pass (its seek may go on to the window's tail),
        and decode + batched decode + prompt over their tokens."""
        import _pywhispercpp as pw

        model = self._model(replace(options, temperature=(0.0,), condition_on_previous_text=False))
        pw.whisper_reset_timings(model._ctx)
        model.transcribe(samples[: audio.SAMPLE_RATE * 30], language=options.language or "auto")
        lines: list[str] = []
        pw.whisper_log_set(lambda level, text: lines.append(text))
        try:
            pw.whisper_print_timings(model._ctx)
        finally:
            pw.whisper_log_set(None)  # a Python callback left set aborts the interpreter at exit
        found = {k: (float(ms), int(runs or 0)) for k, ms, runs in re.findall(r"(\w+) time = +([\d.]+) ms(?: / +(\d+) runs)?", "".join(lines))}
        decoder = [found.get(k, (0.0, 0)) for k in ("decode", "batchd", "prompt")]
        encode_ms, encodes = found["encode"]
        return encode_ms / 1000 / max(1, encodes), sum(ms for ms, _ in decoder) / 1000, found.get("decode", (0, 0))[1] + found.get("batchd", (0, 0))[1]


for _entry in [
    Entry("faster-whisper-fp32", FASTER_WHISPER, "faster-whisper (CTranslate2) compute_type float32, same weights",
          lambda model, threads: FasterWhisperRunner(model, "float32", threads)),
    Entry("faster-whisper-int8", FASTER_WHISPER, "faster-whisper (CTranslate2) compute_type int8, same weights",
          lambda model, threads: FasterWhisperRunner(model, "int8", threads), arithmetic="int8",
          tags=frozenset({registry.SCALING, registry.BEAM, registry.LONGFORM, registry.SIZES})),
    *(
        Entry(f"whisper.cpp-{ftype}", WHISPER_CPP, f"whisper.cpp (pywhispercpp built natively), ggml {ftype} written from the same checkpoint",
              lambda model, threads, ftype=ftype: WhisperCppRunner(model, ftype, threads), unavailable=lambda ftype=ftype: whispercpp_missing(ftype),
              unforced=UNFORCED, arithmetic="fp32" if ftype == "f16" else "int8",
              tags=frozenset({registry.SCALING, registry.BEAM}) if ftype == "q8_0" else frozenset())
        for ftype in ("f16", "q8_0", "q5_0")
    ),
    *(
        Entry(f"faster-whisper-{kind}-batched", FASTER_WHISPER, f"faster-whisper's BatchedInferencePipeline (its Silero VAD, no fallback), {kind}",
              lambda model, threads, compute=compute: FasterWhisperBatchedRunner(model, compute, threads), arithmetic=kind,
              tags=frozenset({registry.BATCHED, registry.LONGFORM} | ({registry.SWEPT} if kind == "int8" else set())))
        for kind, compute in (("int8", "int8"), ("fp32", "float32"))
    ),
    Entry("whisper.cpp-q8_0-parallel", WHISPER_CPP, "whisper.cpp's whisper_full_parallel: the audio cut in equal parts (batch size, at most "
          "one per thread), one processor each, the threads shared", lambda model, threads: WhisperCppRunner(model, "q8_0", threads),
          unavailable=lambda: whispercpp_missing("q8_0"), unforced=UNFORCED, arithmetic="int8", tags=frozenset({registry.BATCHED})),
]:
    register(_entry)
