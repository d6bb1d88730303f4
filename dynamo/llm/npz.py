"""NumPy `.npz` files without NumPy: the container of the profiler's interpolation data.

An `.npz` is a zip of `.npy` files (a magic string, a header dict, then raw data). We read
and write the subset the performance-data contract needs (1-D and 2-D arrays of float or
int) so the mocker and the planner can load profiles without pulling NumPy into the base
install; files stay byte-compatible with `numpy.load` / `numpy.savez` either way.
"""

from __future__ import annotations

import ast
import struct
import zipfile
from pathlib import Path
from typing import Union

Array = Union[list[float], list[list[float]]]

MAGIC = b"\x93NUMPY"
# dtype descr -> struct format char (little/big endian handled separately)
_FORMATS = {"f8": "d", "f4": "f", "i8": "q", "i4": "i", "i2": "h", "u8": "Q", "u4": "I", "b1": "?"}


def _header(descr: str, shape: tuple[int, ...]) -> bytes:
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (descr, shape)
    # Version 1.0: magic(6) + version(2) + len(2) + header, padded with spaces to 64 bytes, ending "\n".
    pad = 64 - (10 + len(text) + 1) % 64
    body = (text + " " * pad + "\n").encode("latin1")
    return MAGIC + b"\x01\x00" + struct.pack("<H", len(body)) + body


def _flatten(value: Array) -> tuple[list, tuple[int, ...]]:
    if value and isinstance(value[0], (list, tuple)):
        rows = [list(r) for r in value]  # type: ignore[arg-type]
        width = len(rows[0])
        if any(len(r) != width for r in rows):
            raise ValueError("2-D arrays must be rectangular")
        return [x for r in rows for x in r], (len(rows), width)
    return list(value), (len(value),)


def encode_npy(value: Array) -> bytes:
    flat, shape = _flatten(value)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in flat) and flat:
        return _header("<i8", shape) + struct.pack(f"<{len(flat)}q", *flat)
    return _header("<f8", shape) + struct.pack(f"<{len(flat)}d", *(float(x) for x in flat))


def decode_npy(data: bytes) -> Array:
    if data[:6] != MAGIC:
        raise ValueError("not a .npy array (bad magic)")
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack_from("<H", data, 8), 10
    else:
        (hlen,), start = struct.unpack_from("<I", data, 8), 12
    header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
    descr, shape = header["descr"], tuple(header["shape"])
    order = ">" if descr[0] == ">" else "<"
    fmt = _FORMATS.get(descr.lstrip("<>|="))
    if fmt is None:
        raise ValueError(f"unsupported .npy dtype {descr!r}")
    count = 1
    for n in shape:
        count *= n
    flat = list(struct.unpack_from(f"{order}{count}{fmt}", data, start + hlen))
    if len(shape) <= 1:
        return flat
    if len(shape) != 2:
        raise ValueError(f"unsupported .npy shape {shape}")
    rows, cols = shape
    if header.get("fortran_order"):
        return [[flat[c * rows + r] for c in range(cols)] for r in range(rows)]
    return [flat[r * cols:(r + 1) * cols] for r in range(rows)]


def save_npz(path: str | Path, arrays: dict[str, Array]) -> None:
    """Write `arrays` as `path` (numpy.savez layout: one `<key>.npy` member per array)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            zf.writestr(f"{key}.npy", encode_npy(value))


def load_npz(path: str | Path) -> dict[str, Array]:
    """Every array in an `.npz` file, as lists (2-D arrays as lists of rows)."""
    out: dict[str, Array] = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.endswith(".npy"):
                out[name[:-4]] = decode_npy(zf.read(name))
    return out
