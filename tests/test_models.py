import ctranslate2
import numpy as np
import pytest
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

from whisper_cpu import UserError, audio, ct2, models
from whisper_cpu.files import sha256
from whisper_cpu.bench import inputs


def official_heads(name, dims):
    model = Whisper(dims)
    model.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
    return model.alignment_heads.to_dense()


def test_conversion_fills_every_key_with_the_stored_float16_tensors():
    checkpoint = ct2.to_checkpoint(models.ct2_dir("tiny.en"))
    dims = ModelDimensions(**checkpoint["dims"])
    assert dims == ModelDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
    expected = Whisper(dims).state_dict()
    state = checkpoint["model_state_dict"]
    assert state.keys() == expected.keys()
    assert all(state[k].shape == expected[k].shape for k in state)
    assert {t.dtype for t in state.values()} == {torch.float16}
    raw = ct2.read(models.ct2_dir("tiny.en") / "model.bin")
    fused = raw["decoder/layer_1/self_attention/linear_0/weight"]
    assert torch.equal(state["decoder.blocks.1.attn.key.weight"], fused[384:768])
    assert torch.equal(state["decoder.blocks.1.cross_attn.value.bias"], raw["decoder/layer_1/attention/linear_1/bias"][384:])


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_alignment_heads_from_config_equal_openai_whisper(name):
    checkpoint = torch.load(models.checkpoint_path(name), weights_only=True)
    dims = ModelDimensions(**checkpoint["dims"])
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    mask[tuple(torch.tensor(checkpoint["alignment_heads"]).T)] = True
    assert torch.equal(mask, official_heads(name, dims))


@pytest.mark.parametrize("name, clip", [("tiny.en", "whisper_jfk"), ("base", "leopard_test")])
def test_greedy_tokens_equal_ctranslate2_on_real_speech(name, clip, clips, mirror):
    model = models.load_model(name)
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio.load(inputs.locate(clips[clip]))), 80)[None]
    tokenizer = whisper.tokenizer.get_tokenizer(model.is_multilingual, language="en", task="transcribe")
    prompt = list(tokenizer.sot_sequence_including_notimestamps)
    ct2 = ctranslate2.models.Whisper(str(models.ct2_dir(name)), device="cpu", compute_type="float32", intra_threads=2)
    theirs = ct2.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())), [prompt], beam_size=1)
    (ours,) = whisper.decode(model, mel, whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False))
    assert len(ours.tokens) > 10
    assert theirs[0].sequences_ids[0] == ours.tokens


def test_converted_checkpoint_is_cached_with_its_sha256():
    path = models.checkpoint_path("tiny.en")
    digest = path.with_suffix(".pt.sha256").read_text().split()[0]
    assert digest == sha256(path)


def test_unknown_model_is_one_clear_error():
    with pytest.raises(UserError, match="unknown model 'huge'"):
        models.load_model("huge")


def test_official_model_without_weights_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_online", lambda: False)
    with pytest.raises(UserError, match=r"model 'small' is not available here.*available here: tiny.en, base"):
        models.load_model("small")


def test_ct2_directory_path_is_accepted(tmp_path):
    assert models.checkpoint_path(str(models.ct2_dir("tiny.en"))).name.startswith("ct2-")
    with pytest.raises(UserError, match="not a CTranslate2 model directory"):
        models.checkpoint_path(str(tmp_path))


def test_each_model_knows_its_tokenizers_languages():
    from whisper_cpu import models, transcribe

    assert models.languages("tiny.en") == ("en",)
    known = models.languages("base")
    assert len(known) == 99 and "de" in known and "yue" not in known  # Cantonese came with large-v3
    with pytest.raises(UserError, match="does not know Cantonese"):
        transcribe.language_for("base", "yue")
