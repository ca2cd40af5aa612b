# fastnn Cython kernels: GEMM through NumPy's own BLAS, called from our threads.  Included (after
# _parallel.pxi) by the modules whose kernels multiply matrices:
#
#     include "_gemm.pxi"
#
# It gives the module:
#   _sgemm               the cblas_sgemm of NumPy's BLAS (NULL until fastnn._cython sets it from
#                        fastnn._blas.sgemm_pointer(); then every call below is legal)
#   _set_sgemm(address)  / _has_sgemm()   Python-level setter and test
#   _gemm(...)           one row-major sgemm call on the calling thread (BLAS runs single-threaded:
#                        fastnn.backend sets its pool to 1 thread while a compiled backend is in use)
#   _gemm_parts(...)     C = alpha op(A) op(B) + beta C split into independent blocks of rows or
#                        columns run over the OpenMP threads (or, for a long inner dimension and a
#                        small C, into blocks of the inner dimension added in order).  The split depends on the shape only,
#                        never on the thread count, so the bits never depend on it either (BLAS's
#                        result for an element can change with the block it lands in).
#
# Why not np.matmul: NumPy's BLAS threads and our OpenMP threads then take turns on the same cores,
# each pool spinning while the other works (see fastnn/_blas.py for the measurements).

from libc.stdlib cimport free, malloc

ctypedef long long _blasint

ctypedef void (*_sgemm_fn)(int order, int transa, int transb, _blasint M, _blasint N, _blasint K,
                           float alpha, const float* A, _blasint lda, const float* B, _blasint ldb,
                           float beta, float* C, _blasint ldc) noexcept nogil

cdef _sgemm_fn _sgemm = NULL

cdef enum:
    _ROW_MAJOR = 101
    _NO_TRANS = 111
    _TRANS = 112
    _GEMM_PART_FLOPS = 1 << 22   # at least ~4 MFLOP per block, else fewer blocks
    _GEMM_MAX_PARTS = 4


