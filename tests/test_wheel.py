"""The wheel works installed with its core dependencies alone, from another folder, with no source checkout in sight:
transcription runs, the extras' packages are absent, and each command that needs an extra says which in one line."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from whisper_cpu import workspace
from whisper_cpu.bench import inputs

CHECKOUT = Path(__file__).resolve().parents[1]
EXTRAS = ("pandas", "jiwer", "matplotlib", "fastapi", "uvicorn", "ray", "faster_whisper", "ctranslate2", "onnxruntime", "torchao", "httpx")
MISSING = {  # command line: its one line
    ("serve", "--model", "tiny.en"): "serve needs the serve extra: pip install 'whisper-cpu[serve]'",
    ("corpus", "in", "--output-dir", "out", "--engine", "ray"): "corpus --engine ray needs the corpus extra: pip install 'whisper-cpu[corpus]'",
    ("bench", "--models", "tiny.en"): "bench needs the bench extra: pip install 'whisper-cpu[bench]'",
    ("report",): "report needs the bench extra: pip install 'whisper-cpu[bench]'",
    ("transcribe", "a.wav", "--method", "torchao-int8dq"):
        "method 'torchao-int8dq' cannot run here: it needs the torchao extra: pip install 'whisper-cpu[torchao]'",
}
CHECKS = f"""
import importlib.util, sys
import whisper_cpu
from whisper_cpu.cli import main
print(whisper_cpu.__file__)
print([m for m in {EXTRAS!r} if importlib.util.find_spec(m)])
result = whisper_cpu.load_model("tiny.en", method="fp32").transcribe(sys.argv[1])
print(result["text"].strip())
print([main(list(argv)) for argv in {list(MISSING)!r}])
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    project = folder / "project"  # a copy: building in the checkout would leave build/ behind in it
    shutil.copytree(CHECKOUT / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, project / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(folder / "dist"), str(project)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (found,) = (folder / "dist").glob("whisper_cpu-*.whl")
    return found


def requires(wheel: Path) -> list[Requirement]:
    """The wheel's own Requires-Dist: what `pip install whisper-cpu` installs."""
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


def closure(wanted: list[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions these requirements pull in, markers evaluated here (extras only where asked for)."""
    found, todo = {}, [(r, ("",)) for r in wanted]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found or (requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in extras)):
            continue
        found[name] = importlib.metadata.distribution(name)
        todo += [(Requirement(r), ("", *requirement.extras)) for r in found[name].requires or ()]
    return found


def core_environment(wheel: Path, folder: Path) -> Path:
    """A fresh virtual environment holding the wheel and, linked from this one, its core dependencies and theirs alone."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(folder), "platbase": str(folder)})["purelib"])
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(folder / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    for dist in closure(requires(wheel)).values():
        for top in {f.parts[0] for f in dist.files or () if f.parts[0] not in ("..", "__pycache__")}:
            if not (site / top).exists():
                (site / top).symlink_to(Path(dist.locate_file(top)))
    return folder


def works_on_its_core_alone(env: Path, folder: Path, clip: Path) -> None:
    """From a folder of its own, in a fresh workspace: the API and the CLI transcribe, no extra's package is there, and
    each command that needs one says which in one line."""
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {
        "WHISPER_CPU_HOME": str(folder / "home"), "WHISPER_CPU_MODELS": str(workspace.get().models)}
    done = subprocess.run([str(env / "bin" / "python"), "-c", CHECKS, str(clip)], cwd=elsewhere, env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    where, present, text, codes = done.stdout.splitlines()
    assert where.startswith(str(env)) and present == "[]" and "greasy wash" in text.lower()
    assert codes == str([2] * len(MISSING))
    assert [line for line in done.stderr.splitlines() if line.startswith("whisper-cpu")] == [f"whisper-cpu: error: {m}" for m in MISSING.values()]
    assert "Traceback" not in done.stderr
    cli = subprocess.run([str(env / "bin" / "whisper-cpu"), "transcribe", str(clip), "--model", "tiny.en", "--output-dir", "out"],
                         cwd=elsewhere, env=environ, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "documented default" in cli.stderr  # a fresh workspace has measured nothing
    assert "greasy wash" in (elsewhere / "out" / f"{clip.stem}.txt").read_text().lower()


def test_the_wheel_on_its_core_dependencies_transcribes_and_names_each_missing_extra(wheel, tmp_path, clips, mirror):
    """Its core dependencies and theirs linked from this environment: about 20 s."""
    names = {canonicalize_name(r.name) for r in requires(wheel) if not r.marker}
    assert names == {"torch", "openai-whisper", "av", "numpy", "tqdm", "silero-vad"}
    works_on_its_core_alone(core_environment(wheel, tmp_path / "env"), tmp_path, inputs.locate(clips["deepspeech_LDC93S1"]))


@pytest.mark.slow
def test_pip_installs_the_wheel_with_its_core_dependencies_alone(wheel, tmp_path, clips, mirror):
    """`pip install whisper-cpu` as a user runs it, from the package indexes (requirements.txt's versions): minutes, mostly
    unpacking PyTorch and Triton."""
    pins = tmp_path / "pins.txt"  # constraints take no extras
    lines = (CHECKOUT / "requirements.txt").read_text().splitlines()
    pins.write_text("".join(f"{r.name}{r.specifier}\n" for r in map(Requirement, (l for l in lines if l and not l.startswith("#")))))
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    installed = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(pins), str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    works_on_its_core_alone(env, tmp_path, inputs.locate(clips["deepspeech_LDC93S1"]))
    shutil.rmtree(env)  # 2 GB
