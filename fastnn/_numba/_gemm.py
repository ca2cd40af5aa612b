"""GEMM for the Numba backend through NumPy's own BLAS (its cblas_sgemm, found by fastnn._blas),
called from jitted code, on Numba's own threads: the Numba side of kernels/_gemm.pxi.

Why: NumPy's BLAS keeps its own thread pool, which spins after every GEMM against Numba's pool on
the same cores (fastnn/_blas.py has the measurements). With the GEMMs called from our threads,
fastnn.backend holds BLAS's pool at one thread and one pool owns the cores; conv can then run
im2col, GEMM and epilogue per image inside one prange loop.

- `sgemm_pointer()`: the function's address, or 0 (no usable symbol, `FASTNN_DIRECT_BLAS=0`):
  the kernels then use np.matmul. The address is always passed to the jitted code as an int64
  argument, never read as a global: `cache=True` would bake one process's address into the cache.
- `gemm(fn, ...)`: one row-major sgemm call on the calling thread; arrays are flat float32 with an
  element offset, so a kernel can multiply one image's block of a batch.
- `gemm_parts(fn, ...)`: the same product split into blocks of rows or columns of C from the shape
  alone, taken by the threads one at a time (dynamic scheduling) or run serially on one thread:
  the bits never depend on the thread count (BLAS's result for an element can change with the
  block it lands in). A long inner dimension with a small C splits the inner dimension instead
  (each block packs only its own slices of A and B), the blocks added in order.
"""

import os
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import _blas
from ._common import fetch_add

_PART_FLOPS = 1 << 22  # at least ~4 MFLOP per block, else fewer blocks


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# the rules of kernels/_gemm.pxi: at most 2 row/column blocks below 4 usable cores (fixed at
# import, never from the thread setting), inner-dimension blocks from K >= 512
_MAX_PARTS = 4 if _cores() >= 4 else 2
_KSPLIT_MIN_K = 512


def sgemm_pointer() -> int:
    """The address of NumPy's cblas_sgemm, or 0 when the kernels must use np.matmul (also under
    NUMBA_DISABLE_JIT=1: the intrinsic below exists only in compiled code)."""
    return 0 if numba.config.DISABLE_JIT else _blas.sgemm_pointer()


