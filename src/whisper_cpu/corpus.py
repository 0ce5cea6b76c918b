"""`whisper-cpu corpus`: every audio file of a folder or manifest transcribed once, on this machine or on a Ray cluster.

Each file gets the transcriber's outputs and one record in `DIR/records.jsonl` (source, size, sha256, duration,
model, method, language, elapsed, text or error). Records are appended whole and synced as files finish, and the
file is compacted (the last record per source) at the start and end of a run, so a run killed at any point loses
nothing: the rerun skips every file whose record has the same sha256, model and method and no error, and does the
rest. Sources are keyed by their absolute path, so any spelling of the corpus (relative, absolute, through a link)
finds the same records. The model and method are chosen once, on the driver; the Ray engine (Ray Data `map_batches`
over an actor pool, each actor loading the model once) writes the same outputs and records as the local one.

Outputs are named after the source's stem (`talk.wav` writes `talk.txt`), or after its whole name where another source
of its folder has that stem (`talk.wav` and `talk.mp3` write `talk.wav.txt` and `talk.mp3.txt`): no file of a corpus is
refused, and none overwrites another's outputs.
"""

import csv
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import UserError, api, machine, models, registry, transcribe
from .audio import SAMPLE_RATE
from .files import sha256, write_text
from .runner import DecodeOptions, Transcript, read, samples_of

AUDIO = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm", ".mp4", ".aac", ".wma", ".mkv", ".aiff", ".aif", ".mov"}
RECORDS = "records.jsonl"


@dataclass(frozen=True)
class Options:
    model: str = "base"
    method: str = "auto"
    output_format: str = "all"
    decoding: DecodeOptions = DecodeOptions()
    engine: str = "local"  # or "ray"
    address: str | None = None  # a Ray cluster's (default: start one on this machine)
    actors: int = 0  # Ray actors (0: as many as the cluster's CPUs hold at `threads` each)
    threads: int = 0  # the local engine's threads, or each actor's (0: all cores locally, see `actor_layout` on Ray)
    batch_size: int = 0
    writer: dict = field(default_factory=dict)


def sources(source: Path) -> list[Path]:
    """A folder's audio files (recursively, by extension) or a manifest's `path` column (CSV or JSONL), in order, each
    once by its absolute path: folders resolved, names kept (a link to a file is a source of its own name)."""
    source = Path(source)
    if source.is_dir():
        return sorted({p.parent.resolve() / p.name for p in source.rglob("*") if p.suffix.lower() in AUDIO and p.is_file()})
    if not source.is_file():
        raise UserError(f"no folder or manifest at {source}")
    try:
        if source.suffix.lower() == ".jsonl":
            rows = [_row(line, n) for n, line in enumerate(source.read_text(encoding="utf-8-sig").splitlines(), 1) if line.strip()]
        elif source.suffix.lower() == ".csv":
            with open(source, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        else:
            raise UserError(f"{source}: a corpus is a folder, a .csv or a .jsonl manifest")
    except UnicodeDecodeError:
        raise UserError(f"{source}: the manifest is not UTF-8 text") from None
    except (ValueError, csv.Error) as error:
        raise UserError(f"{source}: {error}") from None
    if rows and "path" not in rows[0]:
        raise UserError(f"{source}: the manifest has no `path` column")
    for n, row in enumerate(rows, 1):
        if not isinstance(row.get("path"), str) or not row["path"].strip():
            raise UserError(f"{source}: row {n} has no path")
    return list(dict.fromkeys((p := source.parent / r["path"]).parent.resolve() / p.name for r in rows))  # an absolute path stays itself


def _row(line: str, number: int) -> dict:
    """One line of a JSONL manifest, an object (whose `path` `sources` checks)."""
    try:
        row = json.loads(line)
    except ValueError:
        raise ValueError(f"line {number} is not JSON") from None
    if not isinstance(row, dict):
        raise ValueError(f"line {number} is not a JSON object")
    return row


def output_stems(paths: list[Path]) -> dict[Path, str]:
    """Each source's outputs' name before their extension: its stem where no other source of its folder has that stem
    or name, else its whole name (names are unique in a folder, and a kept stem is no one's name)."""
    taken = Counter(name for p in paths for name in {(p.parent, p.stem), (p.parent, p.name)})
    return {p: p.stem if taken[p.parent, p.stem] == 1 else p.name for p in paths}


def read_records(folder: Path) -> dict[str, dict]:
    """The last record of each source (a line cut by a crash, or anything else not a record, is skipped)."""
    records = {}
    path = Path(folder) / RECORDS
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("source"), str):  # not one of ours: skipped, as a cut line
                records[record["source"]] = record
    return records


