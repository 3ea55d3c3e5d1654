/* The backward of the AMX attention (attention_amx.h, which attention.c includes first: its helpers,
 * tile configuration and notation). dS = scale P * (dO V^T - D), worked on transposed, keys as rows: for
 * each block of 16 keys, S^T = K Q^T and dP^T = V dO^T on tiles against all later queries, P^T and dS^T in
 * AVX-512 vectors (the lse and D of a query are one lane), then dV = P^T dO and dK = dS^T Q on tiles whose
 * sums stay in tile registers; then, per block of 16 queries, dQ^T = K^T dS^T, its sums in tiles too. No
 * partial sum goes through memory (an earlier version kept them there: a third more tile loads and stores). */

/* Per block of 16 keys k0.. (rows): P^T and dS^T against every query from qa = k0 rounded down to 32, into
 * hi + lo bf16 rows PTh, PTl, dSh, dSl [16, Tp] (A operands of dV and dK), and dS^T with key rows paired
 * into dSvh, dSvl [Tp/2, Tp] words (B operands of dQ^T, for the second pass). Four tile chains at once:
 * S^T for two 16-query halves, dP^T for the same two. */
INLINE void amx_key_block_scores(int k0, int T, int Tp, int E, float scale, const uint16_t *Kb, const uint16_t *Vb,
                                 const uint32_t *Qt, const uint32_t *dOt, const float *L, const float *D, float *ST,
                                 float *dPT, uint16_t *PTh, uint16_t *PTl, uint16_t *dSh, uint16_t *dSl,
                                 uint32_t *dSvh, uint32_t *dSvl) {
    __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                     23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int q0 = k0 / 32 * 32; q0 < T; q0 += 32) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int e = 0; e < E; e += 32) {
            _tile_loadd(4, Kb + (size_t)k0 * E + e, 2 * E);
            _tile_loadd(5, Vb + (size_t)k0 * E + e, 2 * E);
            _tile_loadd(6, Qt + (size_t)(e / 2) * Tp + q0, 4 * Tp);
            _tile_loadd(7, Qt + (size_t)(e / 2) * Tp + q0 + 16, 4 * Tp);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(6, dOt + (size_t)(e / 2) * Tp + q0, 4 * Tp);
            _tile_loadd(7, dOt + (size_t)(e / 2) * Tp + q0 + 16, 4 * Tp);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, ST, 128);
        _tile_stored(1, ST + 16, 128);
        _tile_stored(2, dPT, 128);
        _tile_stored(3, dPT + 16, 128);
        for (int qs = 0; qs < 32; qs += 16) {
            int q = q0 + qs;
            vi query = (vi){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} + q;
            vf lse = LD(L + q), d = LD(D + q), hi_even = {0}, lo_even = {0};
            for (int r = 0; r < 16; r++) {
                vi keep = (query >= k0 + r) & (query < T);  /* causal, and no padded query */
                vf p = SUFFIX(vexp)(LD(ST + r * 32 + qs) * scale - lse);
                p = (vf)((vi)p & keep);
                vf ds = p * (LD(dPT + r * 32 + qs) - d) * scale;
                /* P = hi + lo and dS = hi + lo, each two bf16: 16 bits of mantissa into dV, dK and dQ, whose
                 * sums cancel (the rows of dS sum to zero), as accurate as fp32 P and dS would make them */
                size_t at = (size_t)r * Tp + q;
                __m256i p_hi = (__m256i)_mm512_cvtneps_pbh(p), ds_hi = (__m256i)_mm512_cvtneps_pbh(ds);
                vf lo = ds - (vf)_mm512_cvtpbh_ps((__m256bh)ds_hi);
                _mm256_storeu_si256((__m256i *)(PTh + at), p_hi);
                _mm256_storeu_si256((__m256i *)(PTl + at),
                                    (__m256i)_mm512_cvtneps_pbh(p - (vf)_mm512_cvtpbh_ps((__m256bh)p_hi)));
                _mm256_storeu_si256((__m256i *)(dSh + at), ds_hi);
                _mm256_storeu_si256((__m256i *)(dSl + at), (__m256i)_mm512_cvtneps_pbh(lo));
                if (r % 2 == 0) {
                    hi_even = ds;
                    lo_even = lo;
                    continue;
                }
                size_t pair = (size_t)((k0 + r) / 2) * Tp + q;
                __m512i two = (__m512i)_mm512_cvtne2ps_pbh(ds, hi_even);  /* [even row | odd row] */
                _mm512_storeu_si512(dSvh + pair, _mm512_permutexvar_epi16(pairs, two));
                two = (__m512i)_mm512_cvtne2ps_pbh(lo, lo_even);
                _mm512_storeu_si512(dSvl + pair, _mm512_permutexvar_epi16(pairs, two));
            }
        }
    }
}

