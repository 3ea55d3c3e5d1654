/* The backward of the AMX attention (attention_amx.h, which training_kernels.c includes first: its helpers,
 * tile configuration and notation). dS = scale P * (dO V^T - D) in blocks of 32 keys x 32 queries, worked
 * on transposed: S^T = K Q^T and dP^T = V dO^T on tiles, P^T and dS^T in AVX-512 vectors (the lse and D of
 * a query are one lane), then dV += P^T dO, dK += dS^T Q and dQ^T += K^T dS^T on tiles. */

/* One block of the backward: keys k0..k0+31 (rows) x queries q0..q0+31 (columns) */
INLINE void amx_backward_block(int k0, int q0, int T, int Tp, int E, float scale, const uint16_t *Kb,
                               const uint16_t *Vb, const uint32_t *Qt, const uint32_t *dOt, const uint32_t *Qv,
                               const uint32_t *dOv, const uint16_t *Kt16, const float *L, const float *D,
                               float *blk, float *dK, float *dV, float *dQt) {
    float *ST = blk, *dPT = blk + 32 * 32;
    uint16_t *PTb = (uint16_t *)(dPT + 32 * 32), *dSTb = PTb + 32 * 32;
    uint16_t *dSTl = dSTb + 32 * 32, *PTl = dSTl + 32 * 32;
    uint32_t *dSTv = (uint32_t *)(PTl + 32 * 32), *dSTw = dSTv + 16 * 32;
    for (int ks = 0; ks < 32; ks += 16)  /* S^T = K Q^T, dP^T = V dO^T */
        for (int qs = 0; qs < 32; qs += 16) {
            _tile_zero(0);
            _tile_zero(1);
            for (int e = 0; e < E; e += 32) {
                _tile_loadd(2, Kb + (size_t)(k0 + ks) * E + e, 2 * E);
                _tile_loadd(3, Qt + (size_t)(e / 2) * Tp + q0 + qs, 4 * Tp);
                _tile_dpbf16ps(0, 2, 3);
                _tile_loadd(4, Vb + (size_t)(k0 + ks) * E + e, 2 * E);
                _tile_loadd(5, dOt + (size_t)(e / 2) * Tp + q0 + qs, 4 * Tp);
                _tile_dpbf16ps(1, 4, 5);
            }
            _tile_stored(0, ST + ks * 32 + qs, 128);
            _tile_stored(1, dPT + ks * 32 + qs, 128);
        }
    __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                     23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int qs = 0; qs < 32; qs += 16) {
        vi query = (vi){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} + (q0 + qs);
        vf lse = LD(L + q0 + qs), d = LD(D + q0 + qs), hi_even = {0}, lo_even = {0};
        for (int r = 0; r < 32; r++) {
            vi keep = (query >= k0 + r) & (query < T);  /* causal, and no padded query */
            vf p = SUFFIX(vexp)(LD(ST + r * 32 + qs) * scale - lse);
            p = (vf)((vi)p & keep);
            vf ds = p * (LD(dPT + r * 32 + qs) - d) * scale;
            /* P = hi + lo and dS = hi + lo, each two bf16: 16 bits of mantissa into dV, dK and dQ, whose sums
             * cancel (the rows of dS sum to zero), as accurate as fp32 P and dS would make them */
            __m256i p_hi = (__m256i)_mm512_cvtneps_pbh(p);
            _mm256_storeu_si256((__m256i *)(PTb + r * 32 + qs), p_hi);
            _mm256_storeu_si256((__m256i *)(PTl + r * 32 + qs),
                                (__m256i)_mm512_cvtneps_pbh(p - (vf)_mm512_cvtpbh_ps((__m256bh)p_hi)));
            __m256i hi = (__m256i)_mm512_cvtneps_pbh(ds);
            vf lo = ds - (vf)_mm512_cvtpbh_ps((__m256bh)hi);
            _mm256_storeu_si256((__m256i *)(dSTb + r * 32 + qs), hi);
            _mm256_storeu_si256((__m256i *)(dSTl + r * 32 + qs), (__m256i)_mm512_cvtneps_pbh(lo));
            if (r % 2 == 0) {
                hi_even = ds;
                lo_even = lo;
                continue;
            }
            __m512i two = (__m512i)_mm512_cvtne2ps_pbh(ds, hi_even);  /* [even row | odd row] */
            _mm512_storeu_si512(dSTv + (r / 2) * 32 + qs, _mm512_permutexvar_epi16(pairs, two));
            two = (__m512i)_mm512_cvtne2ps_pbh(lo, lo_even);
            _mm512_storeu_si512(dSTw + (r / 2) * 32 + qs, _mm512_permutexvar_epi16(pairs, two));
        }
    }
    for (int ks = 0; ks < 32; ks += 16) {  /* dV += P^T dO, dK += dS^T Q */
        _tile_loadd(2, PTb + ks * 32, 64);
        _tile_loadd(7, PTl + ks * 32, 64);
        _tile_loadd(4, dSTb + ks * 32, 64);
        _tile_loadd(6, dSTl + ks * 32, 64);
        for (int e = 0; e < E; e += 16) {
            float *v = dV + (size_t)(k0 + ks) * E + e, *kk = dK + (size_t)(k0 + ks) * E + e;
            _tile_loadd(0, v, 4 * E);
            _tile_loadd(3, dOv + (size_t)(q0 / 2) * E + e, 4 * E);
            _tile_dpbf16ps(0, 2, 3);
            _tile_dpbf16ps(0, 7, 3);
            _tile_stored(0, v, 4 * E);
            _tile_loadd(1, kk, 4 * E);
            _tile_loadd(5, Qv + (size_t)(q0 / 2) * E + e, 4 * E);
            _tile_dpbf16ps(1, 4, 5);
            _tile_dpbf16ps(1, 6, 5);
            _tile_stored(1, kk, 4 * E);
        }
    }
    for (int e = 0; e < E; e += 16) {  /* dQ^T += K^T dS^T */
        _tile_loadd(2, Kt16 + (size_t)e * Tp + k0, 2 * Tp);
        for (int qs = 0; qs < 32; qs += 16) {
            float *c = dQt + (size_t)e * Tp + q0 + qs;
            _tile_loadd(0, c, 4 * Tp);
            _tile_loadd(3, dSTv + qs, 128);
            _tile_loadd(7, dSTw + qs, 128);
            _tile_dpbf16ps(0, 2, 3);
            _tile_dpbf16ps(0, 2, 7);
            _tile_stored(0, c, 4 * Tp);
        }
    }
}

