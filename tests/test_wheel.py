"""The library works as an installed wheel, from another folder, with no source checkout in sight."""

import os
import shutil
import subprocess
import sys
from pathlib import Path


from whisper_cpu import workspace
from whisper_cpu.bench import inputs

CHECKOUT = Path(__file__).resolve().parents[1]


def test_an_installed_wheel_transcribes_from_another_folder(tmp_path, clips, mirror):
    project = tmp_path / "project"  # a copy: building in the checkout would leave build/ behind in it
    shutil.copytree(CHECKOUT / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, project / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(project)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("whisper_cpu-*.whl")
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "WHISPER_CPU_HOME": str(tmp_path / "home"), "WHISPER_CPU_MODELS": str(workspace.get().models)}
    where = subprocess.run([sys.executable, "-c", "import whisper_cpu; print(whisper_cpu.__file__)"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    clip = inputs.locate(clips["deepspeech_LDC93S1"])
    done = subprocess.run([str(target / "bin" / "whisper-cpu"), "transcribe", str(clip), "--model", "tiny.en", "--output-dir", "out"],
                          cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "documented default" in done.stderr  # a fresh workspace has measured nothing
    assert "greasy wash" in (elsewhere / "out" / f"{clip.stem}.txt").read_text().lower()
