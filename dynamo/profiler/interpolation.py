"""The profiler's interpolation output, in NVIDIA Dynamo's layout, and the sweep grids that fill it.

The format itself (file names, npz keys, loaders, interpolators) is the contract module
`dynamo.llm.perf_data`, shared with the planner and the mocker; the names below are that
module's, re-exported so the planner can `from dynamo.profiler.interpolation import load_profile`.
"""

from __future__ import annotations

from dynamo.llm.perf_data import (DECODE_DIR, DECODE_JSON, PREFILL_DIR, PREFILL_JSON, RAW_FILE, DecodeProfile,
                                  PrefillProfile, Profile, load_profile, write_profile)

__all__ = ["DECODE_DIR", "DECODE_JSON", "PREFILL_DIR", "PREFILL_JSON", "RAW_FILE", "DecodeProfile", "PrefillProfile",
           "Profile", "load_profile", "write_profile", "prefill_isls", "decode_isls", "DECODE_OSL"]

DECODE_OSL = 500  # Dynamo fixes the decode sweep's OSL


def prefill_isls(max_ctx: int, granularity: int = 16) -> list[int]:
    """ISLs of the prefill sweep: Dynamo's range(100, max_ctx - 512, (max_ctx - 612) // granularity)."""
    step = max((max_ctx - 612) // granularity, 1)
    return list(range(100, max(max_ctx - 512, 101), step))


def decode_isls(max_ctx: int, granularity: int = 6, osl: int = DECODE_OSL) -> list[int]:
    """ISLs of the decode sweep: Dynamo's range(100, max_ctx - osl, (max_ctx - osl) // granularity)."""
    step = max((max_ctx - osl) // granularity, 1)
    return list(range(100, max(max_ctx - osl, 101), step))
