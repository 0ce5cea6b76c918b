"""whisper.cpp compiled for this CPU: the fastest build whose q8_0 text is right here (`make whispercpp`).

PyPI's pywhispercpp wheel is AVX2-only, so it is built from source with `-march=native`. On Intel hosts with
AMX that build turns on ggml's AMX kernels, which segfault on q8_0 models (seen here on a 2-core Xeon; ggml's
`ggml_backend_amx_mul_mat` crash is reported upstream as llama.cpp#20824, closed unfixed). So each build is
checked, in a process of its own, by transcribing a real clip with a q8_0 file; the next one (AMX off: the
`-mno-amx-*` flags win over `-march=native` in GCC) is tried only where a build fails. What was built and what
the check found is kept beside the installed package and recorded with every whisper.cpp row.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from .. import UserError, audio, machine
from . import ggml, inputs, isolate

VERSION = "1.5.1"
RPATH = "-DCMAKE_INSTALL_RPATH=$ORIGIN -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON"  # its extension finds its own libraries
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
RECORD = Path(sys.prefix) / "whispercpp-build.json"
CHECK_CLIP, CHECK_WORDS = "whisper_jfk", "ask not what your country can do for you"


def builds() -> list[tuple[str, str, str]]:
    """(name, CMAKE_ARGS, CFLAGS and CXXFLAGS) to try on this CPU, fastest first. The compiler flags go through the
    environment: pywhispercpp splits CMAKE_ARGS on spaces, and CMake's first configure reads CFLAGS/CXXFLAGS."""
    native = ("native", f"-DGGML_NATIVE=ON {RPATH}", "")
    if not machine.flags() & {"amx_tile", "amx_int8"}:
        return [native]
    return [native, ("native, AMX off", native[1], NO_AMX)]


def check(_spec=None) -> None:
    """In a child: tiny.en in q8_0 must transcribe the check clip's words (a crash kills only the child)."""
    from pywhispercpp.model import Model

    clip = next(c for c in inputs.read_manifest() if c.id == CHECK_CLIP)
    model = Model(str(ggml.model_file("tiny.en", "q8_0")), redirect_whispercpp_logs_to=None, n_threads=1, language="en",
                  temperature=0.0, temperature_inc=0.0, no_context=True, print_progress=False)
    text = " ".join(s.text for s in model.transcribe(audio.load(inputs.locate(clip))))
    if CHECK_WORDS not in text.lower():
        raise RuntimeError(f"q8_0 gave the wrong text: {text.strip()[:80]!r}")


def system_info() -> str:
    import _pywhispercpp

    return _pywhispercpp.whisper_print_system_info().strip(" |")


def record() -> dict:
    """What `make whispercpp` built here and whether its q8_0 check passed ({} before it ran)."""
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


def _install(name: str, cmake_args: str, cflags: str) -> None:
    print(f"whisper.cpp: building pywhispercpp {VERSION} ({name}: CMAKE_ARGS={cmake_args!r} CFLAGS={cflags!r})", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-cache-dir", "--force-reinstall", "--no-deps", "--no-binary",
                    "pywhispercpp", f"pywhispercpp=={VERSION}"], check=True,
                   env={**os.environ, "CMAKE_ARGS": cmake_args, "CFLAGS": cflags, "CXXFLAGS": cflags})


def _keep(name: str, cmake_args: str, cflags: str, works: bool | None, failures: list[str]) -> int:
    RECORD.write_text(json.dumps({"build": name, "cmake_args": cmake_args, "cflags": cflags, "system_info": system_info(),
                                  "q8_0_works": works, "failures": failures}, indent=1) + "\n")
    verdict = {True: "transcribes correctly", False: "fails with every build", None: "unchecked"}[works]
    print(f"whisper.cpp: kept the {name} build ({system_info()}); q8_0 {verdict}")
    return 0


def main() -> int:
    try:
        inputs.locate(next(c for c in inputs.read_manifest() if c.id == CHECK_CLIP))
    except UserError as error:  # no real speech here to check against: the first build, said to be unchecked
        _install(*builds()[0])
        return _keep(*builds()[0], None, [f"no check clip: {error}"])
    failures = []
    for build in builds():
        _install(*build)
        if (why := isolate.call("whisper_cpu.bench.native:check", None, timeout=600)) is None:
            return _keep(*build, True, failures)
        failures.append(f"{build[0]}: {why}")
        print(f"whisper.cpp: the {build[0]} build fails its q8_0 check here ({why})", flush=True)
    return _keep(*build, False, failures)


if __name__ == "__main__":
    sys.exit(main())
