"""The paper's circuit maths, on trained models. It reads weights and activations; it never trains.

- ``factored``: ``FactoredMatrix``, a low-rank product A @ B kept as its factors (eigenvalues, SVD, norms and
  blocks without the d_vocab x d_vocab matrix).
- ``circuits``: the one place our row-vector weights become the paper's W_OV, W_QK, OV and QK circuits.
- ``bigrams`` (zero layers); ``path_expansion``, ``skip_trigrams``, ``skip_trigram_effect``,
  ``skip_trigram_bugs``, ``positional`` (one layer); ``composition``, ``induction``, ``term_importance``,
  ``virtual_heads`` (two layers); ``ablation`` (knock-outs through hook points); ``patterns`` (attention as data
  for figures).
- ``basis`` (rotating the residual stream: no privileged basis); ``qk_paths`` (a later layer's attention scores
  expanded over what wrote its queries and keys: Q- and K-composition).
- ``scan``: exact top-k tables of a whole d_vocab x d_vocab circuit without building it.
"""