INLINE int amx_backward_e(const void *q, const void *k, const void *v, const void *o, const void *dout,
                          const float *lse, void *dq, void *dk, void *dv, const int64_t *st, int64_t H, int T,
                          int E, float scale, int64_t bh0, int64_t bh1) {
    int Tp = ROUND_UP(T, 32);
    size_t TE = (size_t)Tp * E;
    /* in floats: Qb Kb Vb dOb Kt16 (bf16, TE/2 each); Qt dOt Qv dOv (words, TE/2 each); dK dV dQt, 2 of tmp (TE
     * each); L, D (Tp); the block's ST, dPT (1024 each), PTb, dSTb, dSTl, PTl, dSTv, dSTw (512 each) */
    float *base = aligned_alloc(64, 4 * ROUND_UP(10 * TE + 2 * (size_t)Tp + 5120, 16));
    if (!base) return -2;
    uint16_t *Qb = (uint16_t *)base, *Kb = Qb + TE, *Vb = Kb + TE, *dOb = Vb + TE, *Kt16 = dOb + TE;
    uint32_t *Qt = (uint32_t *)(Kt16 + TE), *dOt = Qt + TE / 2, *Qv = dOt + TE / 2, *dOv = Qv + TE / 2;
    float *dK = (float *)(dOv + TE / 2), *dV = dK + TE, *dQt = dV + TE, *tmp = dQt + TE;
    float *L = tmp + 2 * TE, *D = L + Tp, *blk = D + Tp;
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
        amx_transpose16(Kb, Tp, E, tmp, Kt16);
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
        memset(dK, 0, sizeof(float) * 3 * TE);
        for (int k0 = 0; k0 < T; k0 += 32) {
            amx_prefetch_next(in, 5, st, bh, bh1, H, k0, E);
            amx_prefetch_next(in, 5, st, bh, bh1, H, k0 + 16, E);
            for (int q0 = k0; q0 < T; q0 += 32)
                amx_backward_block(k0, q0, T, Tp, E, scale, Kb, Vb, Qt, dOt, Qv, dOv, Kt16, L, D, blk, dK, dV, dQt);
        }
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
