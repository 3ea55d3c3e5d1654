/* The body of the causal attention kernels (circuits/attention.c includes it once per instruction set,
 * with VW = fp32 lanes per vector, R = query rows per block and SUFFIX naming the functions).
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
#define vf SUFFIX(vf)
#define vfu SUFFIX(vfu)
#define vi SUFFIX(vi)
typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
#define LD(p) (*(const vfu *)(p))
#define ST(p, x) (*(vfu *)(p) = (x))
#define BC(x) ((vf){} + (x))
#define INLINE static inline __attribute__((always_inline))

/* exp(x) for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial; about 1 ulp) */
INLINE vf SUFFIX(vexp)(vf x) {
    vi small = x < BC(-87.0f);
    x = (vf)((small & (vi)BC(-87.0f)) | (~small & (vi)x));
    vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round to nearest */
    vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = BC(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return (vf)((vi)(p * (vf)e) & ~small);  /* below -87: 0 */
}

INLINE void SUFFIX(rows_dot)(const float *A, int64_t lda, int nr, const float *Bt, int ldb, int J, int E,
                             float *C, int ldc) {
    const float *a[R];
    for (int r = 0; r < R; r++) a[r] = A + (r < nr ? r : nr - 1) * lda;  /* rows past the end: repeats */
    for (int j = 0; j < J; j += 2 * VW) {
        vf c[R][2] = {{{0}}};
        for (int e = 0; e < E; e++) {
            vf b0 = LD(Bt + e * ldb + j), b1 = LD(Bt + e * ldb + j + VW);
            for (int r = 0; r < R; r++) {
                vf x = BC(a[r][e]);
                c[r][0] += x * b0;
                c[r][1] += x * b1;
            }
        }
        for (int r = 0; r < R; r++) {
            ST(C + r * ldc + j, c[r][0]);
            ST(C + r * ldc + j + VW, c[r][1]);
        }
    }
}

INLINE void SUFFIX(rows_times)(const float *W, int ldw, int nr, const float *M, int J, int E,
                               float *C, int64_t ldc, const float *rowscale) {
    for (int e = 0; e < E; e += 2 * VW) {
        vf c[R][2] = {{{0}}};
        for (int j = 0; j < J; j++) {
            vf m0 = LD(M + j * E + e), m1 = LD(M + j * E + e + VW);
            for (int r = 0; r < R; r++) {
                vf w = BC(W[r * ldw + j]);
                c[r][0] += w * m0;
                c[r][1] += w * m1;
            }
        }
        for (int r = 0; r < nr; r++) {
            float g = rowscale ? rowscale[r] : 1.0f;
            ST(C + r * ldc + e, c[r][0] * g);
            ST(C + r * ldc + e + VW, c[r][1] * g);
        }
    }
}

/* M[j, :] += sum_r W[r, j] X[r, :] for j < J; rows of W past nr must be zero. JU rows of M at a time,
 * so that JU x 2 chains of dependent FMAs overlap */
INLINE void SUFFIX(rank_update)(float *M, int E, int J, const float *W, int ldw, const float *X, int64_t ldx,
                                int nr) {
    for (int e = 0; e < E; e += 2 * VW) {
        vf x[R][2];
        for (int r = 0; r < R; r++) {
            const float *row = X + (r < nr ? r : nr - 1) * ldx + e;
            x[r][0] = LD(row);
            x[r][1] = LD(row + VW);
        }
        int j = 0;
        for (; j + JU <= J; j += JU) {
            vf m[JU][2];
            for (int u = 0; u < JU; u++) {
                m[u][0] = LD(M + (j + u) * E + e);
                m[u][1] = LD(M + (j + u) * E + e + VW);
            }
            for (int r = 0; r < R; r++)
                for (int u = 0; u < JU; u++) {
                    vf w = BC(W[r * ldw + j + u]);
                    m[u][0] += w * x[r][0];
                    m[u][1] += w * x[r][1];
                }
            for (int u = 0; u < JU; u++) {
                ST(M + (j + u) * E + e, m[u][0]);
                ST(M + (j + u) * E + e + VW, m[u][1]);
            }
        }
        for (; j < J; j++) {
            vf m0 = LD(M + j * E + e), m1 = LD(M + j * E + e + VW);
            for (int r = 0; r < R; r++) {
                vf w = BC(W[r * ldw + j]);
                m0 += w * x[r][0];
                m1 += w * x[r][1];
            }
            ST(M + j * E + e, m0);
            ST(M + j * E + e + VW, m1);
        }
    }
}

/* rows [T, E] of a (batch, head) slice, fp32 or bf16 (rows ld elements apart) <-> contiguous fp32.
 * The slices' rows lie far apart (one head of a [b, n, 3, h, e] tensor): they are read once, whole. */
INLINE void SUFFIX(load_rows)(const void *src, int bf16, int64_t ld, int T, int E, float *dst) {
    for (int j = 0; j < T; j++) {
        if (bf16) {
            const uint16_t *row = (const uint16_t *)src + j * ld;
            uint32_t *out = (uint32_t *)(dst + j * E);
            for (int e = 0; e < E; e++) out[e] = (uint32_t)row[e] << 16;
        } else {
            memcpy(dst + j * E, (const float *)src + j * ld, sizeof(float) * E);
        }
    }
}

/* bf16 rounds to nearest even; NaN stays NaN */
INLINE void SUFFIX(store_rows)(const float *src, int T, int E, void *dst, int bf16, int64_t ld) {
    for (int j = 0; j < T; j++) {
        if (bf16) {
            const uint32_t *in = (const uint32_t *)(src + j * E);
            uint16_t *row = (uint16_t *)dst + j * ld;
            for (int e = 0; e < E; e++) {
                uint32_t x = in[e];
                row[e] = (x & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x >> 16) | 0x40)
                                                         : (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
            }
        } else {
            memcpy((float *)dst + j * ld, src + j * E, sizeof(float) * E);
        }
    }
}

/* Bt[e, j] = B[j, e] for j < T, zero for T <= j < Tp (B contiguous [T, E], E a multiple of VW).
 * VW x VW blocks in registers: log2(VW) butterfly stages, stage w swapping the elements whose row and
 * column differ in bit w (two-source shuffles), instead of VW^2 scalar moves. */
INLINE void SUFFIX(transpose)(const float *B, int T, int Tp, int E, float *Bt) {
    int j = 0;
    for (; j + VW <= T; j += VW)
        for (int e = 0; e < E; e += VW) {
            vf x[VW];
            for (int i = 0; i < VW; i++) x[i] = LD(B + (j + i) * E + e);
            for (int w = VW / 2; w >= 1; w /= 2) {
                vi lo, hi;
                for (int c = 0; c < VW; c++) {
                    lo[c] = c & w ? VW + c - w : c;  /* row a keeps its columns without bit w, takes b's */
                    hi[c] = c & w ? VW + c : c + w;  /* row b = a + w: the mirror */
                }
                for (int a = 0; a < VW; a++)
                    if (!(a & w)) {
                        vf na = __builtin_shuffle(x[a], x[a + w], lo), nb = __builtin_shuffle(x[a], x[a + w], hi);
                        x[a] = na;
                        x[a + w] = nb;
                    }
            }
            for (int i = 0; i < VW; i++) ST(Bt + (e + i) * Tp + j, x[i]);
        }
    for (; j < T; j++)
        for (int e = 0; e < E; e++) Bt[(int64_t)e * Tp + j] = B[(int64_t)j * E + e];
    for (int e = 0; e < E; e++)
        for (j = T; j < Tp; j++) Bt[e * Tp + j] = 0.0f;
}

/* rows [j0, j1) of a slice into the cache: the next slice's, while this one computes. Loading a
 * slice otherwise waits on memory for a fifth of the forward's time (measured on a 2-core Xeon) */
INLINE void SUFFIX(prefetch_rows)(const char *src, int64_t ld_bytes, int row_bytes, int j0, int j1) {
    for (int j = j0; j < j1; j++)
        for (int c = 0; c < row_bytes; c += 64) __builtin_prefetch(src + j * ld_bytes + c, 0, 3);
}

INLINE vf SUFFIX(vmax)(vf a, vf b) {
    vi m = a > b;
    return (vf)((m & (vi)a) | (~m & (vi)b));
}

/* every lane of the result: the max (or sum) of x's lanes, in log2(VW) shuffle steps */
INLINE vf SUFFIX(all_max)(vf x) {
    for (int w = VW / 2; w >= 1; w /= 2) {
        vi lanes;
        for (int k = 0; k < VW; k++) lanes[k] = k ^ w;
        x = SUFFIX(vmax)(x, __builtin_shuffle(x, lanes));
    }
    return x;
}

INLINE vf SUFFIX(all_sum)(vf x) {
    for (int w = VW / 2; w >= 1; w /= 2) {
        vi lanes;
        for (int k = 0; k < VW; k++) lanes[k] = k ^ w;
        x += __builtin_shuffle(x, lanes);
    }
    return x;
}

/* Row r of S (query i, keys 0..i; Jp a multiple of VW past i): in place, P = exp(scale S - lse);
 * entries past i become 0 (set to -inf first: vexp flushes them). lse NaN means "forward": lse is
 * computed and returned, P left unnormalised (exp(scale S - scale max S)) and 1/sum stored in *inv. */
INLINE float SUFFIX(softmax_row)(float *s, int i, int Jp, float scale, float lse, float *inv) {
    for (int j = i + 1; j < Jp; j++) s[j] = -INFINITY;
    if (lse != lse) {
        vf mv = LD(s);
        for (int j = VW; j < Jp; j += VW) mv = SUFFIX(vmax)(mv, LD(s + j));
        lse = scale * SUFFIX(all_max)(mv)[0];
        vf sum = {0};
        for (int j = 0; j < Jp; j += VW) {
            vf p = SUFFIX(vexp)(LD(s + j) * scale - lse);
            ST(s + j, p);
            sum += p;
        }
        float l = SUFFIX(all_sum)(sum)[0];
        *inv = 1.0f / l;  /* P = s / l: the caller scales the rows of P V instead of P */
        return lse + logf(l);
    }
    for (int j = 0; j < Jp; j += VW) ST(s + j, SUFFIX(vexp)(LD(s + j) * scale - lse));
    return lse;
}

/* Tensors are given by their (batch, head, position) strides st, in elements, 3 per tensor in argument
 * order; E is contiguous. bf16 (bit 0: inputs, bit 1: outputs) says which are bf16 rather than fp32;
 * lse is fp32 [B*H, T]. A (batch, head) slice is loaded into contiguous fp32, computed, and stored. */
#define SLICE_AT(p, i, isbf16, b, h) ((const char *)(p) + ((b) * st[3 * (i)] + (h) * st[3 * (i) + 1]) * ((isbf16) ? 2 : 4))
#define SLICE(p, i, isbf16) SLICE_AT(p, i, isbf16, b, h)
/* rows [i0, i0 + nr) of tensor i of the next slice, if any, into the cache */
#define PREFETCH_NEXT(p, i) \
    if (bh + 1 < bh1) \
        SUFFIX(prefetch_rows)(SLICE_AT(p, i, in16, (bh + 1) / H, (bh + 1) % H), st[3 * (i) + 2] * (in16 ? 2 : 4), \
                              E * (in16 ? 2 : 4), i0, i0 + nr)
INLINE int SUFFIX(forward_e)(const void *q, const void *k, const void *v, void *o, float *lse, const int64_t *st,
                             int bf16, int64_t H, int T, int E, float scale, int64_t bh0, int64_t bh1) {
    int Tp = (T + 2 * VW - 1) / (2 * VW) * (2 * VW), in16 = bf16 & 1, out16 = (bf16 >> 1) & 1;
    float *Kt = malloc(sizeof(float) * ((size_t)E * Tp + (size_t)R * Tp + 4 * (size_t)T * E));
    if (!Kt) return -2;
    float *S = Kt + (size_t)E * Tp, *Qc = S + (size_t)R * Tp, *Kc = Qc + (size_t)T * E, *Vc = Kc + (size_t)T * E;
    float *Oc = Vc + (size_t)T * E, inv[R];
    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        float *L = lse + bh * T;
        SUFFIX(load_rows)(SLICE(q, 0, in16), in16, st[2], T, E, Qc);
        SUFFIX(load_rows)(SLICE(k, 1, in16), in16, st[5], T, E, Kc);
        SUFFIX(load_rows)(SLICE(v, 2, in16), in16, st[8], T, E, Vc);
        SUFFIX(transpose)(Kc, T, Tp, E, Kt);
        for (int i0 = 0; i0 < T; i0 += R) {
            int nr = T - i0 < R ? T - i0 : R, J = i0 + nr;
            int Jd = (J + 2 * VW - 1) / (2 * VW) * (2 * VW), Jp = (J + VW - 1) / VW * VW;
            PREFETCH_NEXT(q, 0);
            PREFETCH_NEXT(k, 1);
            PREFETCH_NEXT(v, 2);
            SUFFIX(rows_dot)(Qc + i0 * E, E, nr, Kt, Tp, Jd, E, S, Tp);
            for (int r = 0; r < nr; r++)
                L[i0 + r] = SUFFIX(softmax_row)(S + r * Tp, i0 + r, Jp, scale, NAN, inv + r);
            SUFFIX(rows_times)(S, Tp, nr, Vc, J, E, Oc + i0 * E, E, inv);
        }
        SUFFIX(store_rows)(Oc, T, E, (void *)SLICE(o, 3, out16), out16, st[11]);
    }
    free(Kt);
    return 0;
}

