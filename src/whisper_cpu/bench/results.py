"""Raw result rows and the environment they were measured in; every table and plot is derived from these.

A table (timings, accuracy, longform, memory, peak) is its committed CSV `results/<table>.csv` plus
append-only shards `results/<table>/<run_id>.<host>-<pid>.jsonl`, one per writing process. A row is one line,
written whole and synced, so an interrupted run keeps every row it finished, a rerun only adds, and
concurrent writers (several processes, several machines on shared storage) never lose one.
"""

import json
import os
import platform
import secrets
import socket
import subprocess
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import torch

from .. import encoder, machine, workspace

TABLES = ("timings", "accuracy", "categories", "longform", "memory", "peak", "kernels", "serve", "corpus")


def environment(threads: int) -> dict:
    return {
        "cpu": machine.cpu_name(),
        "physical_cores": machine.physical_cores(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "isa": machine.isa(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openai_whisper": version("openai-whisper"),
        "quantized_engine": torch.backends.quantized.engine,
        "encoder_attention": encoder.kernel(threads or torch.get_num_threads()),  # the fast methods' encoder attention, timed on this CPU
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "",
        "git_commit": git_commit(),
    }


def git_commit() -> str:
    """The commit that produced a row, '+dirty' when the work tree had uncommitted changes; $WHISPER_CPU_GIT_COMMIT
    where the tree was copied without its history (a lent GPU machine)."""
    if os.environ.get("WHISPER_CPU_GIT_COMMIT"):
        return os.environ["WHISPER_CPU_GIT_COMMIT"]
    home = workspace.get().home
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=home, capture_output=True, text=True, check=True).stdout.strip()
        # results/ itself changes while a run appends to it; only code and inputs make a row "dirty"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=home, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _shard(table: str, run_id: str) -> Path:
    return workspace.get().results / table / f"{run_id}.{socket.gethostname()}-{os.getpid()}.jsonl"


def append(table: str, rows: list[dict]) -> None:
    """Append rows to this process's shard of the table, each line whole and synced before the next."""
    if rows:
        append_jsonl(_shard(table, rows[0]["run_id"]), rows)


def append_csv(table: str, rows: list[dict]) -> Path:
    """Add rows to the committed CSV itself, rewritten whole and renamed into place (one writer: a load test)."""
    path = workspace.get().results / f"{table}.csv"
    old = pd.read_csv(path) if path.exists() else pd.DataFrame()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.part")
    pd.concat([old, pd.DataFrame(rows)], ignore_index=True).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


FAILED = "failed"  # the `status` of a row that records why a configuration did not finish (its `error`), with no measurement
OLD_DECODING = "t0"  # rows from before the `decoding` column: temperature 0, no fallback, no conditioning
# Columns added after the first rows were written, and what a row without one meant; filled here, for every reader.
# Memory was always probed with the transcriber's default options (fallback and conditioning), timings and scores not.
BACKFILL = {
    "timings": {"decoding": OLD_DECODING, "weights": "real", "batch_size": 1, "isa": "", "status": "ok", "contended": False},
    "memory": {"decoding": "fallback+cond", "weights": "real", "batch_size": 1, "isa": ""},
    "accuracy": {"decoding": OLD_DECODING, "isa": "", "status": "ok", "material": "dev"},
    "categories": {"status": "ok", "material": "dev"},
    "longform": {"isa": "", "status": "ok", "material": "dev"},
    "peak": {"isa": "", "kernel": lambda rows: rows.arithmetic},  # one kernel per number format before the column
}


def read(table: str) -> pd.DataFrame:
    """Every row of a table: the committed CSV first, then the shards in run order, older rows' missing columns filled."""
    folder = workspace.get().results
    frames = [pd.read_csv(folder / f"{table}.csv", low_memory=False)] if (folder / f"{table}.csv").exists() else []
    records = [r for shard in sorted((folder / table).glob("*.jsonl")) for r in read_jsonl(shard)]
    if records:
        frames.append(pd.DataFrame.from_records(records))
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    for column, default in BACKFILL.get(table, {}).items():
        value = default(rows) if callable(default) else default
        rows[column] = rows[column].fillna(value) if column in rows else value
        if not callable(default):
            rows[column] = rows[column].astype(type(default))
    return rows


def run_ids() -> set[str]:
    """Every run that wrote a row anywhere, for refusing to 'resume' a run that never existed."""
    return {r for table in TABLES if "run_id" in (rows := read(table)) for r in rows.run_id.unique()}


def read_jsonl(path: Path) -> list[dict]:
    """The whole lines of a JSONL file; a line cut by a crash mid-write is skipped, not fatal."""
    if not Path(path).exists():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def append_jsonl(path: Path, records: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
