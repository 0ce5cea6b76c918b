"""Each configuration in a process of its own, so that one method's or peer's crash, hang or error is a row, not the end.

A native peer that segfaults (whisper.cpp's AMX kernels on some Intel hosts did) takes its whole process with it.
The parent runs `module:function(spec)` in a fresh interpreter, reads its progress and notes from a pipe, bounds its
time, and reports why it did not finish in one line. The child writes its result rows itself (each process has
its own shard, `results.append`), so whatever it finished before dying is kept.
"""

import faulthandler
import importlib
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

from .. import workspace

TIMEOUT = 3600.0  # seconds one configuration may take before it counts as hung (`--timeout`)
_PROTOCOL = "WHISPER_CPU_PROTOCOL_FD"
_CHILD = "import sys; from whisper_cpu.bench import isolate; sys.exit(isolate._main(sys.argv[1]))"


def call(target: str, spec, timeout: float = TIMEOUT, progress: Callable[[int], None] = lambda n: None,
         note: Callable[[str], None] = lambda text: None) -> str | None:
    """Run `module:function(spec)` in a child (`spec` is pickled; the workspace is the parent's); None when it finished,
    else why not. `progress` gets the units the child reports done, `note` its one-line notes (a retry under contention)."""
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile(mode="w+") as stderr:
        try:
            env = {**os.environ, _PROTOCOL: str(write_fd), "WHISPER_CPU_HOME": str(workspace.get().home)}
            child = subprocess.Popen([sys.executable, "-c", _CHILD, target], stdin=subprocess.PIPE,
                                     stderr=stderr, env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(read_fd, lines), daemon=True)
        reader.start()
        try:
            child.stdin.write(pickle.dumps(spec))
            child.stdin.close()
        except BrokenPipeError:
            pass  # it died on start: its exit status says why
        deadline = time.monotonic() + timeout
        try:
            while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
                message = json.loads(line)
                progress(message.get("done", 0))
                if "note" in message:
                    note(message["note"])
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
        except (queue.Empty, subprocess.TimeoutExpired):
            child.kill()
            child.wait()
            return f"timed out after {timeout:g} s"
        except BaseException:  # Ctrl-C: the child got SIGINT too; never leave it running
            child.kill()
            child.wait()
            raise
        stderr.seek(0)
        return _why(child.returncode, stderr.read())


def _read_lines(fd: int, lines: queue.Queue) -> None:
    with os.fdopen(fd, encoding="utf-8") as stream:
        for line in stream:
            lines.put(line)
    lines.put(None)


def _why(returncode: int, stderr: str) -> str | None:
    if returncode == 0:
        return None
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    if returncode < 0:
        fatal = next((line.strip() for line in stderr.splitlines() if line.startswith("Fatal Python error")), "")
        return f"crashed: {signal.Signals(-returncode).name}" + (f" ({fatal})" if fatal else "")
    return last or f"exited with status {returncode}"


def report(done: int = 0, note: str | None = None) -> None:
    """From inside a child: units finished, or a note for the parent's progress bar (nothing outside a child)."""
    if _channel is not None:
        _channel.write(json.dumps({"done": done, **({"note": note} if note else {})}) + "\n")
        _channel.flush()


_channel = None


def _main(target: str) -> int:
    global _channel
    faulthandler.enable()  # a native crash leaves its Python stack on stderr
    _channel = os.fdopen(int(os.environ.pop(_PROTOCOL)), "w", encoding="utf-8")
    module, function = target.split(":")
    spec = pickle.loads(sys.stdin.buffer.read())
    try:
        getattr(importlib.import_module(module), function)(spec)
    except Exception as error:  # noqa: BLE001 - the parent records it as the configuration's failure
        print(f"{type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
        return 1
    return 0

