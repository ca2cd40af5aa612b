"""Shared constants and tiny helpers for the Numba backend."""

from numba import types
from numba.extending import intrinsic

# Below this many elements touched, kernels run serially (no parallel region).
PARALLEL_MIN_WORK = 32768


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
