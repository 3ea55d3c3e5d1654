"""Exact tables read from a d_vocab x d_vocab circuit without building it: ``tables`` (the entry points: top-k
entries, copying rates, per-row top-k), ``scan`` (the consumers that keep what they need) and ``blocks`` (the
circuit block by block in bf16 or fp32, with a rigorous error bound per row)."""
