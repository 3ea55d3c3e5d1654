"""circuits: *A Mathematical Framework for Transformer Circuits* (Elhage et al. 2021), reproduced.

Notation, stated once (names: the paper's; shapes: TransformerLens's):

    W_E   [d_vocab, d_model]          token embedding (row vectors: a token's embedding is a row, x = W_E[t])
    W_pos [n_ctx, d_model]            positions, added to the inputs of W_Q and W_K only (Shortformer)
    W_Q, W_K, W_V [n_heads, d_model, d_head]
    W_O   [n_heads, d_head, d_model]
    W_U   [d_model, d_vocab]

The paper uses column vectors, so its matrices are the transposes of ours:

    paper W_OV^h = W_O^h W_V^h   (d_model x d_model)  ==  (W_V[h] @ W_O[h])ᵀ
    paper W_QK^h = W_Q^hᵀ W_K^h                       ==  W_Q[h] @ W_K[h]ᵀ   (the same matrix: the bilinear
                                                           form x_dstᵀ W_QK x_src reads dst by src either way)

``circuits.analysis.circuits`` makes these maps, in the paper's orientation; every other module calls it.

The package is a stack of layers. Each imports only from layers below it, and layers on one line
(separated by "|") never import each other. ``tests/test_layers.py`` reads the block below and checks it
with import-linter, so this block is the rule:

    [layers]
    circuits.cli
    circuits.findings
    circuits.train | circuits.analysis | circuits.viz
    circuits.metrics
    circuits.model
    circuits.data | circuits.kernels
    circuits.config | circuits.paths
    [end]

- ``config``, ``paths``: presets and where files live.
- ``data``: the corpus, tokenizers, token streams and the batches cut from them.
- ``kernels``: the fast paths of a training step and of the circuit scans, one call per operation with a
  plain-torch reference beside it. A reader learning the paper can skip this folder entirely.
- ``model``: the transformer (its forward is the residual stream), hook points, checkpoints, TransformerLens.
- ``metrics``: losses and Olsson et al.'s per-head scores, with the thresholds every chapter uses.
- ``train``: the training loop, its log, and training or publishing a preset's models.
- ``analysis``: the paper's circuit maths: factored matrices, OV/QK circuits, path expansion, composition,
  term importance, skip-trigrams, induction heads, virtual heads, the exact scans. It never trains.
- ``viz``: plotly figures and the book's HTML widgets. It is handed numbers and strings, never a model.
- ``findings``: every claim of the papers as a row, with our measurement and a verdict; the book's shared
  results. ``cli``: ``python -m circuits.cli``.
"""
