/* The vector helpers of the attention kernels (attention.c includes this file, then the attention
 * body, once per build, with VW fp32 lanes per vector (16: AVX-512), R query rows per block, JU rows of dK and
 * dV per update, and SUFFIX naming the functions), in GCC's vector extensions. attention_ops_end.h undefines
 * the types and macros defined here. */
#define vf SUFFIX(vf)
#define vfu SUFFIX(vfu)
#define vi SUFFIX(vi)
#define vu SUFFIX(vu)
#define vh SUFFIX(vh)
typedef float vf __attribute__((vector_size(VW * 4)));
typedef float vfu __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
typedef uint32_t vu __attribute__((vector_size(VW * 4), aligned(4)));
typedef uint16_t vh __attribute__((vector_size(VW * 2), aligned(2)));
#define LD(p) (*(const vfu *)(p))
#define ST(p, x) (*(vfu *)(p) = (x))
/* x in every lane. Written as lanes, not as (vf){} + x: 0 + x is not x for x = -0, so GCC kept a scalar add and a
 * register broadcast per use, where the lanes compile to one broadcast from memory (the small products' inner
 * loops: a quarter fewer instructions) */
#define BC8(v) v, v, v, v, v, v, v, v
#define BC(x) __extension__({ float bc_ = (x); (vf){BC8(bc_), BC8(bc_)}; })
#define INLINE static inline __attribute__((always_inline))
#define ROUND_UP(x, m) (((x) + (m) - 1) / (m) * (m))

/* exp(x) for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial; about 1 ulp); below -87
 * (and -inf): 0; NaN stays NaN */
