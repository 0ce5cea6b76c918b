import os
import subprocess
import sys

from whisper_cpu import machine
from whisper_cpu.bench import results


def test_rows_are_appended_and_read_back_with_extended_columns(scratch):
    results.append("timings", [{"run_id": "a", "wall_s": 1.0}])
    results.append("timings", [{"run_id": "b", "wall_s": 2.0, "tokens": 7}])
    rows = results.read("timings")
    assert list(rows.run_id) == ["a", "b"] and rows.tokens.isna().tolist() == [True, False]
    assert results.run_ids() == {"a", "b"}


def test_committed_csv_comes_first_then_the_shards(scratch):
    scratch.mkdir(parents=True)
    (scratch / "timings.csv").write_text("run_id,wall_s\nold,3.0\n")
    results.append("timings", [{"run_id": "new", "wall_s": 1.0}])
    assert list(results.read("timings").run_id) == ["old", "new"]


def test_a_line_cut_by_a_crash_loses_only_itself(scratch):
    results.append("timings", [{"run_id": "a", "wall_s": 1.0}])
    (shard,) = (scratch / "timings").iterdir()
    with open(shard, "a") as f:
        f.write('{"run_id": "b", "wal')  # killed mid-write
    assert list(results.read("timings").run_id) == ["a"]


def test_concurrent_writers_never_lose_a_row(scratch):
    writer = "from whisper_cpu.bench import results\nfor i in range(200): results.append('timings', [{'run_id': 'r', 'i': i}])"
    children = [subprocess.Popen([sys.executable, "-c", writer], env=os.environ.copy()) for _ in range(3)]
    assert [c.wait() for c in children] == [0, 0, 0]
    rows = results.read("timings")
    assert len(rows) == 600 and len(list((scratch / "timings").glob("*.jsonl"))) == 3
    assert sorted(rows.groupby("i").size().unique()) == [3]


def test_environment_names_the_machine():
    env = results.environment(threads=1)
    cpuinfo = open("/proc/cpuinfo").read()
    first = lambda key: next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.split(":")[0].strip() == key)
    flags = set(first("flags").split())
    # the generation with the name: a virtual machine says only "AMD EPYC" on Zen 3, 4 and 5
    assert env["cpu"] == f"{first('model name')} (family {first('cpu family')} model {first('model')})" and env["logical_cpus"] == os.cpu_count() and env["threads"] == 1
    assert env["isa"].split() == [f for f in machine.ISA_FLAGS if f in flags]
    assert env["torch"].startswith("2.13.0") and env["openai_whisper"] == "20250625"


def test_old_rows_get_their_missing_columns_once_on_reading(scratch):
    scratch.mkdir(parents=True)
    (scratch / "timings.csv").write_text("run_id,wall_s\nold,3.0\n")
    results.append("timings", [{"run_id": "new", "wall_s": 1.0, "decoding": "fallback+cond", "batch_size": 8, "status": "failed"}])
    rows = results.read("timings")
    assert rows[["decoding", "weights", "batch_size", "isa", "status"]].values.tolist() == [
        ["t0", "real", 1, "", "ok"], ["fallback+cond", "real", 8, "", "failed"]]
