"""Timing harness: the full transcribe a user runs, per model x method, medians over repeats, honest on shared CPUs.

Each timed repeat is the `Runner.transcribe` that `whisper-cpu transcribe` calls, with the same decoding
options (temperature fallback, conditioning on previous text): decode the file, mel, encoder, decoder. Beside
it the encoder and the decoder are timed alone on the first 30 s window, so the share of the per-token loop is
visible. Other processes' CPU time during each repeat is read from /proc/stat; repeats taken under contention
are rerun, and what was seen is recorded in the row.
"""

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from .. import UserError, machine, models, pipeline, registry
from ..audio import SAMPLE_RATE, load
from ..runner import FORCED, DecodeOptions, spoken
from . import inputs, isolate, peak, results
from .accuracy import seed

CONTENDED = 0.10  # share of the machine's CPU time used by others above which a repeat is rerun
BEAM = 5  # the beam width users of openai-whisper's CLI and of faster-whisper get by default


class Interrupted(Exception):
    """Ctrl-C during a run: carries the run to resume."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


def _busy_seconds() -> float:
    """CPU seconds all processes have spent busy (steal included: a hypervisor taking our cores is contention)."""
    values = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Probe:
    """Wall time of a block and the CPU seconds that other processes used meanwhile."""

    wall_s: float = 0.0
    other_cpu_s: float = 0.0

    def __enter__(self):
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(self, *exc):
        wall, busy, own = self._start
        self.wall_s = time.perf_counter() - wall
        self.other_cpu_s = max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own))

    def contended(self) -> bool:
        return self.other_cpu_s > CONTENDED * self.wall_s * (os.cpu_count() or 1) + 0.05


@dataclass(frozen=True)
class Options:
    models: tuple[str, ...] = ("tiny.en", "base")
    methods: tuple[str, ...] = field(default_factory=lambda: registry.tagged(registry.BENCH))
    repeats: int = 5
    decoding: DecodeOptions = DecodeOptions()
    threads: int = field(default_factory=machine.default_threads)
    retries: int = 3  # reruns of a repeat taken while other processes used the CPU, before it is kept marked contended
    warmup: bool = True
    batch_sizes: tuple[int, ...] = ()  # for batched methods (default: pipeline.BATCH)
    manifest: Path | None = None  # the clips of the accuracy gates and long recordings (default: the dev manifest)
    forced: int | None = None  # time the window alone with exactly this many decoder steps (any weights, random ones too)
    memory: bool = True  # peak memory of each configuration, each in a process of its own
    timeout: float = isolate.TIMEOUT  # seconds one configuration may take (in its own process) before it counts as hung

    @property
    def tag(self) -> str:
        """The `decoding` column: the options' tag, or the forced step count."""
        return f"forced{self.forced}" if self.forced else self.decoding.tag


def plan(opts: Options) -> tuple[list[tuple[str, str]], list[str]]:
    """(model, method) pairs that can run here, and a note for each method that cannot."""
    entries = [registry.get(name) for name in opts.methods]
    reasons = {e.name: e.unavailable() or (e.unforced if opts.forced else None) for e in entries}
    notes = [f"note: {name} skipped: {reason}" for name, reason in reasons.items() if reason]
    return [(m, e.name) for m in opts.models for e in entries if not reasons[e.name]], notes


def check_resume(run_id: str | None) -> None:
    if run_id is not None and run_id not in results.run_ids():
        raise UserError(f"no run '{run_id}' in {results.TABLES} under the workspace's results: nothing to resume")


def _done(run_id: str, decoding: str) -> dict[tuple, int]:
    rows = results.read("timings")
    if rows.empty:
        return {}
    rows = rows[(rows.run_id == run_id) & (rows.decoding == decoding) & (rows.status != results.FAILED)]
    return rows.groupby(["model", "weights", "method", "audio_id", "threads", "beam_size", "batch_size"]).size().to_dict()


def window_gflop(model: str, window_tokens: int, beam: int) -> tuple[float, float]:
    """The matrix-product work of the encoder and of the decoder on one window, recorded with each row."""
    dims = models.dims(model)
    return round(peak.encoder_flops(dims) / 1e9, 3), round(peak.decoder_flops(dims, window_tokens, beam) / 1e9, 4)


def run(opts: Options, clip: inputs.Input, run_id: str | None = None, log=print) -> str:
    """Time every configuration of the plan on one input; `run_id` of an interrupted run resumes it."""
    run_id = run_id or results.new_run_id()
    try:
        _run(opts, clip, run_id, log)
    except KeyboardInterrupt:
        raise Interrupted(run_id) from None
    return run_id


