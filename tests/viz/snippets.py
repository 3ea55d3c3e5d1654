"""Python references for the book's HTML+JS snippets: reading a snippet's embedded data back, and what its
script computes, for the tests to compare the JavaScript (run under node) and the data with."""

import json
import re

import numpy as np


def extract_data(snippet: str) -> dict:
    """The JSON data embedded in a snippet."""
    match = re.search(r'<script type="application/json">(.*?)</script>', snippet, re.S)
    if match is None:
        raise ValueError("no embedded data in this snippet")
    return json.loads(match.group(1))


def value_weighted(patterns: np.ndarray, values_norm: np.ndarray) -> np.ndarray:
    """Value-weighted attention ``A[t, s] ||v_s|| / sum_s' A[t, s'] ||v_s'||`` (rows sum to 1), as the attention
    view's script computes it; patterns [..., dst, src], values_norm [..., src]; an all-zero row stays zero."""
    w = patterns * values_norm[..., None, :]
    total = w.sum(-1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def decode_data(data: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """The inverse of ``attention_view.encode_data`` (up to the rounding): patterns [L, H, n, n], relative value
    norms [L, H, n]."""
    L, H, n = data["n_layers"], data["n_heads"], len(data["tokens"])
    pats = np.zeros((L * H, n, n))
    rows, cols = np.tril_indices(n)
    pats[:, rows, cols] = np.asarray(data["patterns"]) / data["scale"]
    values = None if data["values"] is None else (np.asarray(data["values"]) / data["scale"]).reshape(L, H, n)
    return pats.reshape(L, H, n, n), values
