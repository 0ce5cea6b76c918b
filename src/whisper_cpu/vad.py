"""Speech regions by Silero VAD: the `silero-vad` package's model and its own rule for turning probabilities into regions.

The package's `get_speech_timestamps` calls its model once per 32 ms frame from Python, seconds per minute of audio.
The model is a convolutional encoder applied to each frame on its own (with the 64 samples before it) feeding one LSTM
cell, so here the encoder runs on many frames at once and the LSTM over the whole sequence in one call: the package's
probabilities (to 1e-5), about 0.3 s for six minutes on 2 cores, less than faster-whisper's batched ONNX VAD (0.7 s).
"""

import functools
import warnings

import numpy as np
import torch

from .audio import SAMPLE_RATE

FRAME, CONTEXT = 512, 64  # samples per probability, and samples of the frame before that the model sees with each
BLOCK = 2048  # frames encoded together: about a minute of audio, so a long file's intermediate tensors stay small


@functools.cache
def _silero():
    threads = torch.get_num_threads()
    import silero_vad

    torch.set_num_threads(threads)  # importing it sets PyTorch's threads to 1 for the whole process
    return silero_vad


@functools.cache
def _model() -> tuple[torch.jit.ScriptModule, torch.nn.LSTM]:
    """The package's TorchScript model, and its LSTM cell's weights as a sequence LSTM: loaded once per process."""
    with warnings.catch_warnings():  # the package's loader on importlib's and TorchScript's deprecated calls: not the user's to act on
        warnings.simplefilter("ignore", DeprecationWarning)
        net = _silero().load_silero_vad()._model
    lstm = torch.nn.LSTM(128, 128)
    lstm.load_state_dict({f"{name}_l0": value for name, value in net.decoder.rnn.state_dict().items()})
    return net, lstm.eval()


def probabilities(samples: np.ndarray) -> np.ndarray:
    """The speech probability of every 512-sample frame of 16 kHz audio (the last zero-padded), as the package's model
    gives them one frame at a time."""
    net, lstm = _model()
    samples = np.asarray(samples, dtype=np.float32)
    count = -(-len(samples) // FRAME)
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode():
            features = torch.cat([net.encoder(net.stft(_frames(samples, i, min(i + BLOCK, count)))) for i in range(0, count, BLOCK)])
            torch.set_num_threads(1)  # a step of 128 units is too small to share: a second thread only waits (several times slower)
            hidden, _ = lstm(features[:, None, :, 0])
            return net.decoder.decoder(hidden[:, 0, :, None]).reshape(-1).numpy()
    finally:
        torch.set_num_threads(threads)


def _frames(samples: np.ndarray, first: int, end: int) -> torch.Tensor:
    """Frames `first` to `end` (exclusive), each with the `CONTEXT` samples before it, zeros outside the audio: cut a block
    at a time, so an hour's file is never copied whole."""
    start, stop = first * FRAME - CONTEXT, end * FRAME
    piece = samples[max(start, 0) : min(stop, len(samples))]
    piece = np.pad(piece, (max(0, -start), stop - max(start, 0) - len(piece)))
    return torch.from_numpy(piece).unfold(0, CONTEXT + FRAME, FRAME)  # a view: each frame after the end of the one before


def speech_regions(samples: np.ndarray, max_speech_s: float = float("inf"), threshold: float = 0.5, pad_ms: int = 400,
                   min_silence_ms: int = 160) -> list[tuple[int, int]]:
    """(start, end) samples of speech, padded by `pad_ms` (half the pause where two regions are closer), ended after
    `min_silence_ms` of silence, and split where one would run past `max_speech_s`: at its last pause of 98 ms or more,
    faster-whisper's rule, with which the batched pipeline was measured (the package's default now takes the longest)."""
    if not len(samples):
        return []
    regions = _silero().get_speech_timestamps_from_probs(
        probabilities(samples).tolist(), sampling_rate=SAMPLE_RATE, threshold=threshold, min_speech_duration_ms=0,
        max_speech_duration_s=max_speech_s, min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms,
        use_max_poss_sil_at_max_speech=False, audio_length_samples=len(samples))
    return [(r["start"], r["end"]) for r in regions]
