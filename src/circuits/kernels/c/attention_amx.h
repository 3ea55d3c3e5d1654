/* Causal attention on AMX tiles, bf16 in and out (attention.c includes this file once, after
 * attention_ops.h at VW = 16, under a target with AMX-BF16 and AVX512-BF16; circuits/cpu_attention.py calls
 * it for bf16 tensors where the CPU and the OS allow AMX).
 *
 * The same maths as attention_body.h, per (batch, head) slice:
 *   forward   S = Q K^T, P = softmax(scale S) (causal), O = P V, lse_i = log sum_j exp(scale S_ij)
 *   backward  D_i = dO_i . O_i, dS = scale P * (dO V^T - D), dQ = dS K, dK = dS^T Q, dV = P^T dO
 * but every product is a tile product C[16 x 16] += A[16 x 32] B[32 x 16] (bf16 in, fp32 sums; TDPBF16PS).
 * B tiles hold pairs of consecutive rows of B interleaved ("VNNI"): row p is (B[2p, n], B[2p+1, n]) for
 * n = 0..15, one 32-bit word each. So the B operand of X Y^T is Y's 32-bit transpose (words = pairs of
 * columns), and of X Y it is Y with pairs of rows interleaved; both are made once per slice.
 * The softmax and dS are computed in fp32 vectors. P and dS, the two operands computed here, enter their
 * products as two bf16 each (hi + lo: 16 bits of mantissa), so the kernel is as accurate as the fp32-vector
 * one; rounding them to bf16 alone, as flash attention does on GPUs, put dQ and dK 1-2 % off. The backward
 * (attention_amx_backward.h) works on S^T, keys as rows. */

/* One tile shape for all eight tiles: 16 rows of 64 bytes (16 fp32, or 32 bf16 = one K step) */
static void amx_configure(void) {
    struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
}

/* rows [T, E] of a strided bf16 slice -> contiguous [Tp, E], rows T..Tp zero */
INLINE void amx_load(const uint16_t *src, int64_t ld, int T, int Tp, int E, uint16_t *dst) {
    for (int j = 0; j < T; j++)  /* E a multiple of 32: whole 64-byte vectors, no call per row */
        for (int e = 0; e < E; e += 32) _mm512_storeu_si512(dst + (size_t)j * E + e, _mm512_loadu_si512(src + j * ld + e));
    memset(dst + (size_t)T * E, 0, 2 * (size_t)(Tp - T) * E);
}

/* fp32 rows [T, E] -> a strided bf16 slice, rounded to nearest even */
static void amx_store(const float *src, int T, int E, uint16_t *dst, int64_t ld) {
    for (int j = 0; j < T; j++)
        for (int e = 0; e < E; e += 16)
            _mm256_storeu_si256((__m256i *)(dst + j * ld + e),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + (size_t)j * E + e)));
}

/* B operand of X Y^T: Y [Tp, E] bf16 read as [Tp, E/2] words, transposed to [E/2, Tp] */
static void amx_words_t(const uint16_t *Y, int Tp, int E, uint32_t *out) {
    SUFFIX(transpose)((const float *)Y, Tp, Tp, E / 2, (float *)out);
}

/* B operand of X Y: Y [Tp, E] bf16 with row pairs interleaved, [Tp/2, E] words */
static void amx_pairs(const uint16_t *Y, int Tp, int E, uint32_t *out) {
    __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                  39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    for (int p = 0; p < Tp / 2; p++)
        for (int e = 0; e < E; e += 32) {
            __m512i a = _mm512_loadu_si512(Y + (size_t)(2 * p) * E + e), b = _mm512_loadu_si512(Y + (size_t)(2 * p + 1) * E + e);
            _mm512_storeu_si512(out + (size_t)p * E + e, _mm512_permutex2var_epi16(a, lo, b));
            _mm512_storeu_si512(out + (size_t)p * E + e + 16, _mm512_permutex2var_epi16(a, hi, b));
        }
}

/* A operand of K^T X: K [Tp, E] bf16 transposed to [E, Tp] bf16: its 32-bit words (pairs of columns) transposed,
 * then each row of words split into the rows of its two columns (widening to fp32, a transpose of twice the
 * size and narrowing back took three times as long); tmp [Tp E / 2] words */
