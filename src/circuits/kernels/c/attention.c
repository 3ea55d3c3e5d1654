/* Causal attention of a training step on CPUs, forward and backward (attention_body.h, called from
 * circuits/kernels/cpu_attention.py), on the vector helpers of attention_ops.h, compiled for AVX-512 (16 lanes,
 * 8 query rows a block); a second build runs bf16 on AMX tiles (attention_amx.h, attention_amx_backward.h, with
 * the AVX-512 helpers). An AVX2 build (8 lanes) was removed on 2026-12-07: it saved 10-14 % of an fp32 training
 * step on an AVX2-held AMD EPYC, below the 15 % a kernel must save (benchmarks/HISTORY.md); the VW == 8 branches
 * of the helpers went with it.
 *
 * Threads: OpenMP (-fopenmp). Loaded after torch, this library binds to the libgomp.so.1 torch has
 * already loaded, so its parallel regions run on torch's own worker threads. Threads of our own
 * (Python's, say) would compete for the cores with torch's workers, which spin for a while after
 * each of torch's parallel regions: on a 2-core Xeon that cost half of the kernel's gain. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#define THREAD omp_get_thread_num()
#define THREADS omp_get_num_threads()
#else
#define THREAD 0
#define THREADS 1
#endif

#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#define VW 16
#define R 8
#define JU 4
#define SUFFIX(name) name##_avx512
#include "attention_ops.h"
#include "attention_body.h"
#include "attention_ops_end.h"
#undef VW
#undef R
#undef JU
#undef SUFFIX
#pragma GCC pop_options

/* AMX needs GCC 11's intrinsics; with an older compiler the AMX entry points are stubs (amx_request says no,
 * so Python never calls the others), and the AVX-512 and AVX2 kernels above still build. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16,fma")
#define VW 16
#define R 8
#define JU 4
#define SUFFIX(name) name##_amx
#include "attention_ops.h"
#include "attention_amx.h"
#include "attention_amx_backward.h"
#include "attention_ops_end.h"
#undef VW
#undef R
#undef JU
#undef SUFFIX
#pragma GCC pop_options
#else
int amx_request(void) { return -1; }
int attention_forward_amx(const void *q, const void *k, const void *v, void *o, float *lse, const int64_t *st,
                          int bf16, int64_t BH, int64_t H, int64_t T, int64_t E, float scale) {
    return -3;
}
int attention_backward_amx(const void *q, const void *k, const void *v, const void *o, const void *dout,
                           const float *lse, void *dq, void *dk, void *dv, const int64_t *st, int bf16, int64_t BH,
                           int64_t H, int64_t T, int64_t E, float scale) {
    return -3;
}
#endif
