"""The benchmark's commands: bench, accuracy, longform, compare, report, audio (and the memory probe's child)."""

import argparse
from pathlib import Path

import pandas as pd

from .. import UserError, machine, models, registry
from ..cli import positive, positive_number, threads
from ..runner import DecodeOptions
from . import accuracy, figures, harness, inputs, isolate, longform, peak, publish, results, tables

METHODS_HELP = "default: {} ({}); any of: {}"


def _decoding(args) -> DecodeOptions:
    return DecodeOptions(beam_size=args.beam_size)


def _input(args) -> inputs.Input:
    return inputs.file_input(args.audio, args.language) if args.audio else inputs.window()


def _check(method_names, model_names, resume=None) -> None:
    """Unknown methods, models or runs fail in one line before anything loads."""
    for name in method_names:
        registry.get(name)
    for name in model_names:
        models.checkpoint_path(name)
    harness.check_resume(resume)


def cmd_bench(args) -> None:
    default = (tuple(registry.REGISTRY) if args.all else harness.batched_methods() if args.batched else
               registry.tagged(registry.SIZES) if args.sizes else registry.tagged(registry.BENCH))
    model_names = args.models or (harness.size_models() if args.sizes else DEFAULT_MODELS)
    opts = harness.Options(models=tuple(model_names), methods=tuple(args.methods or default), repeats=args.repeats, decoding=_decoding(args),
                           threads=args.threads or harness.machine.default_threads(), batch_sizes=tuple(args.batch_sizes or ()),
                           manifest=args.manifest, forced=args.forced, memory=not args.skip_memory, retries=args.retries,
                           timeout=args.timeout)
    _check(opts.methods, opts.models, args.resume)
    if args.sizes:
        run_id = harness.run_sizes(opts, run_id=args.resume)
        print(f"\nrun {run_id}: the original's sizes, {harness.FORCED if not args.forced else args.forced} forced decoder steps on the window "
              "(timing only: random weights are labelled so); medians over repeats")
        forced = tables.load_forced()
        for table in (tables.sizes_table(forced, tables.published(), run_id, tables.load("memory")), tables.gpu_table(forced, tables.published(), run_id)):
            if len(table):
                print(table.astype(object).fillna("").to_string(index=False))
        return
    if args.all:
        run_id = harness.run_all(opts, run_id=args.resume)
    elif args.batched:
        run_id = harness.run_batched(opts, run_id=args.resume)
        print(f"choices for `transcribe --method auto`: {publish.write_choices()}")
        print(f"\nrun {run_id}: long recordings, medians over repeats; real-time factor (x) and WER change against sequential fp32")
        print(tables.batched_table(tables.load_timings(), tables.load_longform(), run_id).to_string(index=False))
        _print_failures(run_id)
        return
    else:
        clip = _input(args)
        print(f"input: {clip.id} ({clip.duration_s:.1f} s, {'real speech' if clip.real else 'synthesized'}); threads: {opts.threads}")
        run_id = harness.run(opts, clip, run_id=args.resume)
    print(f"choices for `transcribe --method auto`: {publish.write_choices()}")
    _print_failures(run_id)
    timings = tables.load_timings()
    timings = timings[timings.run_id == run_id]
    if not len(timings):
        raise UserError(f"run {run_id}: no configuration finished")
    timings = timings[timings.audio_id == timings.audio_id.iloc[0]]
    table = tables.with_wer(tables.summary(timings), tables.load_accuracy())
    columns = ["model", "method", "device", "repeats", "wall_s", "speedup_vs_fp32", "x_realtime", "encoder_s",
               "decoder_s", "decoder_ms_per_token", "load_s", "contended", "wer_pct", "wer_delta_ci"]
    print(f"\nrun {run_id}: medians over repeats, speedup against fp32 of this run;")
    print("WER (%, English clips) and its change against fp32 [95% CI] from the newest short-clip scoring with the same decoding")
    print(table[columns].astype(object).fillna("").to_string(index=False))