def _cores():
    try:
        return len(_fastnn_os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return _fastnn_os.cpu_count() or 1


# Row/column blocks at most: 2 on a machine with fewer than 4 usable cores (measured on 2 cores:
# 4 blocks each pack the shared operand again, and the mlp_step, 64 and 256, took 4-6% longer),
# else 4. Fixed at import from the machine, never from the thread setting: within one machine the
# bits never depend on the thread count.
cdef int _max_parts = _GEMM_MAX_PARTS if _cores() >= 4 else 2
# Inner-dimension blocks from K >= 512 (with a small output): 2-7% faster dense steps than
# row/column blocks (measured interleaved, mlp_step and dense_fb, 2 cores).
cdef Py_ssize_t _ksplit_min_k = 512, _ksplit_max_out = 65536


def _set_gemm_split(int max_parts, Py_ssize_t ksplit_min_k, Py_ssize_t ksplit_max_out=65536):
    """Set the block rules (the most row/column blocks; the smallest inner dimension and the
    largest output, M*N, that split the inner dimension); returns the old ones. For measurements:
    the defaults are the measured choice."""
    global _max_parts, _ksplit_min_k, _ksplit_max_out
    old = (_max_parts, _ksplit_min_k, _ksplit_max_out)
    _max_parts, _ksplit_min_k, _ksplit_max_out = max(1, max_parts), ksplit_min_k, ksplit_max_out
    return old


def _set_sgemm(size_t address):
    """Use the cblas_sgemm at `address` (0: none; the module's kernels then use np.matmul)."""
    global _sgemm
    _sgemm = <_sgemm_fn>address


def _has_sgemm():
    return _sgemm != NULL


cdef inline void _gemm(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, float alpha,
                       const float* A, Py_ssize_t lda, const float* B, Py_ssize_t ldb, float beta,
                       float* C, Py_ssize_t ldc) noexcept nogil:
    # C (M, N) = alpha op(A) op(B) + beta C, row-major; op(A) is (M, K), op(B) is (K, N).
    _sgemm(_ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, M, N, K, alpha,
           A, lda, B, ldb, beta, C, ldc)


cdef inline int _gemm_nparts(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    # A power of two (so 2 and 4 threads split evenly), from the shape alone. Blocks keep >= 64
    # rows (or columns), >= 48 when the inner dimension is long (K >= 1024): a dense layer on
    # flattened conv features, (64, 3136) @ (3136, 128) or (100, 4320) @ (4320, 100), would
    # otherwise run on one thread.
    cdef double flops = 2.0 * M * N * K
    cdef Py_ssize_t dim = M if M >= N else N
    cdef Py_ssize_t per_part = 96 if K >= 1024 else 128
    cdef int parts = 1
    while (parts < _max_parts and flops >= 2.0 * parts * _GEMM_PART_FLOPS
           and dim >= per_part * parts):
        parts *= 2
    return parts


cdef inline void _gemm_part(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                            float alpha, const float* A, Py_ssize_t lda, const float* B,
                            Py_ssize_t ldb, float beta, float* C, Py_ssize_t ldc, int part,
                            int parts) noexcept nogil:
    cdef Py_ssize_t lo, hi
    if M >= N:  # rows of C: rows of op(A)
        lo = M * part // parts
        hi = M * (part + 1) // parts
        _gemm(ta, tb, hi - lo, N, K, alpha, A + (lo if ta else lo * lda), lda, B, ldb, beta,
              C + lo * ldc, ldc)
    else:  # columns of C: columns of op(B), in multiples of 16 (whole cache lines of C)
        lo = (N * part // parts) // 16 * 16
        hi = N if part == parts - 1 else (N * (part + 1) // parts) // 16 * 16
        if hi > lo:
            _gemm(ta, tb, M, hi - lo, K, alpha, A, lda, B + (lo * ldb if tb else lo), ldb, beta,
                  C + lo, ldc)


cdef inline int _gemm_nksplit(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    # Blocks of the inner dimension for a small-output product (a dense layer on flattened conv
    # features, (100, 4320) @ (4320, 100), or a batch-64 dense layer): each block packs only its
    # own slices of A and B, where row or column blocks would each pack the whole shared operand
    # again (measured at one thread: 1.23 ms as two row blocks, 0.95 ms as one call). From the
    # shape alone.
    if K < _ksplit_min_k or M * N > _ksplit_max_out:
        return 1
    if 2.0 * M * N * K < 4.0 * _GEMM_PART_FLOPS:
        return 1
    return 4 if K >= 8192 and _max_parts >= 4 else 2


cdef inline void _gemm_kpart(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                             float alpha, const float* A, Py_ssize_t lda, const float* B,
                             Py_ssize_t ldb, float beta, float* C, Py_ssize_t ldc, float* P,
                             int part, int parts) noexcept nogil:
    # inner block `part`: the first into C (with beta), the others into their slot of P
    cdef Py_ssize_t k0 = K * part // parts, k1 = K * (part + 1) // parts
    cdef const float* a = A + (k0 * lda if ta else k0)
    cdef const float* b = B + (k0 if tb else k0 * ldb)
    if part == 0:
        _gemm(ta, tb, M, N, k1 - k0, alpha, a, lda, b, ldb, beta, C, ldc)
    else:
        _gemm(ta, tb, M, N, k1 - k0, alpha, a, lda, b, ldb, 0, P + (part - 1) * M * N, N)


cdef bint _gemm_ksplit(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, float alpha,
                       const float* A, Py_ssize_t lda, const float* B, Py_ssize_t ldb, float beta,
                       float* C, Py_ssize_t ldc, int parts) noexcept nogil:
    # C = block 0 + block 1 + ... in that order (bits independent of the threads); False when
    # there is no memory for the partial products (the caller then splits rows or columns).
    cdef float* P = <float*>malloc((parts - 1) * M * N * sizeof(float))
    cdef int part
    cdef Py_ssize_t i
    if P == NULL:
        return False
    if _nthreads > 1:
        for part in prange(parts, schedule="static", num_threads=_nthreads):
            _gemm_kpart(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, P, part, parts)
    else:
        for part in range(parts):
            _gemm_kpart(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, P, part, parts)
    if _nthreads > 1 and M > 1 and M * N >= PARALLEL_MIN_WORK:
        for i in prange(M, schedule="static", num_threads=_nthreads):
            _ksum_row(C + i * ldc, P + i * N, M * N, N, parts)
    else:
        for i in range(M):
            _ksum_row(C + i * ldc, P + i * N, M * N, N, parts)
    free(P)
    return True


cdef inline void _ksum_row(float* c, const float* p, Py_ssize_t stride, Py_ssize_t N,
                           int parts) noexcept nogil:
    # one row of C += the partial products of blocks 1, 2, ... in order
    cdef int part
    cdef Py_ssize_t j
    for part in range(1, parts):
        for j in range(N):
            c[j] += p[(part - 1) * stride + j]


cdef void _gemm_parts(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, float alpha,
                      const float* A, Py_ssize_t lda, const float* B, Py_ssize_t ldb, float beta,
                      float* C, Py_ssize_t ldc) noexcept nogil:
    cdef int ks = _gemm_nksplit(M, N, K)
    if ks > 1 and _gemm_ksplit(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ks):
        return
    cdef int part, parts = _gemm_nparts(M, N, K)
    if parts > 1 and _nthreads > 1:
        for part in prange(parts, schedule="dynamic", num_threads=_nthreads):
            _gemm_part(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, part, parts)
    else:
        for part in range(parts):
            _gemm_part(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, part, parts)
