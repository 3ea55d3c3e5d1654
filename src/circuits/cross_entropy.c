/* Cross-entropy rows and their gradient for the fused unembedding loss on CPUs (circuits/cpu_xent.py).
 * Compiled like attention.c: the body once for AVX-512 and once for AVX2 + FMA, on torch's OpenMP
 * threads (see attention.c for why). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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
#include "cross_entropy_body.h"
#undef VW
#undef R
#undef JU
#undef SUFFIX
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define VW 8
#define R 4
#define JU 3
#define SUFFIX(name) name##_avx2
#include "attention_ops.h"
#include "cross_entropy_body.h"
#undef VW
#undef R
#undef JU
#undef SUFFIX
#pragma GCC pop_options
