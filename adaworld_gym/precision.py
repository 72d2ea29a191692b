"""Whether bf16 is worth using on a device: the one place that decides, for sampling, training and labelling.

bf16 autocast is 2-3x faster than fp32 on CPUs with native bf16 (AMX, AVX-512 BF16), but on a CPU without it
(AVX2 only: many laptops and servers) oneDNN emulates it: there the shipped world model sampled 6.5-8.5x slower
than in fp32 (about 330 vs 39-51 ms a frame on an AVX2 AMD EPYC, one thread; ``scripts/ab_bf16.py``). Models keep
their ``autocast_dtype`` setting; it takes effect where this says bf16 is fast.
"""

from __future__ import annotations

import contextlib
import functools

__all__ = ["bf16_autocast", "bf16_is_fast"]


@functools.cache
def bf16_is_fast(device_type: str) -> bool:
    """True where bf16 math runs natively: CUDA GPUs that support it, CPUs whose oneDNN has bf16 kernels."""
    import torch

    if device_type == "cpu":
        # oneDNN's own check says yes on any AVX-512 CPU, where bf16 is emulated; the instructions must be there.
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except (AttributeError, RuntimeError):  # a build without these probes
            return False
    if device_type == "cuda":  # pre-Ampere GPUs emulate bf16, which the default answer counts as support
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return True  # other accelerators (mps, xpu): as configured


def bf16_autocast(device_type: str, wanted: bool = True) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 on ``device_type`` when ``wanted`` and :func:`bf16_is_fast` there; else off."""
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=wanted and bf16_is_fast(device_type))
