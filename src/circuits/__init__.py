"""circuits: A Mathematical Framework for Transformer Circuits, reproduced.

Notation, stated once (paper: Elhage et al. 2021; shapes: TransformerLens):

    W_E   [d_vocab, d_model]          token embedding (row vectors: x @ W_E)
    W_pos [n_ctx, d_model]            positions, added to the inputs of W_Q and W_K only
    W_Q, W_K, W_V [n_heads, d_model, d_head]
    W_O   [n_heads, d_head, d_model]
    W_U   [d_model, d_vocab]

The paper uses column vectors, so its matrices are the transposes of ours:
    paper W_OV^h = W_O^h W_V^h  (d_model x d_model)  ==  (W_V[h] @ W_O[h]).T
    paper W_QK^h = W_Q^hT W_K^h                      ==  W_Q[h] @ W_K[h].T  (same matrix: bilinear form
                                                         x_dst^T W_QK x_src with our row convention)
`circuits.circuits` holds these maps in one place; every other module calls it.
"""

from .config import PRESETS, DataConfig, ModelConfig, Preset, TrainConfig, get_preset

__all__ = ["PRESETS", "DataConfig", "ModelConfig", "Preset", "TrainConfig", "get_preset"]
