"""A reader of CTranslate2 ``model.bin`` files (binary versions 2 to 6).

Layout, little-endian: ``u32`` binary version; ``str`` spec name and ``u32``
spec revision (version >= 2); ``u32`` number of variables, each ``str`` name,
``u8`` rank, ``u32 * rank`` shape, ``u8`` dtype and ``u32`` byte count
(version >= 4; before that ``u8`` item size), then the bytes; ``u32`` number of
aliases, each ``str`` alias and ``str`` target (version >= 3). A ``str`` is a
``u16`` length and that many bytes, the last one NUL.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final, final

import numpy as np

from fairseq2_speechmapper.demo.errors import DemoAssetError

# CTranslate2's ``DataType`` enumeration, as far as plain numpy can hold it.
_DTYPES: Final = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}

_BFLOAT16: Final = 5


@final
@dataclass(kw_only=True)
class CT2Model:
    spec_name: str
    spec_revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    """Variables by name, aliases resolved to the same arrays."""


def read_ct2_model(path: Path, *, fix: str) -> CT2Model:
    """Reads a CTranslate2 model file.

    :param fix: How to repair a broken file, for the error message.
    :raises DemoAssetError: The file is unreadable, truncated or not a
        CTranslate2 model.
    """
    try:
        data = path.read_bytes()
    except OSError as ex:
        raise DemoAssetError(f"{path} cannot be read ({ex.strerror}); {fix}.") from None

    try:
        return _parse(memoryview(data))
    except (_TruncatedError, ValueError, UnicodeDecodeError) as ex:
        raise DemoAssetError(f"{path} is not a complete CTranslate2 model file ({ex}); {fix}.") from None


class _TruncatedError(Exception):
    pass


@final
class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self._data = data
        self.offset = 0

    def take(self, num_bytes: int) -> memoryview:
        end = self.offset + num_bytes
        if end > len(self._data):
            raise _TruncatedError(f"truncated at byte {len(self._data)}, {end} expected")

        chunk = self._data[self.offset : end]
        self.offset = end

        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def string(self) -> str:
        (length,) = self.unpack("H")

        return bytes(self.take(length)).rstrip(b"\0").decode("utf-8")

    @property
    def at_end(self) -> bool:
        return self.offset == len(self._data)


def _parse(data: memoryview) -> CT2Model:
    cursor = _Cursor(data)

    version = cursor.u32()
    if not 2 <= version <= 6:
        raise ValueError(f"unsupported binary version {version}")

    spec_name = cursor.string()
    spec_revision = cursor.u32()

    variables: dict[str, np.ndarray] = {}

    for _ in range(cursor.u32()):
        name = cursor.string()
        shape = cursor.unpack("I" * cursor.u8())

        if version >= 4:
            dtype_id = cursor.u8()
            num_bytes = cursor.u32()
        else:
            item_size = cursor.u8()
            num_bytes = cursor.u32()
            dtype_id = {4: 0, 2: 4, 1: 1}.get(item_size, -1)

        if dtype_id == _BFLOAT16:
            raise ValueError(f"{name} is bfloat16, which this reader does not support")

        dtype = _DTYPES.get(dtype_id)
        if dtype is None:
            raise ValueError(f"{name} has the unknown data type {dtype_id}")

        chunk = cursor.take(num_bytes)
        if num_bytes != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):  # type: ignore[attr-defined]
            raise ValueError(f"{name} holds {num_bytes} bytes, which do not fit its shape {shape}")

        variables[name] = np.frombuffer(chunk, dtype=dtype).reshape(shape).copy()  # type: ignore[call-overload]

    if version >= 3:
        for _ in range(cursor.u32()):
            alias, target = cursor.string(), cursor.string()
            if target not in variables:
                raise ValueError(f"alias {alias} points to the unknown variable {target}")

            variables[alias] = variables[target]

    if not cursor.at_end:
        raise ValueError(f"{len(data) - cursor.offset} unexpected trailing bytes")

    return CT2Model(spec_name=spec_name, spec_revision=spec_revision, binary_version=version, variables=variables)