def _print_failures(run_id: str) -> None:
    """The configurations of a run that crashed, hung or raised: their rows are kept, with the reason."""
    failed = tables.run_failures(run_id)
    if len(failed):
        print(f"\nrun {run_id}: {len(failed)} configurations did not finish (kept as failed rows, left out of every table):")
        print(failed.to_string(index=False))


def cmd_compare(args) -> None:
    timings = tables.load_timings()
    if args.run_id and args.run_id not in set(timings.run_id if len(timings) else ()):
        raise UserError(f"--run-id {args.run_id}: no such run in the timings")
    table = tables.compare(timings, tables.published(), args.run_id, tables.load_accuracy())
    if not len(table):
        raise UserError(f"{'run ' + args.run_id if args.run_id else 'no run'} timed both fp32-nn and qint8: run `make bench` first")
    print("qint8 speedup over nn.Linear fp32, ours (this machine, the freshest run that timed both) beside the original's (Ryzen 5 5600X, AVX2)")
    print(table.astype(object).fillna("").T.to_string(header=False))


def _percent(table: pd.DataFrame, columns) -> pd.DataFrame:
    for column in columns:
        table[column] = (100 * table[column]).round(2) if column in table else float("nan")
    return table


def cmd_accuracy(args) -> None:
    opts = accuracy.Options(models=tuple(args.models or DEFAULT_MODELS), methods=tuple(args.methods or registry.tagged(registry.BENCH)),
                            decoding=_decoding(args), threads=args.threads or 0, audio_dir=args.audio_dir,
                            manifest=inputs.harder_manifest() if args.harder else args.manifest)
    _check((*opts.methods, "fp32"), opts.models, args.resume)
    run_id = accuracy.run(opts, run_id=args.resume)
    table = results.read("accuracy")
    table = table[table.run_id == run_id] if len(table) else table
    if not len(table):
        _print_failures(run_id)
        raise UserError(f"run {run_id}: no configuration was scored")
    table = _percent(table.copy(), ("wer", "cer", "wer_delta", "ci_low", "ci_high"))
    columns = ["model", "method", "language", "n_utterances", "audio_s", "metric", "wer", "cer", "wer_delta",
               "ci_low", "ci_high", "identical_to_fp32", "fallbacks", "rtfx"]
    print(f"\nrun {run_id}: corpus WER/CER in %, delta against fp32 in points with its 95% bootstrap CI")
    print(table[[c for c in columns if c in table]].astype(object).fillna("").to_string(index=False))
    by_category = results.read("categories")
    by_category = by_category[(by_category.run_id == run_id) & (by_category.status == "ok")] if len(by_category) else by_category
    if len(by_category) and set(by_category.category) - {"clean"}:
        verdict = accuracy.passes(by_category.to_dict("records"))
        print("\nper category: WER %, words per minute of non-speech, words past the reference's end; changes against fp32 "
              "[95% CI]; `passes`: no measurable loss of words or added words in any category")
        by_category = _percent(by_category.copy(), ("wer", "wer_delta", "wer_ci_low", "wer_ci_high"))
        by_category["passes"] = [verdict.get((m, k)) for m, k in zip(by_category.model, by_category.method)]
        columns = ["model", "method", "category", "n_utterances", "wer", "wer_delta", "wer_ci_low", "wer_ci_high",
                   "nonspeech_words_per_min", "tail_insertions", "ins_per_min_delta", "ins_ci_low", "ins_ci_high", "passes"]
        print(by_category.reindex(columns=columns).astype(object).fillna("").to_string(index=False))