static void amx_transpose16(const uint16_t *K, int Tp, int E, uint32_t *tmp, uint16_t *out) {
    amx_words_t(K, Tp, E, tmp);  /* tmp[p][j] = K[j][2p] | K[j][2p + 1] << 16 */
    for (int p = 0; p < E / 2; p++)
        for (int j = 0; j < Tp; j += 16) {
            __m512i w = _mm512_loadu_si512(tmp + (size_t)p * Tp + j);
            _mm256_storeu_si256((__m256i *)(out + (size_t)(2 * p) * Tp + j), _mm512_cvtepi32_epi16(w));
            _mm256_storeu_si256((__m256i *)(out + (size_t)(2 * p + 1) * Tp + j),
                                _mm512_cvtepi32_epi16(_mm512_srli_epi32(w, 16)));
        }
}

/* C[c0] += (A_hi + A_lo) B0 and C[c1] += (A_hi + A_lo) B1 on tiles 4-7: a product whose A is split into two
 * bf16 (hi + lo), over two column tiles of B; four independent tile products in flight. A macro: tile
 * numbers must be constants. */
#define AMX_HILO_TWO_COLUMNS(c0, c1, a_hi, a_lo, lda, b0, b1, ldb) \
    do {                                                          \
        _tile_loadd(4, a_hi, lda);                                \
        _tile_loadd(5, a_lo, lda);                                \
        _tile_loadd(6, b0, ldb);                                  \
        _tile_loadd(7, b1, ldb);                                  \
        _tile_dpbf16ps(c0, 4, 6);                                 \
        _tile_dpbf16ps(c1, 4, 7);                                 \
        _tile_dpbf16ps(c0, 5, 6);                                 \
        _tile_dpbf16ps(c1, 5, 7);                                 \
    } while (0)

#define AMX_SLICE(p, i, b, h) ((const uint16_t *)(p) + (b) * st[3 * (i)] + (h) * st[3 * (i) + 1])

/* rows i0..i0+15 of the slice after bh of tensors in[0..n) (numbered as in st), into the cache while this
 * one computes: otherwise loading a slice waits on memory */
static void amx_prefetch_next(const void *const *in, int n, const int64_t *st, int64_t bh, int64_t bh1, int64_t H,
                              int i0, int E) {
    if (bh + 1 >= bh1) return;
    for (int i = 0; i < n; i++)
        SUFFIX(prefetch_rows)((const char *)AMX_SLICE(in[i], i, (bh + 1) / H, (bh + 1) % H), 2 * st[3 * i + 2],
                              2 * E, i0, i0 + 16);
}