@intrinsic
def _sgemm(typingctx, fn, transa, transb, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0,
           ldc):
    """Call the cblas_sgemm at address `fn` (row-major): C[c0:] = alpha op(A[a0:]) op(B[b0:]) +
    beta C[c0:]. Integer arguments go as 64-bit values (right for LP64 and ILP64, as
    fastnn._blas explains); transa/transb are the CBLAS codes (111 no, 112 transposed)."""
    ints = (fn, transa, transb, M, N, K, a0, lda, b0, ldb, c0, ldc)
    arrays = (A, B, C)
    if not all(isinstance(t, types.Integer) for t in ints):
        return None
    if not all(isinstance(t, types.Float) for t in (alpha, beta)):
        return None
    if not all(isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C"
               for a in arrays):
        return None
    sig = types.void(fn, transa, transb, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc)

    def codegen(context, builder, signature, args):
        i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
        fp = f32.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, f32, fp, i64, fp,
                                               i64, f32, fp, i64])
        tys = signature.args

        def val(k, ty):
            return context.cast(builder, args[k], tys[k], ty)

        def data(k):  # the array's data pointer plus the element offset that follows it
            ary = context.make_array(tys[k])(context, builder, value=args[k])
            return builder.gep(ary.data, [val(k + 1, types.int64)])

        callee = builder.inttoptr(val(0, types.int64), fnty.as_pointer())
        builder.call(callee, [
            ir.Constant(i32, _blas.ROW_MAJOR), val(1, types.int32), val(2, types.int32),
            val(3, types.int64), val(4, types.int64), val(5, types.int64),
            val(6, types.float32), data(7), val(9, types.int64),
            data(10), val(12, types.int64), val(13, types.float32),
            data(14), val(16, types.int64),
        ])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def gemm(fn, ta, tb, M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    """C[c0:] (M, N) = alpha op(A[a0:]) op(B[b0:]) + beta C[c0:], row-major, on this thread;
    op(A) is (M, K), op(B) is (K, N); ta/tb: transposed. A, B, C flat float32."""
    _sgemm(fn, _blas.TRANS if ta else _blas.NO_TRANS, _blas.TRANS if tb else _blas.NO_TRANS,
           M, N, K, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc)


def _nparts(M, N, K):
    """A power of two (so 2 and 4 threads split evenly), from the shape alone; the same rule as
    kernels/_gemm.pxi (blocks >= 64 rows or columns, >= 48 when K >= 1024)."""
    flops = 2.0 * M * N * K
    dim = M if M >= N else N
    per_part = 96 if K >= 1024 else 128
    parts = 1
    while parts < _MAX_PARTS and flops >= 2.0 * parts * _PART_FLOPS and dim >= per_part * parts:
        parts *= 2
    return parts


@njit(cache=True, nogil=True)
def _part(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, part, parts):
    if M >= N:  # rows of C: rows of op(A)
        lo = M * part // parts
        hi = M * (part + 1) // parts
        gemm(fn, ta, tb, hi - lo, N, K, alpha, A, lo if ta else lo * lda, lda, B, 0, ldb, beta,
             C, lo * ldc, ldc)
    else:  # columns of C: columns of op(B), in multiples of 16 (whole cache lines of C)
        lo = (N * part // parts) // 16 * 16
        hi = N if part == parts - 1 else (N * (part + 1) // parts) // 16 * 16
        if hi > lo:
            gemm(fn, ta, tb, M, hi - lo, K, alpha, A, 0, lda, B, lo * ldb if tb else lo, ldb,
                 beta, C, lo, ldc)


@njit(cache=True, nogil=True)
def _parts_serial(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, parts):
    for part in range(parts):
        _part(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, part, parts)


@njit(cache=True, nogil=True, parallel=True)
def _parts_parallel(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, parts, workers):
    next_part = np.zeros(1, np.int64)
    for _ in prange(workers):  # each worker takes the next block (dynamic scheduling)
        part = fetch_add(next_part, 0, 1)
        while part < parts:
            _part(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, part, parts)
            part = fetch_add(next_part, 0, 1)


def _nksplit(M, N, K):
    """Blocks of the inner dimension: the rule of kernels/_gemm.pxi's _gemm_nksplit."""
    if K < _KSPLIT_MIN_K or M * N > 65536 or 2.0 * M * N * K < 4.0 * _PART_FLOPS:
        return 1
    return 4 if K >= 8192 and _MAX_PARTS >= 4 else 2


@njit(cache=True, nogil=True)
def _kpart(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, P, part, parts):
    k0, k1 = K * part // parts, K * (part + 1) // parts
    a0 = k0 * lda if ta else k0
    b0 = k0 if tb else k0 * ldb
    if part == 0:
        gemm(fn, ta, tb, M, N, k1 - k0, alpha, A, a0, lda, B, b0, ldb, beta, C, 0, ldc)
    else:
        gemm(fn, ta, tb, M, N, k1 - k0, alpha, A, a0, lda, B, b0, ldb, np.float32(0), P,
             (part - 1) * M * N, N)


@njit(cache=True, nogil=True)
def _ksum(M, N, C, ldc, P, parts):
    for part in range(1, parts):
        for i in range(M):
            for j in range(N):
                C[i * ldc + j] += P[((part - 1) * M + i) * N + j]


@njit(cache=True, nogil=True)
def _kparts_serial(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, P, parts):
    for part in range(parts):
        _kpart(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, P, part, parts)
    _ksum(M, N, C, ldc, P, parts)


@njit(cache=True, nogil=True, parallel=True)
def _kparts_parallel(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, P, parts):
    for part in prange(parts):
        _kpart(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, P, part, parts)
    _ksum(M, N, C, ldc, P, parts)


_local = threading.local()  # per Python thread: the partial products of a split inner dimension


def _partials(n):
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < n:
        buf = _local.buf = np.empty(n, np.float32)
    return buf


def gemm_parts(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc):
    """C (M, N) = alpha op(A) op(B) + beta C (flat float32, row-major) in blocks fixed by the
    shape, over the threads when there are several blocks and threads. (Chosen here, in Python:
    numba.get_num_threads() inside jitted code would stop it from being cached, and one thread
    never compiles the parallel driver.)"""
    threads = numba.get_num_threads()
    alpha, beta = np.float32(alpha), np.float32(beta)
    ks = _nksplit(M, N, K)
    if ks > 1:
        P = _partials((ks - 1) * M * N)
        run = _kparts_parallel if threads > 1 else _kparts_serial
        run(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, P, ks)
        return
    parts = _nparts(M, N, K)
    if parts > 1 and threads > 1:
        _parts_parallel(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, parts,
                        min(threads, parts))
    else:
        _parts_serial(fn, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, parts)
