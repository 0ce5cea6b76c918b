"""whisper-cpu: measured, quantized OpenAI Whisper on ordinary CPUs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class UserError(Exception):
    """A problem the user can fix (bad input, missing weights): shown as one line, never a traceback."""
