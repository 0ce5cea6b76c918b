import subprocess
import sys

import pytest


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "whisper_cpu", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "--models", "huge"], "unknown model 'huge'"),
        (["bench", "--methods", "int3"], "unknown method 'int3'"),
        (["bench", "--audio", "no-such-file.wav"], "audio file not found"),
        (["compare"], "no timings under"),
        (["bench", "--resume", "typo-123"], "no run 'typo-123'"),
        (["longform", "--models", "tiny.en", "--manifest", "no-such.csv"], "manifest not found"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(args, message, tmp_path):
    done = cli("--workspace", str(tmp_path), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_oversubscribed_threads_are_refused():
    done = cli("bench", "--threads", "999")
    assert done.returncode == 2 and "oversubscribing" in done.stderr


def test_corrupt_audio_is_one_line(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 100)
    done = cli("bench", "--models", "tiny.en", "--audio", str(bad))
    assert done.returncode == 2 and "bad.flac" in done.stderr and "Traceback" not in done.stderr
