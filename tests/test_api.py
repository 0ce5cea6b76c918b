"""`whisper_cpu.load_model(name).transcribe(audio, **options)`: openai-whisper's interface and, on fp32, its result."""

import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import whisper_cpu
from whisper_cpu import UserError, api, audio, models, registry, transcribe
from whisper_cpu.bench import inputs
from whisper_cpu.runner import DecodeOptions, Runner, Transcript


@pytest.fixture(scope="module")
def fp32():
    return whisper_cpu.load_model("tiny.en", method="fp32", threads=2)


def timed(result: dict) -> list[tuple]:
    return [(s["start"], s["end"], s["text"], [(w["word"], w["start"], w["end"]) for w in s.get("words", [])]) for s in result["segments"]]


def test_fp32_gives_openai_whispers_result(fp32, tiny, clips, mirror, capsys):
    path = inputs.locate(clips["whisper_jfk"])
    options = {"temperature": 0.0, "word_timestamps": True, "initial_prompt": "President Kennedy.", "condition_on_previous_text": False}
    theirs = tiny.transcribe(audio.load(path), fp16=False, **options)
    ours = fp32.transcribe(str(path), verbose=True, **options)
    assert (ours["text"], ours["language"], timed(ours)) == (theirs["text"], theirs["language"], timed(theirs))
    assert capsys.readouterr().out.splitlines()[0].startswith("[00:00.000 --> ")  # openai-whisper's verbose lines
    assert (fp32.method, fp32.why) == ("fp32", None)


def test_a_list_gives_a_list_in_order_each_as_alone(fp32, tiny, clips, mirror):
    short = audio.load(inputs.locate(clips["deepspeech_LDC93S1"]))
    path = inputs.locate(clips["whisper_jfk"])
    results = fp32.transcribe([short, path])
    assert [r["text"] for r in results] == [tiny.transcribe(short, fp16=False)["text"], fp32.transcribe(path)["text"]]
    assert "greasy wash" in results[0]["text"].lower() and results[1]["segments"][0]["start"] == 0.0


def test_16_bit_pcm_is_scaled_as_openai_whisper_scales_a_file(fp32, tiny, clips, mirror):
    samples = audio.load(inputs.locate(clips["deepspeech_LDC93S1"]))
    pcm = np.round(samples * 32767).astype(np.int16)
    assert fp32.transcribe(pcm)["text"] == tiny.transcribe(pcm.astype(np.float32) / 32768, fp16=False)["text"]
    assert "greasy wash" in fp32.transcribe(torch.from_numpy(pcm))["text"].lower()


def test_openai_whispers_keywords_and_types():
    assert api.decode_options() == DecodeOptions()  # the same defaults
    options = api.decode_options(temperature=0.2, clip_timestamps=[1.5, 3], suppress_tokens=[-1, 50256], beam_size=2, language="en")
    assert (options.temperature, options.clip_timestamps, options.suppress_tokens, options.beam_size) == ((0.2,), "1.5,3", "-1,50256", 2)
    assert api.decode_options(temperature=(0.0, 0.5)).temperature == (0.0, 0.5)
    with pytest.raises(TypeError, match=r"^transcribe\(\) got an unexpected keyword argument 'beam'$"):
        api.decode_options(beam=5)
    with pytest.raises(TypeError, match="an option of openai-whisper's decode that whisper-cpu does not take"):
        api.decode_options(prefix="And so")


def test_bad_audio_and_misuse_are_one_line_user_errors(fp32, tmp_path):
    for source, message in [(tmp_path / "missing.wav", f"audio file not found: {tmp_path / 'missing.wav'}"),
                            (np.zeros(16000, dtype=np.float32), "the audio: no signal (silence)"),
                            (np.zeros((2, 16000), dtype=np.float32), "not a ndarray of shape (2, 16000)")]:
        with pytest.raises(UserError, match=f"{re.escape(message)}$"):
            fp32.transcribe(source)
    for bad in (np.nan, np.inf, -np.inf):
        samples = np.ones(16000, dtype=np.float32)
        samples[100] = bad
        with pytest.raises(UserError, match=r"^the audio: samples that are not numbers \(NaN or infinite\)$"):
            fp32.transcribe(samples)
    with pytest.raises(UserError, match=r"^audio samples of dtype int32: give floats in \[-1, 1\] or 16-bit PCM \(int16\)$"):
        fp32.transcribe(np.ones(16000, dtype=np.int32))
    with pytest.raises(UserError, match="^audio 1: no signal") as failed:
        fp32.transcribe([np.ones(16000, dtype=np.float32), np.zeros(16000, dtype=np.float32), np.ones(16000, dtype=np.float32)])
    assert [r is None for r in failed.value.results] == [False, True, False]  # the others' work is kept
    with pytest.raises(UserError, match="English-only"):
        fp32.transcribe(np.ones(16000, dtype=np.float32), task="translate")
    with pytest.raises(UserError, match="CPU only"):
        whisper_cpu.load_model("tiny.en", device="cuda")
    with pytest.raises(UserError, match=r"^threads -1: a whole number, at least 1$"):
        whisper_cpu.load_model("tiny.en", threads=-1)


def test_load_model_takes_openai_whispers_arguments_in_its_order(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(api, "Model", lambda name, method, threads: seen.append((name, method, threads, models.whisper_cache())))
    whisper_cpu.load_model("base", "cpu", str(tmp_path), True)  # name, device, download_root, in_memory
    whisper_cpu.load_model("base", threads=3)
    assert seen[0] == ("base", "auto", None, tmp_path) and seen[1][:3] == ("base", "auto", 3) and seen[1][3] != tmp_path


class Silent(Runner):
    multilingual, weights = False, []

    def transcribe(self, source, options, progress=False):
        return Transcript("", [], "en")


def test_auto_is_the_command_lines_choice_and_says_why(scratch, monkeypatch):
    monkeypatch.setattr(transcribe.torch, "set_num_threads", lambda n: None)  # leave the other tests' threads alone
    monkeypatch.setitem(registry.REGISTRY, registry.DEFAULT, replace(registry.REGISTRY[registry.DEFAULT], load=lambda model, threads: Silent()))
    model = whisper_cpu.load_model("tiny.en", threads=1)
    assert model.method == registry.DEFAULT and "documented default" in model.why  # a fresh workspace has measured nothing
    assert model.transcribe(np.ones(16000, dtype=np.float32)) == {"text": "", "segments": [], "language": "en"}


def test_importing_the_package_loads_neither_pytorch_nor_whisper():
    code = "import sys, whisper_cpu; print(sorted({'torch', 'whisper'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "[]\n"
