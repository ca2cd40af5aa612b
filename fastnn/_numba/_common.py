"""Shared constants and tiny helpers for the Numba backend."""

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

# Below this many elements touched, kernels run serially (no parallel region).
PARALLEL_MIN_WORK = 32768
_U = np.uint64  # unsigned indexes: no negative-index wraparound selects


def use_parallel(work):
    """True when `work` (elements touched) is large enough for the parallel kernel."""
    return work >= PARALLEL_MIN_WORK


@intrinsic
def fetch_add(typingctx, counter, i, v):
    """Atomically counter[i] += v (int64 array); returns the old value. Dynamic scheduling in a
    prange over the workers: each takes the next task from a shared counter, so a thread the OS
    deschedules delays only its current task (Numba's OpenMP layer splits a prange statically)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64
            and isinstance(i, types.Integer) and isinstance(v, types.Integer)):
        return None
    sig = types.int64(counter, i, v)

    def codegen(context, builder, signature, args):
        tys = signature.args
        ary = context.make_array(tys[0])(context, builder, value=args[0])
        ptr = builder.gep(ary.data, [context.cast(builder, args[1], tys[1], types.int64)])
        return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], tys[2], types.int64),
                                  "monotonic")

    return sig, codegen


@njit(cache=True, nogil=True)
def row_sum(a, o, n):
    """sum of a[o:o+n] in 16 float32 lanes (lane = index % 16, which LLVM vectorises), the lanes
    added in a fixed tree at the end: the same bits wherever it runs. (Scalars, not a lane array:
    LLVM cannot tell an array from `a` and would keep every lane in memory.)"""
    z = np.float32(0.0)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = z
    s8 = s9 = s10 = s11 = s12 = s13 = s14 = s15 = z
    full = n - n % 16
    for i in range(0, full, 16):
        q = o + i
        s0 += a[_U(q)]
        s1 += a[_U(q + 1)]
        s2 += a[_U(q + 2)]
        s3 += a[_U(q + 3)]
        s4 += a[_U(q + 4)]
        s5 += a[_U(q + 5)]
        s6 += a[_U(q + 6)]
        s7 += a[_U(q + 7)]
        s8 += a[_U(q + 8)]
        s9 += a[_U(q + 9)]
        s10 += a[_U(q + 10)]
        s11 += a[_U(q + 11)]
        s12 += a[_U(q + 12)]
        s13 += a[_U(q + 13)]
        s14 += a[_U(q + 14)]
        s15 += a[_U(q + 15)]
    t = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    t += ((s8 + s9) + (s10 + s11)) + ((s12 + s13) + (s14 + s15))
    for i in range(full, n):
        t += a[_U(o + i)]
    return t
