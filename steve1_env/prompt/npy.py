"""Reading a ``.npy`` array from bytes that may be hostile.

`numpy.lib.format.read_array` trusts the header: a 128-byte entry claiming a shape of
``(10**11,)`` makes it allocate hundreds of GiB before it finds the data missing. Here the
header is read first, and the array is built only if its shape and dtype account for exactly
the bytes that follow, so the memory used never exceeds the input's size.
"""

from __future__ import annotations

import io
import math

import numpy as np

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def read_npy_bytes(data: bytes) -> np.ndarray:
    """Returns the array a ``.npy`` file's bytes hold, never unpickling and never over-allocating.

    Args:
        data: The whole file.

    Raises:
        ValueError: If the bytes are not a ``.npy`` file of format 1.0 or 2.0, hold objects
            (which only a pickle can store), or their header does not match the data's size.
    """
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    reader = _HEADER_READERS.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    shape, fortran_order, dtype = reader(stream)
    if dtype.hasobject:
        raise ValueError("the array holds Python objects, which only a pickle can store")
    expected = math.prod(shape) * dtype.itemsize
    available = len(data) - stream.tell()
    if expected != available:
        raise ValueError(
            f"the header announces {shape} {dtype} ({expected:,} bytes) but {available:,} "
            "bytes follow it"
        )
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=stream.tell())
    # A copy: the array owns (and may write) its memory instead of viewing the input bytes.
    return flat.reshape(shape, order="F" if fortran_order else "C").copy()
