/* The body of the causal attention kernels (attention.c includes it once per instruction set,
 * after attention_ops.h, which describes the vector helpers and the parameters VW, R, JU and SUFFIX).
 *
 * Per (batch, head): Q, K, V [T, E] (rows strided, E contiguous), scale = 1/sqrt(E).
 *   forward   S = scale Q K^T (causal: key j <= query i), P = softmax(S), O = P V,
 *             lse_i = log sum_j exp(S_ij)                    (kept for the backward)
 *   backward  P recomputed from lse, D_i = dO_i . O_i,
 *             dS = P * (dO V^T - D), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO
 * A block of R query rows needs keys 0 .. i0 + R - 1 only: the causal half is never computed.
 * Three small GEMM shapes cover all of it, each register-blocked over R rows x 2 vectors:
 *   rows_dot    C[r, j]  = sum_e A[r, e] Bt[e, j]     (scores; Bt = K^T or V^T, zero-padded to Tp)
 *   rows_times  C[r, :]  = sum_j W[r, j] M[j, :]      (P V, dS K)
 *   rank_update M[j, :] += sum_r W[r, j] X[r, :]      (dV, dK: R rows at a time)
 */
/* Tensors are given by their (batch, head, position) strides st, in elements, 3 per tensor in argument
 * order; E is contiguous. bf16 (bit 0: inputs, bit 1: outputs) says which are bf16 rather than fp32;
 * lse is fp32 [B*H, T]. A (batch, head) slice is loaded into contiguous fp32, computed, and stored. */
#define SLICE_AT(p, i, isbf16, b, h) ((const char *)(p) + ((b) * st[3 * (i)] + (h) * st[3 * (i) + 1]) * ((isbf16) ? 2 : 4))
#define SLICE(p, i, isbf16) SLICE_AT(p, i, isbf16, b, h)
/* tensor i of this slice into contiguous fp32 rows, and back from them */
#define LOAD_SLICE(p, i, dst) SUFFIX(load_rows)(SLICE(p, i, in16), in16, st[3 * (i) + 2], T, E, dst)
#define STORE_SLICE(src, p, i) SUFFIX(store_rows)(src, T, E, (void *)SLICE(p, i, out16), out16, st[3 * (i) + 2], 1.0f)
/* rows [i0, i0 + nr) of tensor i of the next slice, if any, into the cache */
#define PREFETCH_NEXT(p, i) \
    if (bh + 1 < bh1) \
        SUFFIX(prefetch_rows)(SLICE_AT(p, i, in16, (bh + 1) / H, (bh + 1) % H), st[3 * (i) + 2] * (in16 ? 2 : 4), \
                              E * (in16 ? 2 : 4), i0, i0 + nr)
INLINE int SUFFIX(forward_e)(const void *q, const void *k, const void *v, void *o, float *lse, const int64_t *st,
                             int bf16, int64_t H, int T, int E, float scale, int64_t bh0, int64_t bh1) {
    int Tp = ROUND_UP(T, 2 * VW), in16 = bf16 & 1, out16 = (bf16 >> 1) & 1;
    float *Kt = malloc(sizeof(float) * ((size_t)E * Tp + (size_t)R * Tp + 4 * (size_t)T * E));
    if (!Kt) return -2;
    float *S = Kt + (size_t)E * Tp, *Qc = S + (size_t)R * Tp, *Kc = Qc + (size_t)T * E, *Vc = Kc + (size_t)T * E;
    float *Oc = Vc + (size_t)T * E, inv[R], mx[ROUND_UP(R, VW)] = {0}, sum[ROUND_UP(R, VW)];
    for (int r = 0; r < ROUND_UP(R, VW); r++) sum[r] = 1.0f;  /* rows past a block's end keep a positive sum */
    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        float *L = lse + bh * T;
        LOAD_SLICE(q, 0, Qc);
        LOAD_SLICE(k, 1, Kc);
        LOAD_SLICE(v, 2, Vc);
        SUFFIX(transpose)(Kc, T, Tp, E, Kt);
        for (int i0 = 0; i0 < T; i0 += R) {
            int nr = T - i0 < R ? T - i0 : R, J = i0 + nr;
            int Jd = ROUND_UP(J, 2 * VW), Jp = ROUND_UP(J, VW);
            PREFETCH_NEXT(q, 0);
            PREFETCH_NEXT(k, 1);
            PREFETCH_NEXT(v, 2);
            SUFFIX(rows_dot)(Qc + i0 * E, E, nr, Kt, Tp, Jd, E, S, Tp);
            for (int r = 0; r < nr; r++) mx[r] = SUFFIX(softmax_row)(S + r * Tp, i0 + r, Jp, scale, 0.0f, sum + r);
            SUFFIX(lse_rows)(mx, sum, nr, L + i0, inv);
            SUFFIX(rows_times)(S, Tp, nr, Vc, J, E, Oc + i0 * E, E, inv);
        }
        STORE_SLICE(Oc, o, 3);
    }
    free(Kt);
    return 0;
}