def cmd_longform(args) -> None:
    opts = longform.Options(models=tuple(args.models or DEFAULT_MODELS), methods=tuple(args.methods or registry.tagged(registry.LONGFORM)),
                            decoding=_decoding(args), threads=args.threads or 0,
                            manifest=inputs.hard_manifest() if args.harder else args.manifest)
    _check((*opts.methods, "fp32"), opts.models, args.resume)
    run_id = longform.run(opts, run_id=args.resume)
    print(f"choices for `transcribe --method auto`: {publish.write_choices()}")
    table = results.read("longform")
    table = _percent(table[table.run_id == run_id].copy(), ("wer", "wer_delta", "ci_low", "ci_high"))
    columns = ["model", "method", "audio_id", "audio_s", "wall_s", "wer", "wer_delta", "ci_low", "ci_high", "fallbacks",
               "windows", "deletions", "insertions", "substitutions", "repeated_ngrams"]
    print(f"\nrun {run_id}: long recordings transcribed as users do; WER in %, delta against fp32 with its 95% CI over clips")
    print(table[columns].astype(object).fillna("").to_string(index=False))


def cmd_report(args) -> None:
    timings, scores, reference = tables.load_timings(), tables.load_accuracy(), tables.published()
    folder = publish.workspace.get().figures
    for path in figures.write_figures(timings, scores, reference, folder, tables.load_memory(), tables.load_longform(), tables.load_forced()):
        print(f"figure: {path}")
    for section, markdown in (("headline", publish.headline_markdown()),
                              ("results", publish.results_markdown(timings, scores, reference, tables.load("peak"), tables.load_longform(newest=False))),
                              ("harder", publish.harder_markdown())):
        publish.update_section(publish.page(section), section, markdown)
        print(f"{publish.SECTIONS[section]}: {section} section regenerated")
    print(f"choices for `transcribe --method auto`: {publish.write_choices()}")
    if not args.no_notebooks:
        for notebook in publish.notebooks():
            publish.execute_notebook(notebook)
            print(f"executed: {notebook}")


def cmd_peak(args) -> None:
    harness.check_resume(args.resume)
    run_id = args.resume or results.new_run_id()
    threads = args.threads or harness.machine.default_threads()
    peak.measure(run_id, threads)
    peak.kernels(run_id, threads)
    print(f"run {run_id}: peak matrix-product throughput per number format, and the int8 paths at Whisper's shapes")
    print(tables.kernels_table(results.read("kernels"), run_id).to_string())


def cmd_floor(args) -> None:
    from . import floor

    timings = tables.load_timings()
    if args.run_id and args.run_id not in set(timings.run_id if len(timings) else ()):
        raise UserError(f"--run-id {args.run_id}: no such run in the timings")
    rows = floor.measure(args.run_id)
    if not rows:
        which = f"run {args.run_id} has no" if args.run_id else "no batched run with"
        raise UserError(f"{which} timings of both our batched int8 and faster-whisper's with its long-form gate: run `make bench-batch` first")
    print(tables.floor_table(pd.DataFrame(rows)).to_string(index=False))


def cmd_step(args) -> None:
    from . import step

    _check(args.methods, args.models)
    rows = step.measure(tuple(args.models), tuple(args.methods), args.threads or machine.default_threads(), args.repeats)
    if not rows:
        raise UserError("none of these methods can run here")
    print(tables.steps_table(pd.DataFrame(rows)).to_string(index=False))


def cmd_loadtest(args) -> None:
    from . import load

    opts = load.Options(model=args.model, method=args.method, clients=args.clients, seconds=args.seconds, threads=args.threads or 0)
    clip = args.audio or inputs.window().path
    row = load.run(opts, clip)
    print(f"run {row['run_id']}: {row['clients']} clients for {row['seconds']:g} s against `serve --model {row['model']}` ({row['method']}): "
          f"{row['ok']} of {row['requests']} answered ({row['failed']} failed, {row['lost']} lost), {row['requests_per_s']} requests/s, "
          f"{row['audio_x_realtime']}x real time, latency p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms; row added to results/serve.csv")


def cmd_scaleout(args) -> None:
    from . import scaleout

    paths = scaleout.english_clips()
    rows = scaleout.run(scaleout.Options(model=args.model, method=args.method), paths)
    print(f"run {rows[0]['run_id']}: {len(paths)} English clips per layout; rows added to results/corpus.csv")
    print(pd.DataFrame(rows)[["engine", "actors", "threads_per_actor", "files_ok", "files_failed", "audio_s", "wall_s", "audio_h_per_h",
                              "overhead_s_per_file"]].to_string(index=False))