INLINE int SUFFIX(backward_e)(const void *q, const void *k, const void *v, const void *o, const void *dout,
                              const float *lse, void *dq, void *dk, void *dv, const int64_t *st, int bf16,
                              int64_t H, int T, int E, float scale, int64_t bh0, int64_t bh1) {
    int Tp = (T + 2 * VW - 1) / (2 * VW) * (2 * VW), in16 = bf16 & 1, out16 = (bf16 >> 1) & 1;
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
        SUFFIX(load_rows)(SLICE(q, 0, in16), in16, st[2], T, E, Qc);
        SUFFIX(load_rows)(SLICE(k, 1, in16), in16, st[5], T, E, Kc);
        SUFFIX(load_rows)(SLICE(v, 2, in16), in16, st[8], T, E, Vc);
        SUFFIX(load_rows)(SLICE(o, 3, in16), in16, st[11], T, E, Oc);
        SUFFIX(load_rows)(SLICE(dout, 4, in16), in16, st[14], T, E, dOc);
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
            int Jd = (J + 2 * VW - 1) / (2 * VW) * (2 * VW), Jp = (J + VW - 1) / VW * VW;
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
        SUFFIX(store_rows)(dQ, T, E, (void *)SLICE(dq, 5, out16), out16, st[17]);
        SUFFIX(store_rows)(dK, T, E, (void *)SLICE(dk, 6, out16), out16, st[20]);
        SUFFIX(store_rows)(dV, T, E, (void *)SLICE(dv, 7, out16), out16, st[23]);
    }
    free(Kt);
    return 0;
}
#undef SLICE
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

#undef vf
#undef vfu
#undef vi
#undef LD
#undef ST
#undef BC
#undef INLINE