/* dV = P^T dO and dK = dS^T Q for the 16 keys k0.. (rows of dV, dK [Tp, E]), 32 columns at a time, the four
 * sums (dV and dK, two column halves each) kept in tiles across all queries */
INLINE void amx_key_block_sums(int k0, int T, int Tp, int E, const uint16_t *PTh, const uint16_t *PTl,
                               const uint16_t *dSh, const uint16_t *dSl, const uint32_t *dOv, const uint32_t *Qv,
                               float *dK, float *dV) {
    for (int e = 0; e < E; e += 32) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int q0 = k0 / 32 * 32; q0 < T; q0 += 32) {
            const uint32_t *o = dOv + (size_t)(q0 / 2) * E + e, *x = Qv + (size_t)(q0 / 2) * E + e;
            AMX_HILO_TWO_COLUMNS(0, 1, PTh + q0, PTl + q0, 2 * Tp, o, o + 16, 4 * E);
            AMX_HILO_TWO_COLUMNS(2, 3, dSh + q0, dSl + q0, 2 * Tp, x, x + 16, 4 * E);
        }
        _tile_stored(0, dV + (size_t)k0 * E + e, 4 * E);
        _tile_stored(1, dV + (size_t)k0 * E + e + 16, 4 * E);
        _tile_stored(2, dK + (size_t)k0 * E + e, 4 * E);
        _tile_stored(3, dK + (size_t)k0 * E + e + 16, 4 * E);
    }
}

/* dQ^T = K^T dS^T for the 16 queries q0.. (columns of dQt [E, Tp]): keys 32 at a time up to the last query,
 * 32 rows of dQ^T at a time, hi and lo dS^T, the two sums kept in tiles */
INLINE void amx_query_block_sums(int q0, int Tp, int E, const uint16_t *Kt16, const uint32_t *dSvh,
                                 const uint32_t *dSvl, float *dQt) {
    for (int e = 0; e < E; e += 32) {
        _tile_zero(0);
        _tile_zero(1);
        for (int k0 = 0; k0 <= q0 + 15; k0 += 32) {
            _tile_loadd(4, Kt16 + (size_t)e * Tp + k0, 2 * Tp);
            _tile_loadd(5, Kt16 + (size_t)(e + 16) * Tp + k0, 2 * Tp);
            _tile_loadd(6, dSvh + (size_t)(k0 / 2) * Tp + q0, 4 * Tp);
            _tile_loadd(7, dSvl + (size_t)(k0 / 2) * Tp + q0, 4 * Tp);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 5, 6);
            _tile_dpbf16ps(0, 4, 7);
            _tile_dpbf16ps(1, 5, 7);
        }
        _tile_stored(0, dQt + (size_t)e * Tp + q0, 4 * Tp);
        _tile_stored(1, dQt + (size_t)(e + 16) * Tp + q0, 4 * Tp);
    }
}