def _run(opts: Options, clip: inputs.Input, run_id: str, log) -> None:
    """Each model x method in a child process of its own (`isolate`): a crash, hang or error is recorded as a failed row
    with its reason, and the run goes on."""
    pairs, notes = plan(opts)
    for note in notes:
        log(note)
    if not clip.real:
        log(f"note: no real speech here; timing the synthesized clip {clip.id} instead")
    done = _done(run_id, opts.tag)
    sizes = {name: (opts.batch_sizes or (pipeline.BATCH,)) if registry.get(name).batched else (1,) for _, name in pairs}
    bar = tqdm(total=sum(len(sizes[name]) for _, name in pairs) * opts.repeats, desc=f"bench {run_id}", unit="run")
    for model_name, method_name in pairs:
        model, weights = models.split(model_name)
        key = (model, weights, method_name, clip.id, opts.threads, opts.decoding.beam_size or 1)
        finished = {size: min(done.get((*key, size), 0), opts.repeats) for size in sizes[method_name]}
        bar.update(sum(finished.values()))
        if all(n == opts.repeats for n in finished.values()):
            continue
        label = f"{model_name} {method_name}"
        bar.set_postfix_str(label)
        spec = {"opts": opts, "clip": clip, "run_id": run_id, "model": model_name, "method": method_name, "finished": finished}
        why = isolate.call("whisper_cpu.bench.harness:time_config", spec, opts.timeout, bar.update,
                           lambda text: bar.set_postfix_str(f"{label}: {text}"))
        if why:
            bar.write(f"note: {label} failed: {why}")
            now = _done(run_id, opts.tag)
            left = [size for size in sizes[method_name] if now.get((*key, size), 0) < opts.repeats]
            results.append("timings", [{**_row(opts, clip, run_id, model_name, method_name, size, results.environment(opts.threads)),
                                        "timestamp": results.now(), "status": results.FAILED, "error": why} for size in left])
            bar.update(sum(opts.repeats - min(now.get((*key, size), 0), opts.repeats) for size in left))
    bar.close()


def _row(opts: Options, clip: inputs.Input, run_id: str, model_name: str, method_name: str, batch_size: int, env: dict) -> dict:
    """What identifies a timing row: the run, the machine, the configuration and the input."""
    entry, (model, weights) = registry.get(method_name), models.split(model_name)
    return {"run_id": run_id, **env, "system": entry.system.name, "model": model, "weights": weights, "method": method_name,
            "arithmetic": entry.arithmetic, "device": entry.device, "beam_size": opts.decoding.beam_size or 1, "decoding": opts.tag,
            "batch_size": batch_size, "audio_id": clip.id, "audio_s": round(clip.duration_s, 3)}


def time_config(spec: dict) -> None:
    """In a child: load one model x method and time its missing repeats at each batch size, a row per repeat."""
    opts, clip = spec["opts"], spec["clip"]
    torch.set_num_threads(opts.threads)
    entry = registry.get(spec["method"])
    start = time.perf_counter()
    runner = entry.load(spec["model"], opts.threads)
    load_s = round(time.perf_counter() - start, 4)
    samples = load(clip.path)
    decoding = replace(opts.decoding, language=spoken(runner, clip.language))
    env = results.environment(opts.threads)
    for size, finished in spec["finished"].items():
        if entry.batched:
            runner.batch_size = size
        row = {**_row(opts, clip, spec["run_id"], spec["model"], spec["method"], size, env), "load_s": load_s,
               "build": getattr(runner, "build", "")}  # a peer's build options (whisper.cpp's compiled features)
        _time(opts, runner, clip, samples, decoding, finished, row)


def _time(opts: Options, runner, clip: inputs.Input, samples, decoding: DecodeOptions, finished: int, row: dict) -> None:
    """The repeats of one configuration after a warm-up, each rerun (at most `opts.retries` times) while other processes
    took the CPU, then kept and marked contended. A repeat is the transcribe users run, or with `forced` the window
    alone, mel to last forced step: the same work for every method and size, whatever the weights."""
    if opts.forced:
        def once():
            encoder_s, decoder_s, tokens = runner.split_times(samples, decoding, forced=opts.forced)
            return encoder_s, decoder_s, tokens, tokens, None, ""
    else:
        def once():
            transcript = runner.transcribe(clip.path, decoding)
            return (None, None, None, transcript.tokens, transcript.fallbacks, transcript.text)

    if opts.warmup and finished < opts.repeats:
        if opts.forced:
            once()
        else:
            runner.transcribe(samples[: 30 * SAMPLE_RATE], decoding)
    for repeat in range(finished, opts.repeats):
        for attempt in range(1, opts.retries + 2):
            seed(clip.id)  # each repeat samples any fallback as the gates do: the same work every time
            with Probe() as probe:
                encoder_s, decoder_s, window_tokens, tokens, fallbacks, text = once()
            if not probe.contended():
                break
            share = probe.other_cpu_s / (probe.wall_s * (os.cpu_count() or 1))
            isolate.report(note=f"other programs took {share:.0%} of the CPU: "
                                + (f"retry {attempt} of {opts.retries}" if attempt <= opts.retries else "kept, marked contended"))
        if encoder_s is None:
            encoder_s, decoder_s, window_tokens = runner.split_times(samples, decoding)
        encoder_gflop, decoder_gflop = window_gflop(_spec(row), window_tokens, row["beam_size"])
        results.append("timings", [{
            **row, "timestamp": results.now(), "repeat": repeat, "status": "ok",
            "wall_s": round(probe.wall_s, 4), "encoder_s": round(encoder_s, 4), "decoder_s": round(decoder_s, 4),
            "window_tokens": window_tokens, "encoder_gflop": encoder_gflop, "decoder_gflop": decoder_gflop,
            "tokens": tokens, **({} if opts.forced else {"fallbacks": fallbacks}),
            "other_cpu_s": round(probe.other_cpu_s, 3), "contended": probe.contended(), "attempts": attempt, "transcript": text,
        }])
        isolate.report(1)


