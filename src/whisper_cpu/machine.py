"""Facts about this CPU that decide threads, which methods run, and which measurements apply here."""

import os
import platform
from functools import lru_cache
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


@lru_cache(maxsize=1)
def cpuinfo() -> tuple[dict[str, str], ...]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    blocks = (dict(line.split(":", 1) for line in block.splitlines() if ":" in line) for block in text.split("\n\n") if block.strip())
    return tuple({k.strip(): v.strip() for k, v in b.items()} for b in blocks)


def physical_cores() -> int:
    cores = {(e.get("physical id", ""), e.get("core id", "")) for e in cpuinfo()}
    return len(cores) if cores and ("", "") not in cores else (os.cpu_count() or 1)


def default_threads() -> int:
    """All cores this process may use, never more than physical cores (oversubscription slows PyTorch)."""
    return max(1, min(len(os.sched_getaffinity(0)), physical_cores()))


def cpu_name() -> str:
    """This CPU's model name and generation: the `cpu` column that result rows and measured choices are matched on.
    In a virtual machine the name is often only the brand ("AMD EPYC" on a Zen 3, a Zen 4 and a Zen 5 alike, whose
    products run at different speeds and in a different order), so the family and model numbers go with it."""
    info = cpuinfo()[0] if cpuinfo() else {}
    name = info.get("model name", "") or platform.processor()
    return f"{name} (family {info['cpu family']} model {info['model']})" if "cpu family" in info and "model" in info else name


def flags() -> set[str]:
    return set(cpuinfo()[0].get("flags", "").split()) if cpuinfo() else set()


def isa() -> str:
    return " ".join(f for f in ISA_FLAGS if f in flags())


def cpu_has(*wanted: str) -> str | None:
    """None when the CPU has any of the flags, else why a method cannot run here."""
    return None if flags() & set(wanted) else f"needs a CPU with {' or '.join(wanted)}"
