import pytest

from whisper_cpu import results


def test_append_keeps_old_rows_and_extends_the_header(tmp_path):
    path = tmp_path / "t.csv"
    results.append_rows(path, [{"run_id": "a", "wall_s": 1.0}])
    results.append_rows(path, [{"run_id": "b", "wall_s": 2.0, "tokens": 7}])
    rows = results.read_rows(path)
    assert [r["run_id"] for r in rows] == ["a", "b"]
    assert rows[0]["tokens"] == "" and rows[1]["tokens"] == "7"


def test_a_failed_write_leaves_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    results.append_rows(path, [{"run_id": "a", "wall_s": 1.0}])
    before = path.read_text()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "fsync", crash)
    with pytest.raises(OSError):
        results.append_rows(path, [{"run_id": "b", "wall_s": 2.0}])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_environment_names_the_machine():
    env = results.environment(threads=1)
    assert env["cpu"] and env["physical_cores"] >= 1 and env["torch"].startswith("2.13")
    assert 1 <= results.default_threads() <= env["logical_cpus"]
