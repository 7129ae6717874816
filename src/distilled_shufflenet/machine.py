"""What this CPU can do, in one place: the instruction sets the inference paths depend on, and the
cores this process may use. Every speed figure of the project is read beside these facts.

>>> from distilled_shufflenet import machine
>>> machine.summary()["isa"], machine.bf16_support(), machine.vnni_support()
('AVX512', (True, 'AVX512-BF16'), True)

oneDNN (PyTorch's CPU kernels and OpenVINO's) honours ``ONEDNN_MAX_CPU_ISA`` set before the process
starts: ``ONEDNN_MAX_CPU_ISA=AVX2`` makes an AVX-512 machine run AVX2 kernels, without VNNI or native
bf16, so the checks here answer as that CPU would.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import torch

# oneDNN's ISA limits below which neither VNNI nor native bf16 exist (AVX2_VNNI and up have VNNI)
_LIMITS_WITHOUT_VNNI = ("SSE41", "AVX", "AVX2")
_LIMITS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def isa_limit() -> str | None:
    """``ONEDNN_MAX_CPU_ISA`` as set for this process (upper case), or ``None``."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip().upper() not in ("", "ALL", "DEFAULT") else None


def isa() -> str:
    """The vector instruction set PyTorch's CPU kernels use (``AVX2``, ``AVX512``, ...), and the oneDNN
    limit when one is set (``AVX512 (oneDNN limited to AVX2)``)."""
    capability = torch.backends.cpu.get_cpu_capability()
    limit = isa_limit()
    return f"{capability} (oneDNN limited to {limit})" if limit else capability


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the platform's processor string elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def vnni_support() -> bool:
    """Whether int8 kernels may use VNNI (one instruction for a u8 x s8 product-sum into int32). Without
    it, oneDNN's int8 convolutions sum pairs of products in 16 bits, which saturates on large
    activations, so the int8 paths calibrate to half the activation range there."""
    limit = isa_limit()
    if limit and limit in _LIMITS_WITHOUT_VNNI:
        return False
    return bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)())


def amx_support() -> bool:
    """Whether the CPU has AMX tiles (bf16 and int8 matrix units; Intel Sapphire Rapids and later)."""
    limit = isa_limit()
    if limit and not limit.startswith("AVX512_CORE_AMX"):
        return False
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def bf16_support() -> tuple[bool, str]:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX tiles), and the reason either way.

    Without them bf16 arithmetic is emulated, many times slower than fp32: a bf16 path would say nothing
    about the model, and a bf16 backend would only waste time.
    """
    if not torch.backends.mkldnn.is_available():
        return False, "PyTorch was built without oneDNN (torch.backends.mkldnn.is_available() is False)"
    limit = isa_limit()
    if limit and limit in _LIMITS_WITHOUT_BF16:
        return False, f"ONEDNN_MAX_CPU_ISA={limit} leaves oneDNN no native bf16, so bf16 would be emulated"
    has_avx512_bf16 = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    if has_avx512_bf16 or amx_support():
        return True, "AMX tiles" if amx_support() else "AVX512-BF16"
    return False, (f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has neither AVX512-BF16 nor AMX, "
                   "so bf16 would be emulated")


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other processes competing for the cores."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def summary() -> dict[str, Any]:
    """The facts a speed figure depends on, as plain values (for reports and JSON)."""
    native_bf16, why = bf16_support()
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa": isa(),
        "onednn_isa_limit": isa_limit(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "bf16_native": native_bf16,
        "bf16_note": why,
        "vnni": vnni_support(),
        "amx": amx_support(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


def describe(facts: dict[str, Any] | None = None) -> str:
    """One line of :func:`summary` (or of ``facts``, a summary read back from a report):
    ``AMD EPYC (AVX512; VNNI, native bf16 (AVX512-BF16), no AMX), 2 usable CPUs``."""
    s = facts or summary()
    flags = ", ".join([
        "VNNI" if s["vnni"] else "no VNNI",
        f"native bf16 ({s['bf16_note']})" if s["bf16_native"] else "no native bf16",
        "AMX" if s.get("amx") else "no AMX",
    ])
    return f"{s['cpu_model']} ({s['isa']}; {flags}), {s['usable_cpus']} usable CPUs"