def compact(folder: Path) -> dict[str, dict]:
    """records.jsonl rewritten with one record per source, atomically, keeping its mode: the umask's, as `touch` made it."""
    records, path = read_records(folder), Path(folder) / RECORDS
    path.touch()
    mode = path.stat().st_mode & 0o7777
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values()))
    path.chmod(mode)  # the rename brought the temporary file's 0600
    return records


def append(folder: Path, record: dict) -> None:
    with open(Path(folder) / RECORDS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def todo(paths: list[Path], done: dict[str, dict], model: str, method: str) -> list[tuple[Path, str]]:
    """(path, sha256) of the files without a successful record for this content, model and method."""
    out = []
    for path in paths:
        digest = sha256(path) if path.is_file() else ""
        record = done.get(str(path))
        if not (record and record.get("error") is None and (record["sha256"], record["model"], record["method"]) == (digest, model, method)):
            out.append((path, digest))
    return out


class Transcriber:
    """One loaded model writing outputs and making records: what the local engine runs, and each Ray actor."""

    def __init__(self, opts: Options, method: str, threads: int, root: Path):
        self.opts, self.method, self.root = opts, method, Path(root)
        self.runner = api.Model(opts.model, method, threads, opts.batch_size).runner
        self.batched = registry.get(method).batched

    def __call__(self, files: Iterable[tuple[Path, str, str]], output_dir: Path) -> Iterator[dict]:
        """A record per (path, sha256, output stem) as each finishes (a file that does not read, as soon as it is read).
        Outputs keep the sources' folders below the corpus root, so files of one name in two folders do not overwrite
        each other."""
        jobs, samples, order, finished = {path: (digest, stem) for path, digest, stem in files}, {}, [], {}

        def readable() -> Iterator[np.ndarray]:
            for path, (digest, _) in jobs.items():
                loaded = None
                try:
                    loaded = samples_of(path)
                    samples[path] = read(loaded)
                except UserError as error:
                    duration = None if loaded is None else len(loaded) / SAMPLE_RATE  # a silent file's length is known
                    finished[path] = self._record(path, digest, None, duration, error=str(error))
                    continue
                order.append(path)
                yield samples[path]

        start = time.perf_counter()
        for i, (_, transcript) in enumerate(self.runner.many(readable(), self.opts.decoding)):  # in the order the arrays went in
            path = order[i]
            elapsed = None if self.batched else time.perf_counter() - start  # a batch's files come out together: no time of their own
            finished[path] = self._finish(path, *jobs[path], transcript, samples.pop(path), output_dir, elapsed)
            start = time.perf_counter()
            yield from _drain(finished)
        yield from _drain(finished)

    def _finish(self, path: Path, digest: str, stem: str, transcript, samples, output_dir: Path, elapsed: float | None) -> dict:
        if isinstance(transcript, Exception):
            return self._record(path, digest, elapsed, len(samples) / SAMPLE_RATE, error=str(transcript))
        folder = Path(output_dir) / path.parent.relative_to(self.root)
        named = path.with_name(stem + path.suffix)  # openai-whisper's writers name the outputs by what precedes the suffix
        try:
            folder.mkdir(parents=True, exist_ok=True)
            written = transcribe.write_outputs(transcript.as_whisper_result(), named, self.opts.output_format, folder, self.opts.writer)
        except (OSError, UserError) as error:
            return self._record(path, digest, elapsed, len(samples) / SAMPLE_RATE, error=str(error))
        return self._record(path, digest, elapsed, len(samples) / SAMPLE_RATE, transcript=transcript,
                            outputs=[str(p.relative_to(output_dir)) for p in written])

    def _record(self, path: Path, digest: str, elapsed: float | None, duration: float | None = None, transcript: Transcript | None = None,
                error: str | None = None, outputs: list[str] = ()) -> dict:
        """`duration` None: the file did not read; `elapsed` None: it was transcribed in batches beside others."""
        return {"source": str(path), "size": path.stat().st_size if path.is_file() else None, "sha256": digest,
                "duration_s": None if duration is None else round(duration, 3), "model": self.opts.model, "method": self.method,
                "language": transcript.language if transcript else None, "elapsed_s": None if elapsed is None else round(elapsed, 3),
                "text": transcript.text if transcript else None, "outputs": list(outputs), "error": error}


def _drain(finished: dict) -> Iterator[dict]:
    while finished:
        yield finished.pop(next(iter(finished)))


def run(opts: Options, source: Path, output_dir: Path, log=lambda line: print(line, file=sys.stderr)) -> dict[str, dict]:
    """Transcribe what is left of the corpus; returns every source's final record."""
    models.checkpoint_path(opts.model)  # an unknown model is refused before any file is hashed or anything written
    if opts.engine == "ray" and opts.address:
        reachable(opts.address)
    opts = replace(opts, decoding=replace(opts.decoding, language=transcribe.language_for(opts.model, opts.decoding.language)))
    transcribe.check_options(opts)
    threads = opts.threads or machine.default_threads()
    method, why = transcribe.resolve_method(opts.model, opts.method, threads)
    registry.ours(method)
    paths = sources(source)
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"--output-dir {output_dir}: cannot be made a folder ({error.strerror})") from None
    if why:
        log(f"method {method}: {why}")
    stems = output_stems(paths)
    left = [(path, digest, stems[path]) for path, digest in todo(paths, compact(output_dir), opts.model, method)]
    log(f"{len(paths)} files, {len(paths) - len(left)} already done, {len(left)} to transcribe ({opts.engine} engine)")
    if left:
        root = Path(os.path.commonpath([p.parent for p in paths]))
        records = (Transcriber(opts, method, threads, root)(left, output_dir) if opts.engine == "local" else
                   _ray(opts, method, left, output_dir, root, log))
        for record in records:
            append(output_dir, record)
            log(f"{'error' if record['error'] else 'done'}: {record['source']}" + (f": {record['error']}" if record["error"] else ""))
    return compact(output_dir)


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """A Ray cluster's HOST:PORT (or ray://HOST:PORT) refused in one line where nothing answers: `ray.init` retries such an
    address for minutes, silently. `auto` (the cluster this machine is part of) is Ray's to find."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: a Ray cluster's HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise UserError(f"--address {address}: no Ray cluster answers there ({error.strerror or error})") from None


class _Actor:
    """Ray Data's callable class: the model loaded once per actor, a batch of paths in, their records out."""

    def __init__(self, opts: Options, method: str, threads: int, output_dir: str, root: str):
        self.transcriber, self.output_dir = Transcriber(opts, method, threads, Path(root)), Path(output_dir)

    def __call__(self, batch: dict) -> dict:
        files = [(Path(p), d, s) for p, d, s in zip(batch["path"], batch["sha256"], batch["stem"])]
        return {"record": [json.dumps(r, ensure_ascii=False) for r in self.transcriber(files, self.output_dir)]}