INLINE vf SUFFIX(vexp)(vf x) {
    /* p 2^n in one vscalefps, the small lanes zeroed by its mask: 4 instructions fewer, the same bits */
    __mmask16 keep = _mm512_cmp_ps_mask((__m512)x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
    x = (vf)_mm512_max_ps(_mm512_set1_ps(-87.0f), (__m512)x);  /* NaN passes (max returns its second operand) */
    vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round to nearest */
    vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = BC(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return (vf)_mm512_maskz_scalef_ps(keep, (__m512)p, (__m512)n);
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

/* dst[0..d) = src row (bf16 or fp32), or dst += it */
INLINE void SUFFIX(row_widen)(float *dst, const void *src, int bf16, int64_t d, int add) {
    int64_t e = 0;
    if (bf16) {
        const uint16_t *s = (const uint16_t *)src;
        for (; e + VW <= d; e += VW) {
            vf x = (vf)(__builtin_convertvector(*(const vh *)(s + e), vu) << 16);
            ST(dst + e, add ? LD(dst + e) + x : x);
        }
        for (; e < d; e++) {
            uint32_t u = (uint32_t)s[e] << 16;
            float f;
            memcpy(&f, &u, 4);
            dst[e] = add ? dst[e] + f : f;
        }
    } else {
        const float *s = (const float *)src;
        for (; e + VW <= d; e += VW) ST(dst + e, add ? LD(dst + e) + LD(s + e) : LD(s + e));
        for (; e < d; e++) dst[e] = add ? dst[e] + s[e] : s[e];
    }
}

/* rows [T, E] of a (batch, head) slice, fp32 or bf16 (rows ld elements apart) <-> contiguous fp32.
 * The slices' rows lie far apart (one head of a [b, n, 3, h, e] tensor): they are read once, whole. */
INLINE void SUFFIX(load_rows)(const void *src, int bf16, int64_t ld, int T, int E, float *dst) {
    for (int j = 0; j < T; j++)  /* whole vectors, not a call to memcpy per row (a quarter of the attention's time) */
        SUFFIX(row_widen)(dst + j * E, (const char *)src + j * ld * (bf16 ? 2 : 4), bf16, E, 0);
}

/* rows times factor; bf16 rounds to nearest even, NaN stays NaN */
INLINE void SUFFIX(store_rows)(const float *src, int T, int E, void *dst, int bf16, int64_t ld, float factor) {
    for (int j = 0; j < T; j++) {
        if (bf16) {
            uint16_t *row = (uint16_t *)dst + j * ld;
            int e = 0;
            for (; e + VW <= E; e += VW) {  /* the same rounding, VW at a time (the scalar loop was not vectorised) */
                vu x = (vu)(LD(src + j * E + e) * factor);
                vu nan = (x & 0x7fffffffu) > 0x7f800000u;
                vu r = (nan & ((x >> 16) | 0x40)) | (~nan & ((x + 0x7fffu + ((x >> 16) & 1)) >> 16));
                *(vh *)(row + e) = __builtin_convertvector(r, vh);
            }
            for (; e < E; e++) {
                float f = src[j * E + e] * factor;
                uint32_t x;
                memcpy(&x, &f, 4);
                row[e] = (x & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x >> 16) | 0x40)
                                                         : (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
            }
        } else {
            float *row = (float *)dst + j * ld;
            int e = 0;
            for (; e + VW <= E; e += VW) ST(row + e, LD(src + j * E + e) * factor);
            for (; e < E; e++) row[e] = src[j * E + e] * factor;
        }
    }
}

/* Constant lane indices (written out, so that they are folded into the shuffles: built in a loop they
 * were not, and building them cost more than the shuffles). LANES(F, w) = (F(0, w), ..., F(VW - 1, w)). */
#define LANES8(F, w) F(0, w), F(1, w), F(2, w), F(3, w), F(4, w), F(5, w), F(6, w), F(7, w)
#define LANES(F, w) ((vi){LANES8(F, w), F(8, w), F(9, w), F(10, w), F(11, w), F(12, w), F(13, w), F(14, w), F(15, w)})
#define LANE_XOR(c, w) ((c) ^ (w))
#define LANE_LO(c, w) ((c) & (w) ? VW + (c) - (w) : (c))  /* row a keeps its columns without bit w, takes b's */
#define LANE_HI(c, w) ((c) & (w) ? VW + (c) : (c) + (w))  /* row b = a + w: the mirror */

/* one butterfly stage of a VW x VW transpose: rows a and a + w swap the elements whose column has bit w */
INLINE void SUFFIX(butterfly)(vf *x, int w, vi lo, vi hi) {
    for (int a = 0; a < VW; a++)
        if (!(a & w)) {
            vf na = __builtin_shuffle(x[a], x[a + w], lo), nb = __builtin_shuffle(x[a], x[a + w], hi);
            x[a] = na;
            x[a + w] = nb;
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
            SUFFIX(butterfly)(x, 8, LANES(LANE_LO, 8), LANES(LANE_HI, 8));
            SUFFIX(butterfly)(x, 4, LANES(LANE_LO, 4), LANES(LANE_HI, 4));
            SUFFIX(butterfly)(x, 2, LANES(LANE_LO, 2), LANES(LANE_HI, 2));
            SUFFIX(butterfly)(x, 1, LANES(LANE_LO, 1), LANES(LANE_HI, 1));
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
    x = SUFFIX(vmax)(x, __builtin_shuffle(x, LANES(LANE_XOR, 8)));
    x = SUFFIX(vmax)(x, __builtin_shuffle(x, LANES(LANE_XOR, 4)));
    x = SUFFIX(vmax)(x, __builtin_shuffle(x, LANES(LANE_XOR, 2)));
    return SUFFIX(vmax)(x, __builtin_shuffle(x, LANES(LANE_XOR, 1)));
}

INLINE vf SUFFIX(all_sum)(vf x) {
    x += __builtin_shuffle(x, LANES(LANE_XOR, 8));
    x += __builtin_shuffle(x, LANES(LANE_XOR, 4));
    x += __builtin_shuffle(x, LANES(LANE_XOR, 2));
    return x + __builtin_shuffle(x, LANES(LANE_XOR, 1));
}

/* Row r of S (query i, keys 0..i; Jp a multiple of VW past i): in place, P = exp(scale S - lse);
 * entries past i become 0 (set to -inf first: vexp flushes them). sum not NULL means "forward": P is left
 * unnormalised (exp(scale S - scale max S)), its row sum stored in *sum, and scale max S returned (the lse
 * given is ignored; ``lse_rows`` then makes a block's lse and 1/sum in vectors: a call to logf a row, which
 * clobbers every vector register, cost the forward's constants a reload a row). In the backward (sum NULL)
 * a NaN lse, from a forward that met NaN, gives NaN. */
INLINE float SUFFIX(softmax_row)(float *s, int i, int Jp, float scale, float lse, float *sum) {
    /* keys past i: in the last vector for every caller (the loop covers any other); one blend, where scalar
     * stores left the next vector load of the row waiting for them */
    for (int j = i + 1; j < Jp - VW; j++) s[j] = -INFINITY;
    vi past = LANES(LANE_XOR, 0) + (Jp - VW) > i;
    ST(s + Jp - VW, (vf)((past & (vi)BC(-INFINITY)) | (~past & (vi)LD(s + Jp - VW))));
    if (sum) {
        vf mv = LD(s);
        for (int j = VW; j < Jp; j += VW) mv = SUFFIX(vmax)(mv, LD(s + j));
        lse = scale * SUFFIX(all_max)(mv)[0];
        vf acc = {0};
        for (int j = 0; j < Jp; j += VW) {
            vf p = SUFFIX(vexp)(LD(s + j) * scale - lse);
            ST(s + j, p);
            acc += p;
        }
        *sum = SUFFIX(all_sum)(acc)[0];
        return lse;
    }
    for (int j = 0; j < Jp; j += VW) ST(s + j, SUFFIX(vexp)(LD(s + j) * scale - lse));
    return lse;
}

/* log(x) for x > 0 (Cephes logf: x = 2^e m, m in [sqrt(1/2), sqrt(2)), a degree-8 polynomial in m - 1;
 * within 2 ulp of glibc's logf); NaN stays NaN, +inf gives +inf */
INLINE vf SUFFIX(vlog)(vf x) {
    vi xi = (vi)x;
    vi e = ((xi >> 23) & 0xff) - 126;
    vf m = (vf)((xi & 0x007fffff) | 0x3f000000);  /* [1/2, 1) */
    vi small = m < BC(0.707106781186547524f);
    e -= small & 1;
    vf f = (vf)((small & (vi)(m + m)) | (~small & (vi)m)) - 1.0f;
    vf z = f * f, p = BC(7.0376836292e-2f);
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    vf ef = __builtin_convertvector(e, vf);
    vf y = p * f * z + ef * -2.12194440e-4f - 0.5f * z;
    y = f + y + ef * 0.693359375f;
    vi special = (vi)(x != x) | (xi == 0x7f800000);  /* NaN, +inf: as they are */
    return (vf)((special & xi) | (~special & (vi)y));
}

/* a block's n rows: lse = scale max + log(sum), inv = 1 / sum, from softmax_row's outputs in max and sum, each
 * ROUND_UP(n, VW) long (entries past n: any positive sum) */
INLINE void SUFFIX(lse_rows)(const float *max, const float *sum, int n, float *lse, float *inv) {
    for (int r = 0; r < n; r += VW) {
        vf l = LD(sum + r), out = LD(max + r) + SUFFIX(vlog)(l), iv = 1.0f / l;
        for (int k = 0; k < VW && r + k < n; k++) lse[r + k] = out[k], inv[r + k] = iv[k];
    }
}
