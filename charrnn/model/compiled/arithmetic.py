"""The compile options of every kernel, and float32 tanh, exp and sigmoid as vectorisable arithmetic."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Callable, Optional

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.caching import FunctionCache, IndexDataCacheFile
from numba.extending import intrinsic, overload

from charrnn.errors import CharRNNNote

# No "nnan"/"ninf": a diverging model must still produce NaN and infinity, which training reports.
FASTMATH = {"contract", "arcp", "nsz"}


def kernel(function: Optional[Callable] = None, **options: Any) -> Any:
    """numba.njit with charrnn's options, cached on disk where any cache folder is writable.

    The cache is numba's, with one change (_CheckedCache): a damaged file in it counts as missing, so
    the kernel is compiled and the file written anew, rather than the command ending in numba's
    UnpicklingError or EOFError.
    """
    if function is None:
        return lambda f: kernel(f, **options)
    settings = {"nogil": True, "error_model": "numpy", "fastmath": FASTMATH, **options}
    dispatcher = numba.njit(cache=False, **settings)(function)
    try:
        dispatcher._cache = _CheckedCache(function)  # what cache=True sets, numba's FunctionCache, checked
    except RuntimeError:  # numba found no writable cache folder: compile in every process instead
        pass
    return dispatcher


def _note_damage(path: str, exc: BaseException) -> None:
    # One note per folder, however many files and whatever each raised: the text names only the folder,
    # and the command line shows each different note once.
    warnings.warn(CharRNNNote(
        f"numba's cache of compiled kernels in {os.path.dirname(path)} holds damaged files; they are compiled "
        "and written anew (the folder must be writable by you alone: numba reads these files with pickle, which "
        "can run code)"), stacklevel=2)


class _CheckedIndex(IndexDataCacheFile):
    """numba's index and data files of one kernel's cache, a damaged one counting as missing.

    The index is a pickle by numba's design: a file that does not unpickle (truncated, empty, overwritten)
    is taken as an index of nothing, as numba takes a stale one, and the next save replaces it.
    """

    def _load_index(self) -> dict:
        try:
            return super()._load_index()
        except Exception as exc:  # noqa: BLE001 - any failure to read it back means it is damaged
            _note_damage(self._index_path, exc)
            return {}

    def _load_data(self, name: str) -> Any:
        try:
            return super()._load_data(name)
        except OSError:
            raise  # numba's own case: a data file removed since the index named it
        except Exception as exc:  # noqa: BLE001 - damaged: numba's load() takes an OSError as "not cached"
            _note_damage(self._data_path(name), exc)
            raise OSError(f"damaged cache file {self._data_path(name)}") from None


class _CheckedCache(FunctionCache):
    """numba's FunctionCache over _CheckedIndex files; a cached kernel that cannot be rebuilt from its
    data (which unpickled, but into something else) is compiled afresh as well."""

    def __init__(self, py_func: Callable) -> None:
        super().__init__(py_func)
        self._cache_file = _CheckedIndex(cache_path=self._cache_path, filename_base=self._impl.filename_base,
                                         source_stamp=self._impl.locator.get_source_stamp())

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:  # noqa: BLE001 - whatever a damaged entry makes numba raise: compile instead
            _note_damage(os.path.join(self._cache_path, "."), exc)
            return None


# --- float32 tanh and exp as vectorisable arithmetic -------------------------------------------------


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32 as the float32 with the same bits (to build 2ⁿ from its exponent field)."""
    signature = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return signature, codegen


# tanh(x) ≈ x·P(x²)/Q(x²) on |x| ≤ 7.9988, where it rounds to ±1 in float32 (Eigen's fast tanh).
_TANH_CLAMP = np.float32(7.99881172180175781)
_TANH_LINEAR = np.float32(0.0004)
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (np.float32(c) for c in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03,
))
_Q0, _Q1, _Q2, _Q3 = (np.float32(c) for c in (
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03,
))

# exp(x) = 2ⁿ·e^r with n = round(x / ln 2), r = x − n·ln 2 (ln 2 in two parts), e^r by Cephes' expf
# polynomial; valid for −87 ≤ x ≤ 88, so that 2ⁿ is a normal float32.
_LOG2_E = np.float32(1.44269504088896341)
_LN2_HIGH, _LN2_LOW = np.float32(0.693359375), np.float32(-2.12194440e-4)
_E0, _E1, _E2, _E3, _E4, _E5 = (np.float32(c) for c in (
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1,
))
_F32_HALF, _F32_ONE = np.float32(0.5), np.float32(1.0)


@kernel
def tanh_float32(x):
    # Clamped so that NaN passes through (a comparison with NaN is false).
    x = _TANH_CLAMP if x > _TANH_CLAMP else x
    x = -_TANH_CLAMP if x < -_TANH_CLAMP else x
    x2 = x * x
    p = ((((((_P0 * x2 + _P1) * x2 + _P2) * x2 + _P3) * x2 + _P4) * x2 + _P5) * x2 + _P6) * x
    q = ((_Q0 * x2 + _Q1) * x2 + _Q2) * x2 + _Q3
    return x if abs(x) < _TANH_LINEAR else p / q  # tanh x = x in float32 below 0.0004


@kernel
def exp_float32(x):
    n = np.floor(x * _LOG2_E + _F32_HALF)
    r = (x - n * _LN2_HIGH) - n * _LN2_LOW
    p = (((((_E0 * r + _E1) * r + _E2) * r + _E3) * r + _E4) * r + _E5) * r * r + r + _F32_ONE
    return p * _float32_from_bits((np.int32(n) + np.int32(127)) << 23)


def tanh(x):
    """tanh in the precision of ``x`` (compiled code only)."""
    return math.tanh(x)


def exp(x):
    """exp in the precision of ``x``, for −87 ≤ x ≤ 88 (compiled code only)."""
    return math.exp(x)


@overload(tanh)
def _tanh_typed(x):
    if x == types.float32:
        return lambda x: tanh_float32(x)
    return lambda x: math.tanh(x)


@overload(exp)
def _exp_typed(x):
    if x == types.float32:
        return lambda x: exp_float32(x)
    return lambda x: math.exp(x)


def sigmoid(x):
    """σ(x) = (1 + tanh(x/2)) / 2 in the precision of ``x``, as cells._sigmoid_ computes it (compiled code only)."""
    return (math.tanh(x * 0.5) + 1.0) * 0.5


@overload(sigmoid)
def _sigmoid_typed(x):
    if x == types.float32:
        return lambda x: (tanh_float32(x * _F32_HALF) + _F32_ONE) * _F32_HALF
    return lambda x: (math.tanh(x * 0.5) + 1.0) * 0.5
