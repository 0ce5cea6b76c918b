"""whisper-cpu: measured, quantized OpenAI Whisper on ordinary CPUs.

The library (this package's modules) transcribes; the benchmark (`whisper_cpu.bench`) measures. The library
never imports the benchmark. `whisper_cpu.load_model(name).transcribe(audio)` is openai-whisper's interface (`api`),
imported on first use: `import whisper_cpu` alone loads neither PyTorch nor Whisper.
"""


class UserError(Exception):
    """A problem the user can fix (bad input, missing weights): shown as one line, never a traceback."""


def __getattr__(name: str):
    if name in ("load_model", "Model"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'whisper_cpu' has no attribute '{name}'")