INLINE int amx_backward_e(const void *q, const void *k, const void *v, const void *o, const void *dout,
                          const float *lse, void *dq, void *dk, void *dv, const int64_t *st, int64_t H, int T,
                          int E, float scale, int64_t bh0, int64_t bh1) {
    int Tp = ROUND_UP(T, 32);
    size_t TE = (size_t)Tp * E;
    /* in floats: Qb Kb Vb dOb Kt16 (bf16, TE/2 each); Qt dOt Qv dOv (words, TE/2 each); dK dV dQt, 2 of tmp (TE
     * each); L, D (Tp); ST, dPT (512 each); PTh PTl dSh dSl (bf16 [16, Tp]: 8 Tp each); dSvh, dSvl (Tp^2 / 2
     * each) */
    float *base = aligned_alloc(64, 4 * ROUND_UP(10 * TE + 34 * (size_t)Tp + 1024 + (size_t)Tp * Tp, 16));
    if (!base) return -2;
    uint16_t *Qb = (uint16_t *)base, *Kb = Qb + TE, *Vb = Kb + TE, *dOb = Vb + TE, *Kt16 = dOb + TE;
    uint32_t *Qt = (uint32_t *)(Kt16 + TE), *dOt = Qt + TE / 2, *Qv = dOt + TE / 2, *dOv = Qv + TE / 2;
    float *dK = (float *)(dOv + TE / 2), *dV = dK + TE, *dQt = dV + TE, *tmp = dQt + TE;
    float *L = tmp + 2 * TE, *D = L + Tp, *ST = D + Tp, *dPT = ST + 512;
    uint16_t *PTh = (uint16_t *)(dPT + 512), *PTl = PTh + 16 * Tp, *dSh = PTl + 16 * Tp, *dSl = dSh + 16 * Tp;
    uint32_t *dSvh = (uint32_t *)(dSl + 16 * Tp), *dSvl = dSvh + (size_t)Tp * Tp / 2;
    const void *in[5] = {q, k, v, o, dout};
    amx_configure();
    for (int64_t bh = bh0; bh < bh1; bh++) {
        int64_t b = bh / H, h = bh % H;
        amx_load(AMX_SLICE(q, 0, b, h), st[2], T, Tp, E, Qb);
        amx_load(AMX_SLICE(k, 1, b, h), st[5], T, Tp, E, Kb);
        amx_load(AMX_SLICE(v, 2, b, h), st[8], T, Tp, E, Vb);
        amx_load(AMX_SLICE(dout, 4, b, h), st[14], T, Tp, E, dOb);
        amx_words_t(Qb, Tp, E, Qt);
        amx_words_t(dOb, Tp, E, dOt);
        amx_pairs(Qb, Tp, E, Qv);
        amx_pairs(dOb, Tp, E, dOv);
        amx_transpose16(Kb, Tp, E, (uint32_t *)tmp, Kt16);
        const uint16_t *O = AMX_SLICE(o, 3, b, h);
        for (int i = 0; i < Tp; i++) {
            vf acc = {0};
            for (int e = 0; i < T && e < E; e += 16) {
                __m512 x = _mm512_cvtpbh_ps((__m256bh)_mm256_loadu_si256((const __m256i *)(O + i * st[11] + e)));
                __m512 y = _mm512_cvtpbh_ps((__m256bh)_mm256_loadu_si256((const __m256i *)(dOb + (size_t)i * E + e)));
                acc += (vf)x * (vf)y;
            }
            D[i] = SUFFIX(all_sum)(acc)[0];
            L[i] = i < T ? lse[bh * T + i] : 0.0f;
        }
        /* pairs of key rows past the last block of 16 are read by the dQ pass (times zero rows of K^T) */
        int Tk = ROUND_UP(T, 16);
        memset(dSvh + (size_t)(Tk / 2) * Tp, 0, sizeof(uint32_t) * (size_t)(Tp - Tk) / 2 * Tp);
        memset(dSvl + (size_t)(Tk / 2) * Tp, 0, sizeof(uint32_t) * (size_t)(Tp - Tk) / 2 * Tp);
        for (int k0 = 0; k0 < T; k0 += 16) {
            amx_prefetch_next(in, 5, st, bh, bh1, H, k0, E);
            amx_key_block_scores(k0, T, Tp, E, scale, Kb, Vb, Qt, dOt, L, D, ST, dPT, PTh, PTl, dSh, dSl, dSvh, dSvl);
            amx_key_block_sums(k0, T, Tp, E, PTh, PTl, dSh, dSl, dOv, Qv, dK, dV);
        }
        for (int q0 = 0; q0 < T; q0 += 16) amx_query_block_sums(q0, Tp, E, Kt16, dSvh, dSvl, dQt);
        SUFFIX(transpose)(dQt, E, E, Tp, tmp);  /* dQ [Tp, E] */
        amx_store(tmp, T, E, (uint16_t *)AMX_SLICE(dq, 5, b, h), st[17]);
        amx_store(dK, T, E, (uint16_t *)AMX_SLICE(dk, 6, b, h), st[20]);
        amx_store(dV, T, E, (uint16_t *)AMX_SLICE(dv, 7, b, h), st[23]);
    }
    _tile_release();
    free(base);
    return 0;
}

int attention_backward_amx(const void *q, const void *k, const void *v, const void *o, const void *dout,
                           const float *lse, void *dq, void *dk, void *dv, const int64_t *st, int bf16, int64_t BH,
                           int64_t H, int64_t T, int64_t E, float scale) {
    if (bf16 != 3 || E % 32 || T < 1 || T > 1 << 20 || BH < 1 || H < 1) return -1;
    if (amx_request()) return -3;
    int err = 0;
    #pragma omp parallel
    {
        int64_t t = THREAD, nt = THREADS, bh0 = BH * t / nt, bh1 = BH * (t + 1) / nt;
        int rc = E == 32   ? amx_backward_e(q, k, v, o, dout, lse, dq, dk, dv, st, H, (int)T, 32, scale, bh0, bh1)
                 : E == 64 ? amx_backward_e(q, k, v, o, dout, lse, dq, dk, dv, st, H, (int)T, 64, scale, bh0, bh1)
                           : amx_backward_e(q, k, v, o, dout, lse, dq, dk, dv, st, H, (int)T, (int)E, scale, bh0, bh1);
        if (rc) {
            #pragma omp atomic write
            err = rc;
        }
    }
    return err;
}
#undef AMX_SLICE
#undef AMX_HILO_TWO_COLUMNS
