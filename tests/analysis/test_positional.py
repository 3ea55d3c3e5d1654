"""Positional heads' attention statistics (``analysis.positional``) against explicit loops, on small sizes."""

import numpy as np
import pytest
import torch

from circuits.analysis.circuits import position_scores
from circuits.analysis.positional import RECENT, attention_summary, causal_softmax
from tests.analysis.models import sharp_model


def test_attention_summary_matches_loops(tiny_cfg):
    model = sharp_model(tiny_cfg)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (3, 12))
    got = attention_summary(model, tokens)
    _, cache = model.run_with_cache(tokens)
    A = cache["blocks.0.attn.hook_pattern"]
    P = causal_softmax(position_scores(model, 0, 12))
    for h in range(tiny_cfg.n_heads):
        selfs, prevs, ents, agree, flat, dist, recent = [], [], [], [], [], [], []
        for b in range(3):
            for t in range(1, 12):
                row = A[b, h, t, :t + 1]
                selfs.append(float(row[t]))
                prevs.append(float(row[t - 1]))
                ents.append(float(-(row * row.log()).sum()))
                agree.append(1 - 0.5 * float((row - P[h, t, :t + 1]).abs().sum()))
                flat.append(1 - 0.5 * float((row - 1 / (t + 1)).abs().sum()))
                dist.append(sum(float(row[s]) * (t - s) for s in range(t + 1)))
                recent.append(sum(float(row[s]) for s in range(t + 1) if t - s < RECENT))
        for key, vals in (("self", selfs), ("previous", prevs), ("entropy", ents), ("positional agreement", agree),
                          ("uniform agreement", flat), ("distance", dist), ("recent", recent)):
            assert float(got[key][h]) == pytest.approx(np.mean(vals), abs=1e-5)
    assert float(got["uniform distance"]) == pytest.approx(np.mean([t / 2 for t in range(1, 12)]))
    assert float(got["uniform recent"]) == pytest.approx(np.mean([min(RECENT, t + 1) / (t + 1) for t in range(1, 12)]))
    s = torch.randn(4, 4)
    want = torch.stack([torch.cat([s[t, :t + 1].softmax(-1), torch.zeros(3 - t)]) for t in range(4)])
    torch.testing.assert_close(causal_softmax(s), want)