INLINE int SUFFIX(backward_e)(const void *q, const void *k, const void *v, const void *o, const void *dout,
                              const float *lse, void *dq, void *dk, void *dv, const int64_t *st, int bf16,
                              int64_t H, int T, int E, float scale, int64_t bh0, int64_t bh1) {
    int Tp = ROUND_UP(T, 2 * VW), in16 = bf16 & 1, out16 = (bf16 >> 1) & 1;
    size_t n = 2 * (size_t)E * Tp + 2 * (size_t)R * Tp + 7 * (size_t)T * E + T;
    float *Kt = malloc(sizeof(float) * n);
    if (!Kt) return -2;
    float *Vt = Kt + (size_t)E * Tp, *P = Vt + (size_t)E * Tp, *dS = P + (size_t)R * Tp;
    float *Qc = dS + (size_t)R * Tp, *Kc = Qc + (size_t)T * E, *Vc = Kc + (size_t)T * E, *Oc = Vc + (size_t)T * E;
    float *dOc = Oc + (size_t)T * E, *dK = dOc + (size_t)T * E, *dV = dK + (size_t)T * E, *D = dV + (size_t)T * E;
    float *dQ = Oc;  /* O is needed only for D, computed first */
    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        const float *L = lse + bh * T;
        LOAD_SLICE(q, 0, Qc);
        LOAD_SLICE(k, 1, Kc);
        LOAD_SLICE(v, 2, Vc);
        LOAD_SLICE(o, 3, Oc);
        LOAD_SLICE(dout, 4, dOc);
        SUFFIX(transpose)(Kc, T, Tp, E, Kt);
        SUFFIX(transpose)(Vc, T, Tp, E, Vt);
        memset(dK, 0, sizeof(float) * 2 * (size_t)T * E);
        for (int i = 0; i < T; i++) {
            vf d = {0};
            for (int e = 0; e < E; e += VW) d += LD(dOc + i * E + e) * LD(Oc + i * E + e);
            D[i] = SUFFIX(all_sum)(d)[0];
        }
        for (int i0 = 0; i0 < T; i0 += R) {
            int nr = T - i0 < R ? T - i0 : R, J = i0 + nr;
            int Jd = ROUND_UP(J, 2 * VW), Jp = ROUND_UP(J, VW);
            PREFETCH_NEXT(q, 0);
            PREFETCH_NEXT(k, 1);
            PREFETCH_NEXT(v, 2);
            PREFETCH_NEXT(o, 3);
            PREFETCH_NEXT(dout, 4);
            SUFFIX(rows_dot)(Qc + i0 * E, E, nr, Kt, Tp, Jd, E, P, Tp);
            SUFFIX(rows_dot)(dOc + i0 * E, E, nr, Vt, Tp, Jd, E, dS, Tp);
            for (int r = 0; r < R; r++) {
                float *p = P + r * Tp, *ds = dS + r * Tp;
                if (r >= nr) {  /* rows past the end add nothing to dK and dV */
                    memset(p, 0, sizeof(float) * Jp);
                    memset(ds, 0, sizeof(float) * Jp);
                    continue;
                }
                SUFFIX(softmax_row)(p, i0 + r, Jp, scale, L[i0 + r], NULL);
                float Di = D[i0 + r];
                for (int j = 0; j < Jp; j += VW) ST(ds + j, LD(p + j) * (LD(ds + j) - Di) * scale);
            }
            SUFFIX(rows_times)(dS, Tp, nr, Kc, J, E, dQ + i0 * E, E, NULL);
            SUFFIX(rank_update)(dV, E, J, P, Tp, dOc + i0 * E, E, nr);
            SUFFIX(rank_update)(dK, E, J, dS, Tp, Qc + i0 * E, E, nr);
        }
        STORE_SLICE(dQ, dq, 5);
        STORE_SLICE(dK, dk, 6);
        STORE_SLICE(dV, dv, 7);
    }
    free(Kt);
    return 0;
}
#undef SLICE
#undef LOAD_SLICE
#undef STORE_SLICE
#undef SLICE_AT
#undef PREFETCH_NEXT