def cmd_audio(args) -> None:
    if args.action == "seed":
        print(f"original's clip: {inputs.fetch_seed()}")
        return
    if args.action == "harder":
        from . import augment

        clips = inputs.read_manifest(path := augment.write(manifest=args.manifest))
        print(f"harder material (seed 0): {path}")
        for category in dict.fromkeys(c.category for c in clips):
            print(f"  {category}: {sum(c.category == category for c in clips)} clips")
        return
    clips = inputs.read_manifest(args.manifest)
    found = inputs.available(clips)
    print(f"{len(found)} of {len(clips)} manifest clips verified ({sum(c.duration_s for c, _ in found):.0f} s)")
    clip = inputs.window()
    print(f"benchmark input: {clip.path} ({clip.duration_s:.1f} s, {'real speech' if clip.real else 'synthesized'})")
    for recording in inputs.longform(args.manifest):
        print(f"long recording: {recording.path} ({recording.duration_s:.1f} s, {len(recording.parts)} clips)")


DEFAULT_MODELS = ("tiny.en", "base")


def _run_flags(parser: argparse.ArgumentParser, methods_tag: str, label: str = "the original experiment's") -> None:
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"default: {' '.join(DEFAULT_MODELS)}; NAME:random for the official shapes with random weights (timing only)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=METHODS_HELP.format(label, " ".join(registry.tagged(methods_tag)), ", ".join(registry.REGISTRY)))
    parser.add_argument("--beam-size", type=positive, default=None, help="beam search width (default: greedy)")
    parser.add_argument("--threads", type=threads, default=None, help="default: all available cores")
    parser.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run instead of starting a new one")


