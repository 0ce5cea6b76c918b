"""Raw result rows and the environment they were measured in; every table and plot is derived from these.

Rows are appended by rewriting the whole CSV into a temporary file and renaming it over the old one, so an
interrupted run leaves the file as it was after its last whole row, and a rerun never clobbers earlier runs.
"""

import csv
import io
import json
import os
import platform
import secrets
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch

from . import ROOT

RESULTS = ROOT / "results"
TIMINGS = RESULTS / "timings.csv"
ACCURACY = RESULTS / "accuracy.csv"
MEMORY = RESULTS / "memory.csv"
TRANSCRIPTS = RESULTS / "transcripts"
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo() -> list[dict[str, str]]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return [dict(line.split(":", 1) for line in block.splitlines() if ":" in line) for block in text.split("\n\n") if block.strip()]


def _field(entry: dict, key: str) -> str:
    return next((v.strip() for k, v in entry.items() if k.strip() == key), "")


def physical_cores() -> int:
    cores = {(_field(e, "physical id"), _field(e, "core id")) for e in _cpuinfo()}
    return len(cores) if cores and ("", "") not in cores else (os.cpu_count() or 1)


def default_threads() -> int:
    """All cores this process may use, never more than physical cores (oversubscription slows PyTorch)."""
    return max(1, min(len(os.sched_getaffinity(0)), physical_cores()))


def cpu_name() -> str:
    """This CPU's model name, the `cpu` column that result rows are matched on."""
    info = _cpuinfo()
    return (_field(info[0], "model name") if info else "") or platform.processor()


def environment(threads: int) -> dict:
    info = _cpuinfo()
    first = info[0] if info else {}
    flags = set(_field(first, "flags").split())
    return {
        "cpu": cpu_name(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "isa": " ".join(f for f in ISA_FLAGS if f in flags),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openai_whisper": version("openai-whisper"),
        "quantized_engine": torch.backends.quantized.engine,
        "git_commit": git_commit(),
    }


def git_commit() -> str:
    """The commit that produced a row, '+dirty' when the work tree had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        # results/ itself changes while a run appends to it; only code and inputs make a row "dirty"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_rows(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows atomically; new columns extend the header, old rows keep theirs empty."""
    old = read_rows(path)
    fields = list(dict.fromkeys([*(old[0] if old else []), *(k for row in rows for k in row)]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(old + rows)
    write_atomic(path, buffer.getvalue())


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def append_jsonl(path: Path, records: list[dict]) -> None:
    old = Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
    write_atomic(path, old + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside the target, then rename: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
