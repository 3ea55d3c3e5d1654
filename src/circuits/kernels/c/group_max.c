/* Row-wise maxima of 64-column groups of A @ B, without writing A @ B anywhere (circuits/kernels/group_max.py).
 *
 * group_max_amx (Intel AMX, bf16 in, fp32 accumulation), called only where the CPU has AMX:
 *   A  [rows, 32*kt] bf16, row-major (kt = 1 or 2: inner width 32 or 64); rows a multiple of 16
 *   Bp [4*groups column blocks][kt][16 pairs][16 columns] int32: B in AMX's VNNI layout, where one
 *      int32 holds the two bf16 values B[2p, c], B[2p + 1, c]
 *   Tile registers 0-3 accumulate four 16 x 16 fp32 blocks (64 columns), 4-5 hold 16 rows of A,
 *   6-7 the B tiles. B is read in chunks of CHUNK groups (32 KB at inner width 64) that stay in L1
 *   while a block of ROWS rows (128 KB, in L2) passes. Measured on a 2-core Xeon with AMX: 0.14 s
 *   for all 50257 x 50257 entries of a rank-64 product, where torch's bf16 matmul alone takes 0.28 s.
 *   It writes out[groups, stride] fp32: out[g, i] = max_{c in group g} sum_r A[i, r] B[r, c].
 *
 * An fp32 AVX2 kernel for CPUs without fast bf16 was removed on 2026-12-07: on an AMD EPYC held to AVX2 it took
 * 9.1 s where torch's own tiles took 8.4 s for the same scan (benchmarks/HISTORY.md).
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw")))
#ifndef CHUNK
#define CHUNK 4
#endif
#ifndef ROWS
#define ROWS 1024
#endif

struct tile_config {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* Linux hands out AMX state only on request, once per process. 0 on success. */
int amx_request(void) { return (int)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); }

AMX static void configure(void) {
    struct tile_config c;
    memset(&c, 0, sizeof c);
    c.palette_id = 1;
    for (int t = 0; t < 8; t++) { c.rows[t] = 16; c.colsb[t] = 64; }
    _tile_loadconfig(&c);
}

#define BLOCK1(T, J, BT)                                   \
    _tile_loadd(BT, b + (J) * 256, 64);                   \
    _tile_dpbf16ps(T, 4, BT);
#define BLOCK2(T, J)                                       \
    _tile_loadd(6, b + ((J) * 2) * 256, 64);              \
    _tile_dpbf16ps(T, 4, 6);                               \
    _tile_loadd(7, b + ((J) * 2 + 1) * 256, 64);          \
    _tile_dpbf16ps(T, 5, 7);

/* The maxima of 16 vectors, one per lane, in 45 instructions instead of 16 horizontal reductions:
 * halve the candidates per row four times, pairing rows so that every shuffle serves two of them. */
AMX static inline __m512 max16(const __m512 m[16], __m512i order) {
    __m512 v[8], w[4], u[2];
    for (int i = 0; i < 8; i++)
        v[i] = _mm512_max_ps(_mm512_shuffle_f32x4(m[i], m[i + 8], 0x44), _mm512_shuffle_f32x4(m[i], m[i + 8], 0xEE));
    for (int i = 0; i < 4; i++)
        w[i] = _mm512_max_ps(_mm512_shuffle_f32x4(v[i], v[i + 4], 0x88), _mm512_shuffle_f32x4(v[i], v[i + 4], 0xDD));
    for (int i = 0; i < 2; i++)
        u[i] = _mm512_max_ps(_mm512_shuffle_ps(w[i], w[i + 2], 0x44), _mm512_shuffle_ps(w[i], w[i + 2], 0xEE));
    __m512 r = _mm512_max_ps(_mm512_shuffle_ps(u[0], u[1], 0x88), _mm512_shuffle_ps(u[0], u[1], 0xDD));
    return _mm512_permutexvar_ps(order, r);
}

/* Which row each lane of max16's shuffled result holds, found by running it on rows of constants. */
AMX static __m512i lane_order(void) {
    __m512 m[16];
    float rows[16] __attribute__((aligned(64)));
    int32_t idx[16] __attribute__((aligned(64)));
    for (int i = 0; i < 16; i++) m[i] = _mm512_set1_ps((float)i);
    _mm512_store_ps(rows, max16(m, _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)));
    for (int lane = 0; lane < 16; lane++) idx[(int)rows[lane]] = lane;
    return _mm512_load_si512(idx);
}

#define COMPUTE(g)                                                                  \
    do {                                                                            \
        const int32_t *b = Bp + (g) * 4 * kt * 256;                                 \
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);                 \
        if (kt == 2) {                                                              \
            BLOCK2(0, 0) BLOCK2(1, 1) BLOCK2(2, 2) BLOCK2(3, 3)                     \
        } else {                                                                    \
            BLOCK1(0, 0, 6) BLOCK1(1, 1, 7) BLOCK1(2, 2, 6) BLOCK1(3, 3, 7)         \
        }                                                                           \
    } while (0)
#define STORE(a)                                                                    \
    do {                                                                            \
        _tile_stored(0, (a)[0], 64); _tile_stored(1, (a)[1], 64);                   \
        _tile_stored(2, (a)[2], 64); _tile_stored(3, (a)[3], 64);                   \
    } while (0)

AMX void group_max_amx(const uint16_t *A, const int32_t *Bp, float *out, int64_t rows, int64_t stride, int64_t groups,
               int kt) {
    float acc[2][4][16][16] __attribute__((aligned(64)));
    __m512 m[16];
    __m512i order = lane_order();
    configure();
    for (int64_t r0 = 0; r0 < rows; r0 += ROWS)
    for (int64_t g0 = 0; g0 < groups; g0 += CHUNK) {
        int64_t g1 = g0 + CHUNK < groups ? g0 + CHUNK : groups;
        for (int64_t r = r0; r < rows && r < r0 + ROWS; r += 16) {
            _tile_loadd(4, A + r * 32 * kt, 64 * kt);
            if (kt == 2) _tile_loadd(5, A + r * 64 + 32, 128);
            COMPUTE(g0);
            STORE(acc[0]);
            /* the tiles of group g + 1 are multiplied while the vector units reduce group g */
            for (int64_t g = g0; g < g1; g++) {
                float (*cur)[16][16] = acc[(g - g0) & 1];
                if (g + 1 < g1) COMPUTE(g + 1);
                for (int i = 0; i < 16; i++)
                    m[i] = _mm512_max_ps(_mm512_max_ps(_mm512_load_ps(cur[0][i]), _mm512_load_ps(cur[1][i])),
                                         _mm512_max_ps(_mm512_load_ps(cur[2][i]), _mm512_load_ps(cur[3][i])));
                _mm512_storeu_ps(out + g * stride + r, max16(m, order));
                if (g + 1 < g1) STORE(acc[(g + 1 - g0) & 1]);
            }
        }
    }
    _tile_release();
}