def _spec(row: dict) -> str:
    return f"{row['model']}:{models.RANDOM}" if row["weights"] == models.RANDOM else row["model"]


def _status_mb(field: str) -> float:
    line = next(l for l in open("/proc/self/status") if l.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def memory_config(spec: dict) -> None:
    """In a fresh child: resident memory before and after loading, and the peak over one transcribe (over one forced
    window with `forced`), appended as a row."""
    opts, clip, model_name, method_name, size = spec["opts"], spec["clip"], spec["model"], spec["method"], spec["batch_size"]
    torch.set_num_threads(opts.threads)
    start = _status_mb("VmRSS")
    runner = registry.get(method_name).load(model_name, opts.threads)
    if registry.get(method_name).batched:
        runner.batch_size = size
    loaded = _status_mb("VmRSS")
    options = DecodeOptions(language=spoken(runner, clip.language))
    if opts.forced:
        runner.split_times(load(clip.path), options, forced=opts.forced)
    else:
        runner.transcribe(clip.path, options)
    model, weights = models.split(model_name)
    results.append("memory", [{
        "run_id": spec["run_id"], "timestamp": results.now(), **results.environment(opts.threads), "model": model, "weights": weights,
        "method": method_name, "system": registry.get(method_name).system.name, "audio_id": clip.id, "decoding": opts.tag,
        "batch_size": size, "rss_start_mb": round(start, 1), "model_rss_mb": round(loaded - start, 1),
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "weights_disk_mb": round(sum(Path(p).stat().st_size for p in runner.weights) / 2**20, 1),
    }])


def measure_memory(opts: Options, clip: inputs.Input, run_id: str) -> None:
    """Peak memory per configuration, each in its own process so one model's memory never hides another's."""
    pairs, _ = plan(opts)
    configs = [(m, k, b) for m, k in pairs for b in ((opts.batch_sizes or (pipeline.BATCH,)) if registry.get(k).batched else (1,))]
    rows = results.read("memory")
    mine = rows[(rows.run_id == run_id) & (rows.audio_id == clip.id) & (rows.decoding == opts.tag)] if len(rows) else rows
    done = {(_spec(r), r["method"], r["batch_size"]) for r in mine.to_dict("records")}
    for model_name, method_name, size in tqdm([c for c in configs if c not in done], desc="memory", unit="config"):
        spec = {"opts": opts, "clip": clip, "run_id": run_id, "model": model_name, "method": method_name, "batch_size": size}
        if why := isolate.call("whisper_cpu.bench.harness:memory_config", spec, opts.timeout):
            tqdm.write(f"note: memory of {model_name} {method_name} not measured: {why}")


SWEEP = (1, 2, 4, 8, 16)  # batch sizes of the sweep on the first long recording


def fewer_threads(threads: int) -> tuple[int, ...]:
    """The thread counts a scaling check adds below `threads`: powers of two, so a many-core machine stays a few runs."""
    return tuple(2 ** i for i in range(threads.bit_length()) if 2 ** i < threads)


def batched_methods() -> tuple[str, ...]:
    """`bench --batched`'s default: every batched entry, and the sequential paths they replace (ours and faster-whisper's)."""
    return (*registry.tagged(registry.BATCHED), "fast-qint8-pc", "faster-whisper-int8")


def run_batched(opts: Options, run_id: str | None = None, log=print) -> str:
    """Long recordings, whole, at the default batch size; on the first one, for the methods tagged `swept`, the batch
    sweep, peak memory per batch size and fewer threads (powers of two), and their peak memory on an hour of speech;
    then the long-form gate for every method timed, and what 2x faster than faster-whisper's batched pipeline would
    have to fit in (`floor`)."""
    from . import floor, longform

    run_id = run_id or results.new_run_id()
    recordings = inputs.longform(opts.manifest)
    sweep = tuple(m for m in opts.methods if registry.SWEPT in registry.get(m).tags)
    try:
        for recording in recordings:
            _run(replace(opts, batch_sizes=(pipeline.BATCH,)), recording, run_id, log)
        _run(replace(opts, methods=sweep, batch_sizes=opts.batch_sizes or SWEEP), recordings[0], run_id, log)
        if opts.memory:
            measure_memory(replace(opts, methods=sweep, batch_sizes=opts.batch_sizes or SWEEP), recordings[0], run_id)
            measure_memory(replace(opts, methods=sweep, batch_sizes=(pipeline.BATCH,)), inputs.hour(opts.manifest), run_id)
        for threads in fewer_threads(opts.threads):
            _run(replace(opts, methods=sweep, threads=threads, batch_sizes=(pipeline.BATCH,)), recordings[0], run_id, log)
        longform.run(longform.Options(models=opts.models, methods=opts.methods, decoding=opts.decoding, threads=opts.threads,
                                      manifest=opts.manifest, timeout=opts.timeout), run_id, log)
        floor.measure(run_id)
    except KeyboardInterrupt:
        raise Interrupted(run_id) from None
    return run_id


SIZES = ("tiny", "base", "small", "medium")  # the original's table


def size_models(sizes: tuple[str, ...] = SIZES) -> tuple[str, ...]:
    """Each size on real weights where this machine has them, else on timing-only ones; a size that has both is timed on
    both, which checks that random weights time as real ones do."""
    here = models.available_here()
    real = tuple(name for name in sizes if name in here)
    return (*real, *(f"{name}:{models.RANDOM}" for name in sizes))


def run_sizes(opts: Options, run_id: str | None = None, log=print) -> str:
    """The original's table: every size on the window, exactly `opts.forced` decoder steps (end of text suppressed), so
    random weights do the work real ones do; then peak memory per size and method, each in its own process."""
    run_id = run_id or results.new_run_id()
    opts = replace(opts, forced=opts.forced or FORCED)
    window = inputs.window()
    try:
        _run(opts, window, run_id, log)
        if opts.memory:  # resident memory of the process: the CPU methods' (a GPU's memory is another matter)
            measure_memory(replace(opts, methods=tuple(m for m in opts.methods if registry.get(m).device == "cpu")), window, run_id)
    except KeyboardInterrupt:
        raise Interrupted(run_id) from None
    return run_id


def run_all(opts: Options, run_id: str | None = None, log=print) -> str:
    """The full matrix in one run_id: peak GEMM, the 30 s window greedy and beam 5, thread scaling, the long
    recordings, memory, short-clip accuracy (greedy for every method, beam 5 for those tagged) and the long-form
    gate (for those tagged)."""
    from . import accuracy, longform

    run_id = run_id or results.new_run_id()
    try:
        peak.measure(run_id, opts.threads)  # first, while nothing of ours is loaded
        peak.kernels(run_id, opts.threads)
        window = inputs.window()
        beams = list(dict.fromkeys([opts.decoding.beam_size, BEAM]))
        for beam in beams:
            _run(replace(opts, decoding=replace(opts.decoding, beam_size=beam)), window, run_id, log)
        scaling = tuple(m for m in opts.methods if m in registry.tagged(registry.SCALING))
        for threads in fewer_threads(opts.threads):
            _run(replace(opts, methods=scaling, threads=threads), window, run_id, log)
        measure_memory(opts, window, run_id)
        for beam in beams:
            chosen = opts.methods if beam == opts.decoding.beam_size else tuple(m for m in opts.methods if m in registry.tagged(registry.BEAM))
            if not chosen:
                continue  # fp32 alone at this width would be a baseline with nothing to compare
            accuracy.run(accuracy.Options(models=opts.models, methods=chosen, decoding=replace(opts.decoding, beam_size=beam),
                                          threads=opts.threads, manifest=opts.manifest, timeout=opts.timeout), run_id, log)
        gated = tuple(m for m in opts.methods if m in {*registry.tagged(registry.LONGFORM), *scaling})
        longform.run(longform.Options(models=opts.models, methods=gated, decoding=opts.decoding, threads=opts.threads,
                                      manifest=opts.manifest, timeout=opts.timeout), run_id, log)
        run_batched(replace(opts, methods=tuple(m for m in batched_methods() if m in opts.methods)), run_id, log)
    except KeyboardInterrupt:
        raise Interrupted(run_id) from None
    return run_id