def add_commands(sub) -> None:
    b = sub.add_parser("bench", help="time models x methods on one input, with the transcriber's decoding options")
    _run_flags(b, registry.BENCH)
    b.add_argument("--repeats", type=positive, default=5)
    b.add_argument("--retries", type=int, default=harness.Options.retries, help="reruns of a repeat taken while other programs used "
                   f"more than {100 * harness.CONTENDED:.0f}%% of the CPU; then it is kept, marked contended (default: %(default)s)")
    b.add_argument("--timeout", type=positive_number, default=isolate.TIMEOUT, metavar="SECONDS", help="each configuration runs in a process of "
                   "its own; past this it counts as hung and is recorded failed (default: %(default)g)")
    b.add_argument("--audio", type=Path, help="a file to time instead of the ~30 s real-speech window")
    b.add_argument("--language", default="en")
    b.add_argument("--all", action="store_true", help="the full matrix (every method by default): window greedy and beam 5, "
                   "thread scaling, memory, short-clip accuracy, the long-form gate, the batched job")
    b.add_argument("--batched", action="store_true", help="the long recordings whole, batched methods beside the sequential ones they "
                   "replace: batch-size sweep, memory per batch size, threads, long-form gate")
    b.add_argument("--manifest", type=Path, default=None, help="--batched, --all: the gates' clips and the long recordings "
                   "(joined from its English clips) from this manifest")
    b.add_argument("--batch-sizes", type=positive, nargs="+", help=f"batch sizes of the sweep (default: {' '.join(map(str, harness.SWEEP))})")
    b.add_argument("--sizes", action="store_true", help="the original's four sizes (real weights where present, else random, timing "
                   "only) on forced decoder steps, with peak memory; GPU methods where CUDA exists")
    b.add_argument("--skip-memory", action="store_true", help="--sizes, --batched: no peak-memory probes (each loads the model again; --batched's transcribe an hour of speech)")
    b.add_argument("--forced", type=positive, default=None, metavar="STEPS", help="time the window alone with exactly STEPS decoder steps "
                   f"(end of text suppressed): the same work whatever the weights (--sizes: {harness.FORCED})")
    b.set_defaults(func=cmd_bench)

    w = sub.add_parser("accuracy", help="WER of models x methods on the real-speech clips of a manifest")
    _run_flags(w, registry.BENCH)
    w.add_argument("--manifest", type=Path, default=None, help="any manifest with file, sha256, language, reference")
    w.add_argument("--harder", action="store_true", help="the harder material instead of the dev clips: noise, telephone band, low "
                   "level, trailing noise and non-speech derived from them (written first where missing), and the mirror's real hard clips")
    w.add_argument("--audio-dir", type=Path, help="where the manifest's files are (default: the audio mirror)")
    w.set_defaults(func=cmd_accuracy)

    g = sub.add_parser("longform", help="the long-form gate: long recordings transcribed end to end, WER change vs fp32 with CIs")
    _run_flags(g, registry.LONGFORM, "every method the gate is meant for")
    g.add_argument("--manifest", type=Path, default=None, help="recordings joined from this manifest's English clips (default: the dev clips)")
    g.add_argument("--harder", action="store_true", help="recordings joined from the mirror's real hard clips (noisy, accented, telephone, "
                   "spontaneous speech and non-speech)")
    g.set_defaults(func=cmd_longform)

    c = sub.add_parser("compare", help="our speedups beside the published ones")
    c.add_argument("--run-id", help="default: per model, the freshest run that timed fp32-nn and qint8")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("report", help="figures, the README's headline and docs/' tables, executed notebooks and auto's choices, from the rows")
    r.add_argument("--no-notebooks", action="store_true")
    r.set_defaults(func=cmd_report)

    k = sub.add_parser("peak", help="this CPU's peak matrix-product throughput, and each int8 path at Whisper's shapes")
    k.add_argument("--threads", type=threads, default=None, help="default: all available cores")
    k.add_argument("--resume", metavar="RUN_ID", help="add the rows to an existing run")
    k.set_defaults(func=cmd_peak)

    f = sub.add_parser("floor", help="what 2x faster than faster-whisper's batched pipeline would have to fit in, from a batched run "
                       "and this machine's cross-attention and VAD speed")
    f.add_argument("--run-id", help="the batched run (default: the reference machine's newest)")
    f.set_defaults(func=cmd_floor)

    st = sub.add_parser("step", help="one decoder token on the window: ms per token of every method, and where our methods' time goes")
    st.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    st.add_argument("--methods", nargs="+", default=["fast-qint8-pc", "fast-fp16w", "faster-whisper-int8", "whisper.cpp-q8_0"])
    st.add_argument("--threads", type=threads, default=None, help="default: all available cores")
    st.add_argument("--repeats", type=positive, default=5)
    st.set_defaults(func=cmd_step)

    a = sub.add_parser("audio", help="verify the real-speech clips and build the benchmark inputs")
    a.add_argument("action", choices=["prepare", "seed", "harder"])
    a.add_argument("--manifest", type=Path, default=None)
    a.set_defaults(func=cmd_audio)

    lt = sub.add_parser("loadtest", help="`serve` in its own process under N concurrent clients on 127.0.0.1 (results/serve.csv)")
    lt.add_argument("--model", default="tiny.en")
    lt.add_argument("--method", default="auto")
    lt.add_argument("--clients", type=positive, default=4)
    lt.add_argument("--seconds", type=positive_number, default=30.0)
    lt.add_argument("--threads", type=threads, default=None, help="the server's (default: all available cores)")
    lt.add_argument("--audio", type=Path, help="the file each request sends (default: the ~30 s real-speech window)")
    lt.set_defaults(func=cmd_loadtest)

    so = sub.add_parser("scaleout", help="`corpus` throughput: local engine, Ray with 1 and 2 actors, same clips (results/corpus.csv)")
    so.add_argument("--model", default="tiny.en")
    so.add_argument("--method", default="auto")
    so.set_defaults(func=cmd_scaleout)