INLINE int amx_forward_e(const void *q, const void *k, const void *v, void *o, float *lse, const int64_t *st,
                         int64_t H, int T, int E, float scale, int64_t bh0, int64_t bh1) {
    int Tp = ROUND_UP(T, 32);
    /* in 2-byte units: Qb, Kb [Tp, E]; Pb, Pl [16, Tp]; Kt, Vv [Tp E / 2] words; S [16, Tp], Ob [16, E] fp32 */
    size_t n = 4 * (size_t)Tp * E + 64 * (size_t)Tp + 32 * (size_t)E;
    uint16_t *Qb = aligned_alloc(64, ROUND_UP(2 * n, 64));
    if (!Qb) return -2;
    uint16_t *Kb = Qb + (size_t)Tp * E, *Pb = Kb + (size_t)Tp * E, *Pl = Pb + 16 * (size_t)Tp;
    uint32_t *Kt = (uint32_t *)(Pl + 16 * (size_t)Tp), *Vv = Kt + (size_t)Tp * E / 2;
    float *S = (float *)(Vv + (size_t)Tp * E / 2), *Ob = S + 16 * (size_t)Tp;
    const void *in[3] = {q, k, v};
    /* a block's row maxima and sums for lse_rows; rows past the end keep a positive sum */
    float mx[16] = {0}, sum[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, inv[16];
    amx_configure();
    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        amx_load(AMX_SLICE(q, 0, b, h), st[2], T, Tp, E, Qb);
        amx_load(AMX_SLICE(k, 1, b, h), st[5], T, Tp, E, Kb);
        amx_words_t(Kb, Tp, E, Kt);
        amx_load(AMX_SLICE(v, 2, b, h), st[8], T, Tp, E, Kb);  /* V, through Kb's space: K is in Kt now */
        amx_pairs(Kb, Tp, E, Vv);
        for (int i0 = 0; i0 < T; i0 += 16) {
            int nr = T - i0 < 16 ? T - i0 : 16, Jd = ROUND_UP(i0 + 16, 32);
            for (int n0 = 0; n0 <= i0; n0 += 32) {  /* S[i0.., n0..] = Q K^T, two key tiles in flight */
                int two = n0 + 16 <= i0;
                _tile_zero(0);
                _tile_zero(1);
                for (int e = 0; e < E; e += 32) {
                    _tile_loadd(2, Qb + (size_t)i0 * E + e, 2 * E);
                    _tile_loadd(3, Kt + (size_t)(e / 2) * Tp + n0, 4 * Tp);
                    _tile_dpbf16ps(0, 2, 3);
                    if (two) {
                        _tile_loadd(4, Kt + (size_t)(e / 2) * Tp + n0 + 16, 4 * Tp);
                        _tile_dpbf16ps(1, 2, 4);
                    }
                }
                _tile_stored(0, S + n0, 4 * Tp);
                if (two) _tile_stored(1, S + n0 + 16, 4 * Tp);
            }
            amx_prefetch_next(in, 3, st, bh, bh1, H, i0, E);
            for (int r = 0; r < nr; r++) mx[r] = SUFFIX(softmax_row)(S + (size_t)r * Tp, i0 + r, i0 + 16, scale, 0.0f, sum + r);
            SUFFIX(lse_rows)(mx, sum, nr, lse + bh * T + i0, inv);
            for (int r = 0; r < 16; r++) {  /* P = hi + lo, both bf16: O as exact as fp32 P would make it */
                uint16_t *p = Pb + (size_t)r * Tp, *pl = Pl + (size_t)r * Tp;
                if (r >= nr) {
                    memset(p, 0, 2 * (size_t)Jd);
                    memset(pl, 0, 2 * (size_t)Jd);
                    continue;
                }
                const float *s = S + (size_t)r * Tp;
                for (int j = 0; j < i0 + 16; j += 16) {
                    vf x = LD(s + j) * inv[r];
                    __m256i hi = (__m256i)_mm512_cvtneps_pbh(x);
                    _mm256_storeu_si256((__m256i *)(p + j), hi);
                    _mm256_storeu_si256((__m256i *)(pl + j),
                                        (__m256i)_mm512_cvtneps_pbh(x - (vf)_mm512_cvtpbh_ps((__m256bh)hi)));
                }
                if (Jd > i0 + 16) {
                    memset(p + i0 + 16, 0, 32);
                    memset(pl + i0 + 16, 0, 32);
                }
            }
            for (int e = 0; e < E; e += 32) {  /* O = P V, two column tiles in flight */
                _tile_zero(0);
                _tile_zero(1);
                for (int k0 = 0; k0 < Jd; k0 += 32)
                    AMX_HILO_TWO_COLUMNS(0, 1, Pb + k0, Pl + k0, 2 * Tp, Vv + (size_t)(k0 / 2) * E + e,
                                         Vv + (size_t)(k0 / 2) * E + e + 16, 4 * E);
                _tile_stored(0, Ob + e, 4 * E);
                _tile_stored(1, Ob + e + 16, 4 * E);
            }
            amx_store(Ob, nr, E, (uint16_t *)AMX_SLICE(o, 3, b, h) + i0 * st[11], st[11]);
        }
    }
    _tile_release();
    free(Qb);
    return 0;
}


/* Linux hands out AMX's tile state only to processes that ask for it (arch_prctl ARCH_REQ_XCOMP_PERM for
 * XTILEDATA): 0 once granted, -1 where refused (old kernel, not Linux, no AMX). */
int amx_request(void) {
    static int granted;  /* a race only repeats the request */
#ifdef SYS_arch_prctl
    if (!granted) granted = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#endif
    return granted ? 0 : -1;
}


/* E a multiple of 32; 32 and 64 get code specialised for them. bf16 must be 3 (bf16 in and out). 0 on success,
 * -1 for an unsupported shape, -2 when scratch memory could not be had, -3 where AMX is refused. */
int attention_forward_amx(const void *q, const void *k, const void *v, void *o, float *lse, const int64_t *st,
                          int bf16, int64_t BH, int64_t H, int64_t T, int64_t E, float scale) {
    if (bf16 != 3 || E % 32 || T < 1 || T > 1 << 20 || BH < 1 || H < 1) return -1;
    if (amx_request()) return -3;
    int err = 0;
    #pragma omp parallel
    {
        int64_t t = THREAD, nt = THREADS, bh0 = BH * t / nt, bh1 = BH * (t + 1) / nt;
        int rc = E == 32   ? amx_forward_e(q, k, v, o, lse, st, H, (int)T, 32, scale, bh0, bh1)
                 : E == 64 ? amx_forward_e(q, k, v, o, lse, st, H, (int)T, 64, scale, bh0, bh1)
                           : amx_forward_e(q, k, v, o, lse, st, H, (int)T, (int)E, scale, bh0, bh1);
        if (rc) {
            #pragma omp atomic write
            err = rc;
        }
    }
    return err;
}
