"""whisper-cpu: measured, quantized OpenAI Whisper on ordinary CPUs.

The library (this package's modules) transcribes; the benchmark (`whisper_cpu.bench`) measures. The library
never imports the benchmark.
"""


class UserError(Exception):
    """A problem the user can fix (bad input, missing weights): shown as one line, never a traceback."""
