/* The residual stream's reads and their gradients for training on CPUs (circuits/residual.py), one pass over
 * the rows each way (training_kernels.c includes this file once per vector instruction set, after
 * attention_ops.h, whose store_rows rounds to bf16).
 *
 * Forward, per row i of N = batch * n rows of width d, at position p = i mod n:
 *   x_i = x_prev_i + out_i      fp32, the residual stream after a layer (out: bf16 or fp32, or NULL: x = x_prev)
 *   a_i = x_i + pos_p           the queries' and keys' input (Shortformer), bf16 or fp32 (pos NULL: a_i = x_i)
 *   c_i = x_i                   the values' input, bf16
 * x, a and c are written where given (not NULL).
 * Backward, the gradients of the same:
 *   dx_prev_i = gx_i + ga_i + gc_i          fp32 (each of gx fp32, ga, gc bf16 may be NULL: zero)
 *   dout_i = dx_prev_i                      in out's dtype, where dout is given
 *   dpos_p = sum over i with i mod n = p of ga_i        fp32, where dpos is given
 * torch makes these in about five passes each way (the add, the two casts, their gradients' widening, the
 * sums of gradients, the sum over the batch), each reading or writing megabytes. Threads split the
 * positions, so each one owns its rows of dpos and the sums do not depend on the number of threads. */

/* positions [p0, p1) of this thread */
#define RESIDUAL_POSITIONS(n)                                                      \
    int64_t p0 = (n) * THREAD / THREADS, p1 = (n) * (THREAD + 1) / THREADS

int SUFFIX(residual_forward)(const float *x_prev, const void *out, int out_bf16, const float *pos, int64_t N,
                             int64_t n, int64_t d, float *x, void *a, int a_bf16, uint16_t *c) {
    if (N < 1 || n < 1 || N % n || d < 1) return -1;
    int err = 0, out_size = out_bf16 ? 2 : 4, a_size = a_bf16 ? 2 : 4;
    #pragma omp parallel
    {
        float *t = malloc(4 * (size_t)d);
        RESIDUAL_POSITIONS(n);
        for (int64_t b0 = 0; t && b0 < N; b0 += n)  /* this thread's rows of each sequence: runs of memory */
            for (int64_t p = p0, i = b0 + p0; p < p1; p++, i++) {
                SUFFIX(row_widen)(t, x_prev + i * d, 0, d, 0);
                if (out) SUFFIX(row_widen)(t, (const char *)out + i * d * out_size, out_bf16, d, 1);
                if (x) SUFFIX(store_rows)(t, 1, (int)d, x + i * d, 0, d, 1.0f);
                if (c) SUFFIX(store_rows)(t, 1, (int)d, c + i * d, 1, d, 1.0f);
                if (!a) continue;
                if (pos) SUFFIX(row_widen)(t, pos + p * d, 0, d, 1);
                SUFFIX(store_rows)(t, 1, (int)d, (char *)a + i * d * a_size, a_bf16, d, 1.0f);
            }
        if (!t) {
            #pragma omp atomic write
            err = -2;
        }
        free(t);
    }
    return err;
}

int SUFFIX(residual_backward)(const float *gx, const void *ga, int ga_bf16, const uint16_t *gc, int64_t N,
                              int64_t n, int64_t d, float *dx, void *dout, int dout_bf16, float *dpos) {
    if (N < 1 || n < 1 || N % n || d < 1) return -1;
    int err = 0, ga_size = ga_bf16 ? 2 : 4, dout_size = dout_bf16 ? 2 : 4;
    #pragma omp parallel
    {
        RESIDUAL_POSITIONS(n);
        float *t = malloc(4 * (size_t)d), *sums = calloc((size_t)(p1 - p0) * d + 1, 4);
        int ok = t && sums;
        for (int64_t b0 = 0; ok && b0 < N; b0 += n)
            for (int64_t p = p0, i = b0 + p0; p < p1; p++, i++) {
                float *sum = sums + (p - p0) * d;
                if (gx) SUFFIX(row_widen)(t, gx + i * d, 0, d, 0);
                else memset(t, 0, 4 * (size_t)d);
                if (ga) {  /* the second read of the row hits L1 */
                    SUFFIX(row_widen)(t, (const char *)ga + i * d * ga_size, ga_bf16, d, 1);
                    SUFFIX(row_widen)(sum, (const char *)ga + i * d * ga_size, ga_bf16, d, 1);
                }
                if (gc) SUFFIX(row_widen)(t, gc + i * d, 1, d, 1);
                SUFFIX(store_rows)(t, 1, (int)d, dx + i * d, 0, d, 1.0f);
                if (dout) SUFFIX(store_rows)(t, 1, (int)d, (char *)dout + i * d * dout_size, dout_bf16, d, 1.0f);
            }
        if (ok && dpos) SUFFIX(store_rows)(sums, (int)(p1 - p0), (int)d, dpos + p0 * d, 0, d, 1.0f);
        if (!ok) {
            #pragma omp atomic write
            err = -2;
        }
        free(t);
        free(sums);
    }
    return err;
}

#undef RESIDUAL_POSITIONS
