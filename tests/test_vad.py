import subprocess
import sys

import numpy as np
import pytest
import torch

from whisper_cpu import audio, pipeline, vad
from whisper_cpu.bench import inputs

RATE = audio.SAMPLE_RATE


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the package's loader's
def test_probabilities_are_the_packages_own_frame_by_frame(clips, mirror):
    samples = audio.load(inputs.locate(clips["whisper_jfk"]))[: 5 * RATE + 100]  # a partial last frame too
    alone = vad._silero().load_silero_vad().audio_forward(torch.from_numpy(samples), RATE).reshape(-1).numpy()
    together = vad.probabilities(samples)
    assert together.shape == alone.shape and np.abs(together - alone).max() < 1e-4
    assert (together > 0.5).mean() > 0.5  # the clip is mostly speech


def test_frames_cut_block_by_block_see_the_samples_before_them(clips, mirror, monkeypatch):
    """A long file's frames are cut a block at a time: each block's first frame still sees the end of the block before."""
    samples = audio.load(inputs.locate(clips["whisper_jfk"]))[: 5 * RATE + 100]
    whole = vad.probabilities(samples)  # one block
    monkeypatch.setattr(vad, "BLOCK", 7)  # 157 frames: 22 blocks, the last one short
    blocks = vad.probabilities(samples)
    assert blocks.shape == whole.shape and np.abs(blocks - whole).max() < 1e-5


def test_regions_hold_each_spoken_part_and_digital_silence_none(clips, mirror):
    clip = audio.load(inputs.locate(clips["deepspeech_LDC93S1"]))
    pause = np.zeros(2 * RATE, dtype=np.float32)
    regions = pipeline.speech_regions(np.concatenate([pause, clip, pause, clip, pause]))
    spoken = [(2 * RATE, 2 * RATE + len(clip)), (4 * RATE + len(clip), 4 * RATE + 2 * len(clip))]
    assert len(regions) == 2
    for (start, end), (first, last) in zip(regions, spoken):
        assert first - 0.4 * RATE <= start and end <= last + 0.4 * RATE  # padded by 0.4 s at most
        assert end - start > 0.8 * len(clip)
    assert vad.speech_regions(np.zeros(5 * RATE, dtype=np.float32)) == [] and vad.speech_regions(np.zeros(0, dtype=np.float32)) == []


def test_a_region_longer_than_the_limit_is_split_at_a_pause(clips, mirror):
    samples = audio.load(inputs.locate(clips["whisper_jfk"]))
    whole, split = vad.speech_regions(samples), vad.speech_regions(samples, max_speech_s=2.0)
    assert max(end - start for start, end in whole) > 2 * RATE
    assert len(split) > len(whole) and all(end - start <= 2 * RATE for start, end in split)


def test_pytorchs_threads_are_left_as_they_were():
    """Importing silero_vad sets PyTorch's threads to 1, and the LSTM runs on one: neither may stay."""
    code = ("import numpy as np, torch; torch.set_num_threads(2); from whisper_cpu import vad; "
            "vad.speech_regions(np.ones(16000, dtype=np.float32)); print(torch.get_num_threads())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "2", done.stderr