/* E must be a multiple of 2 VW; 32 and 64 get code specialised for them */
static int SUFFIX(forward_slices)(const void *q, const void *k, const void *v, void *o, float *lse,
                                  const int64_t *st, int bf16, int64_t H, int T, int E, float scale,
                                  int64_t bh0, int64_t bh1) {
    if (E == 32) return SUFFIX(forward_e)(q, k, v, o, lse, st, bf16, H, T, 32, scale, bh0, bh1);
    if (E == 64) return SUFFIX(forward_e)(q, k, v, o, lse, st, bf16, H, T, 64, scale, bh0, bh1);
    return SUFFIX(forward_e)(q, k, v, o, lse, st, bf16, H, T, E, scale, bh0, bh1);
}

static int SUFFIX(backward_slices)(const void *q, const void *k, const void *v, const void *o,
                                   const void *dout, const float *lse, void *dq, void *dk, void *dv,
                                   const int64_t *st, int bf16, int64_t H, int T, int E, float scale,
                                   int64_t bh0, int64_t bh1) {
    if (E == 32) return SUFFIX(backward_e)(q, k, v, o, dout, lse, dq, dk, dv, st, bf16, H, T, 32, scale, bh0, bh1);
    if (E == 64) return SUFFIX(backward_e)(q, k, v, o, dout, lse, dq, dk, dv, st, bf16, H, T, 64, scale, bh0, bh1);
    return SUFFIX(backward_e)(q, k, v, o, dout, lse, dq, dk, dv, st, bf16, H, T, E, scale, bh0, bh1);
}

/* All B*H slices, split evenly among the OpenMP threads (torch's own pool: see attention.c). 0 on
 * success, -1 for an unsupported shape, -2 when scratch memory could not be had. */
int SUFFIX(attention_forward)(const void *q, const void *k, const void *v, void *o, float *lse,
                              const int64_t *st, int bf16, int64_t BH, int64_t H, int64_t T, int64_t E,
                              float scale) {
    if (E % (2 * VW) || T < 1 || T > 1 << 20 || BH < 1 || H < 1) return -1;
    int err = 0;
    #pragma omp parallel
    {
        int64_t t = THREAD, nt = THREADS;
        int rc = SUFFIX(forward_slices)(q, k, v, o, lse, st, bf16, H, (int)T, (int)E, scale, BH * t / nt, BH * (t + 1) / nt);
        if (rc) {
            #pragma omp atomic write
            err = rc;
        }
    }
    return err;
}

int SUFFIX(attention_backward)(const void *q, const void *k, const void *v, const void *o, const void *dout,
                               const float *lse, void *dq, void *dk, void *dv, const int64_t *st, int bf16,
                               int64_t BH, int64_t H, int64_t T, int64_t E, float scale) {
    if (E % (2 * VW) || T < 1 || T > 1 << 20 || BH < 1 || H < 1) return -1;
    int err = 0;
    #pragma omp parallel
    {
        int64_t t = THREAD, nt = THREADS;
        int rc = SUFFIX(backward_slices)(q, k, v, o, dout, lse, dq, dk, dv, st, bf16, H, (int)T, (int)E, scale,
                                         BH * t / nt, BH * (t + 1) / nt);
        if (rc) {
            #pragma omp atomic write
            err = rc;
        }
    }
    return err;
}