def actor_layout(cpus: int, actors: int = 0, threads: int = 0) -> tuple[int, int]:
    """(actors, threads per actor) that use the cluster's CPUs without oversubscribing them."""
    if actors:
        return actors, threads or max(1, cpus // actors)
    threads = threads or min(cpus, 2)
    return max(1, cpus // threads), threads


def _ray(opts: Options, method: str, files: list[tuple[Path, str, str]], output_dir: Path, root: Path, log) -> Iterator[dict]:
    import ray

    if not ray.is_initialized():
        # Ray Data hands its actors their constructor through the object store, which Ray's core reports in an error line
        # on every run (ray-project/ray#57733): Ray's C++ log level, here and in a local cluster started here, keeps it
        # off stderr (a RAY_BACKEND_LOG_LEVEL the user set wins)
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray.init(address=opts.address, include_dashboard=False, log_to_driver=False,
                 **({} if opts.address else {"num_cpus": machine.default_threads()}))
    ray.data.DataContext.get_current().enable_progress_bars = False  # a line per file is printed instead
    actors, threads = actor_layout(int(ray.cluster_resources().get("CPU", 1)), opts.actors, opts.threads)
    actors = min(actors, len(files))  # each loads the model: none without a file to transcribe
    log(f"ray: {actors} actor{'s' if actors > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}")
    items = [{"path": str(p), "sha256": d, "stem": s} for p, d, s in files]
    # a killed actor comes back and its batch is done again: Ray Data's default (max_restarts and max_task_retries -1)
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _Actor, fn_constructor_kwargs={"opts": opts, "method": method, "threads": threads, "output_dir": str(output_dir), "root": str(root)},
        batch_size=max(1, opts.batch_size or 4), compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads)
    for row in dataset.iter_rows():
        yield json.loads(row["record"])
