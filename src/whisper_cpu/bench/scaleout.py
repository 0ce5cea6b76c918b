"""Throughput of `whisper-cpu corpus`: the same corpus on the local engine and on a local Ray cluster with 1 and 2
actors, each from scratch (fresh output folder, model loaded, Ray started), rows in results/corpus.csv."""

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import corpus, machine
from . import inputs, results

LAYOUTS = (("local", 0, 0), ("ray", 1, 0), ("ray", 2, 0))  # engine, actors, threads per actor (0: the cores shared out)


@dataclass(frozen=True)
class Options:
    model: str = "tiny.en"
    method: str = "auto"


def english_clips() -> list[Path]:
    """The manifest's English clips found here: the corpus every layout transcribes."""
    return [path for clip, path in inputs.available(inputs.read_manifest()) if clip.language == "en"]


def run(opts: Options, paths: list[Path], run_id: str | None = None, log=print) -> list[dict]:
    run_id = run_id or results.new_run_id()
    cores = machine.default_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="whisper-cpu-corpus-") as scratch:
        manifest = Path(scratch) / "corpus.csv"
        manifest.write_text("path\n" + "".join(f"{p.resolve()}\n" for p in paths))
        for engine, actors, threads in LAYOUTS:
            out = Path(scratch) / f"{engine}-{actors}"
            threads = threads or (cores if engine == "local" else max(1, cores // actors))
            options = corpus.Options(model=opts.model, method=opts.method, engine=engine, actors=actors, threads=threads, output_format="txt")
            start = time.perf_counter()
            records = corpus.run(options, manifest, out, log=lambda line: None)
            wall = time.perf_counter() - start
            if engine == "ray":
                import ray

                ray.shutdown()
            ok = [r for r in records.values() if not r["error"]]
            audio_s = sum(r["duration_s"] for r in ok)
            rows.append({
                "run_id": run_id, "timestamp": results.now(), **results.environment(threads), "model": opts.model,
                "method": ok[0]["method"] if ok else opts.method, "engine": engine, "actors": actors or 1, "threads_per_actor": threads,
                "files": len(records), "files_ok": len(ok), "files_failed": len(records) - len(ok), "audio_s": round(audio_s, 2),
                "wall_s": round(wall, 2), "audio_h_per_h": round(audio_s / wall, 2),
            })
            log(f"{engine} x{actors or 1} ({threads} thread{'s' if threads > 1 else ''} each): {len(ok)}/{len(records)} files, "
                f"{audio_s:.0f} s of audio in {wall:.1f} s ({audio_s / wall:.1f} audio-hours per hour)")
            shutil.rmtree(out)
    local = rows[0]["wall_s"]
    for row in rows:
        row["overhead_s_per_file"] = round((row["wall_s"] - local) / max(1, row["files"]), 3)  # against the local engine, same run
    results.append_csv("corpus", rows)
    return rows
