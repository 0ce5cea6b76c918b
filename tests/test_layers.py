"""The house: the library never imports the benchmark, and one registry entry is all a new method needs."""

import ast
import subprocess
import sys
from pathlib import Path


import whisper_cpu
from whisper_cpu import transcribe, workspace
from whisper_cpu.bench import accuracy, figures, harness, inputs, longform, publish, results, tables
from whisper_cpu.runner import DecodeOptions

PACKAGE = Path(whisper_cpu.__file__).parent
COMPOSITION = {"cli.py", "__main__.py"}  # the entry point composes both layers


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names |= {base} | {f"{base}.{a.name}" if base.endswith(".") is False else f"{base}{a.name}" for a in node.names}
    return names


def test_no_library_module_imports_the_benchmark():
    library = [p for p in PACKAGE.glob("*.py") if p.name not in COMPOSITION]
    assert {p.stem for p in library} >= {"audio", "models", "decoding", "quantize", "registry", "runner", "transcribe", "workspace"}
    for path in library:
        bad = [n for n in imported(path) if "bench" in n.split(".")]
        assert not bad, f"{path.name} imports the benchmark: {bad}"
    code = "import sys, whisper_cpu.transcribe, whisper_cpu.registry; print([m for m in sys.modules if m.startswith('whisper_cpu.bench')])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_a_registered_method_flows_through_bench_gates_report_and_transcribe(plugins, scratch, clips, mirror, tmp_path, manifest_of):
    """`throwaway` (tests/plugin_methods.py) is fp32 under another name: registered once, nothing else edited."""
    quiet = lambda *_: None  # noqa: E731
    clip = inputs.file_input(inputs.locate(clips["deepspeech_LDC93S1"]))
    run_id = harness.run(harness.Options(models=("tiny.en",), methods=("fp32", "throwaway"), repeats=1, threads=1, warmup=False),
                         clip, log=quiet)
    manifest = manifest_of("deepspeech_LDC93S1", "deepspeech_new-home-in-the-stars-16k")
    accuracy.run(accuracy.Options(models=("tiny.en",), methods=("throwaway",), threads=1, manifest=manifest), run_id, quiet)
    longform.run(longform.Options(models=("tiny.en",), methods=("throwaway",), threads=1, manifest=manifest), run_id, quiet)

    timings = tables.load_timings()
    assert set(tables.summary(timings).method) == {"fp32", "throwaway"}
    scores = tables.load_accuracy().set_index("method")
    assert scores.loc["throwaway", "wer_delta"] == 0 and scores.loc["throwaway", "system"] == "whisper_cpu"
    assert "throwaway" in set(tables.longform_table(tables.load_longform()).method)
    written = figures.write_figures(timings, tables.load_accuracy(), tables.published(), tmp_path / "figures")
    assert sorted(p.name for p in written) == ["speed_vs_wer.png", "speedup_vs_published.png", "time_split.png"]  # one thread count, no memory rows
    assert "| tiny.en | throwaway" in publish.results_markdown(timings, tables.load_accuracy(), tables.published())

    publish.write_choices()
    choice = {c["method"]: c for c in transcribe._read_choices(workspace.get().choices)}["throwaway"]
    assert choice["gated"] and choice["timing_run"] == run_id  # both dev gates scored it, on this CPU
    assert not choice["faithful"] and "harder material: not measured" in choice["why"]  # auto also needs the harder gates (test_choices)
    for method in ("throwaway", "auto"):
        opts = transcribe.Options(model="tiny.en", method=method, output_dir=tmp_path / method, threads=1, decoding=DecodeOptions())
        assert transcribe.run(opts, [clip.path], log=quiet) == 0
        assert "greasy wash" in (tmp_path / method / f"{clip.path.stem}.txt").read_text().lower()
    assert results.run_ids() == {run_id}
