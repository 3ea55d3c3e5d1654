"""The fast paths, behind one door: one call per operation, each with a plain-torch reference beside it.

A reader learning the paper can skip this folder. The model and the training loop call

    causal_attention(q, k, v)                 softmax*(q kᵀ / √d_head) v            (reference_causal_attention)
    unembed_cross_entropy(x, W_U, targets)    mean cross-entropy of the logits x W_U (reference_unembed_cross_entropy)

and the circuit scans call ``group_max`` (row-wise maxima of column groups of a low-rank product, on AMX;
``reference_group_maxima``). Each picks its implementation by device and dtype: a small C kernel on x86-64
CPUs where it runs (``cpu_attention``, ``group_max``; compiled on first use by ``build``), torch's fused
kernels on GPUs, plain torch elsewhere. Tests compare every fast path with its reference. A C kernel stays
only where it saves at least 15 % of a training step (or a scan) on the CPUs it targets: measured on
2026-12-07, the attention saves 27 % (AVX-512, bf16); its AVX2 build (10-14 % of an fp32 step), the C
cross-entropy rows (9 %), the fused residual reads (2 %) and an AVX2 group-maximum kernel (slower than torch)
were removed (``benchmarks/kernel_value.py``, ``benchmarks/HISTORY.md``).

``precision`` says whether bf16 is fast here; ``memory`` keeps a training process's freed memory for reuse.
"""

from .attention import causal_attention, reference_causal_attention
from .precision import autocast_dtype, bf16_is_fast
from .unembed_loss import reference_unembed_cross_entropy, unembed_cross_entropy

__all__ = ["autocast_dtype", "bf16_is_fast", "causal_attention", "reference_causal_attention",
           "reference_unembed_cross_entropy", "unembed_cross_entropy"]
