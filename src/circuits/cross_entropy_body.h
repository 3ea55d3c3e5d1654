/* The body of the cross-entropy kernel (circuits/training_kernels.c includes it once per instruction set,
 * after attention_ops.h, whose vector helpers it uses).
 *
 * Per row i of a chunk of logits x [rows, V] and its target t_i:
 *   loss_i = m + log sum_v exp(x_v - m) - x_{t_i}          (m = max_v x_v)
 *   grad_i = scale * (softmax(x) - onehot(t_i))            (written over x when grad == logits)
 * One row at a time: widened into fp32 scratch (V floats, in L1 or L2), one pass for the maximum, one for
 * exp and its sum, one that scales and writes the gradient. torch's route makes about ten passes over the chunk. */
int SUFFIX(cross_entropy_rows)(const void *logits, int bf16, int64_t rows, int64_t V, const int64_t *targets,
                               float scale, float *loss, void *grad) {
    if (V < 1 || V > 1 << 30 || rows < 0) return -1;
    int Vp = ROUND_UP((int)V, VW), size = bf16 ? 2 : 4, err = 0;
    #pragma omp parallel
    {
        float *e = malloc(sizeof(float) * Vp);
        int64_t t = THREAD, nt = THREADS;
        for (int64_t i = rows * t / nt; e && i < rows * (t + 1) / nt; i++) {
            const char *src = (const char *)logits + i * V * size;
            int64_t target = targets[i];
            if (target < 0 || target >= V) {
                #pragma omp atomic write
                err = -3;
                break;
            }
            SUFFIX(load_rows)(src, bf16, V, 1, (int)V, e);
            float picked = e[target];
            for (int j = (int)V; j < Vp; j++) e[j] = -INFINITY;  /* vexp turns them into 0 */
            vf mv = LD(e);
            for (int j = VW; j < Vp; j += VW) mv = SUFFIX(vmax)(mv, LD(e + j));
            float m = SUFFIX(all_max)(mv)[0];
            vf sum = {0};
            const char *next = src + V * size;  /* the next row into the cache while this one computes */
            int more = i + 1 < rows * (t + 1) / nt;
            for (int j = 0; j < Vp; j += VW) {
                if (more && j < V) __builtin_prefetch(next + (int64_t)j * size, 0, 3);
                vf p = SUFFIX(vexp)(LD(e + j) - m);
                ST(e + j, p);
                sum += p;
            }
            float l = SUFFIX(all_sum)(sum)[0];
            loss[i] = m + logf(l) - picked;
            if (grad) {  /* scale * softmax, written as it is scaled; then the target's entry, less scale */
                float g = scale / l, picked_grad = e[target] * g - scale;
                char *row = (char *)grad + i * V * size;
                SUFFIX(store_rows)(e, 1, (int)V, row, bf16, V, g);
                SUFFIX(store_rows)(&picked_grad, 1, 1, row + target * size, bf16, 1, 1.0f);
            }
        }
        if (!e) {
            #pragma omp atomic write
            err = -2;
        }
        free(e);
    }
    return err;
}

/* dst[i] += src[i] for i < n: fp32 dst, src bf16 or fp32 (W_U's gradient over groups of rows, whose products
 * oneDNN returns in bf16). torch's mixed-dtype add_ makes an fp32 copy of src first: three passes, not one. */
int SUFFIX(accumulate)(float *dst, const void *src, int bf16, int64_t n) {
    if (n < 0) return -1;
    #pragma omp parallel
    {
        int64_t t = THREAD, nt = THREADS, blocks = n / 4096 + 1;
        int64_t i0 = blocks * t / nt * 4096, i1 = blocks * (t + 1) / nt * 4096;
        if (i1 > n) i1 = n;
        if (i0 < i1) SUFFIX(row_widen)(dst + i0, (const char *)src + i0 * (bf16 ? 2 : 4), bf16, i1 - i0, 1);
    }
    return 0;
}
