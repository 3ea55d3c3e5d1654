"""The plain readings of copying beside Olsson et al.'s score (``analysis.induction_behaviour``)."""

import numpy as np
import pytest
import torch

from circuits.analysis.induction_behaviour import copying_detail, copying_random_level
from circuits.metrics.olsson import copying_scores

from .models import make_model


def test_a_head_that_copies_nothing_scores_the_random_level():
    """The shares of the raise sum to one over the sample, so an unrelated write gives the attended token 1/n."""
    g = torch.randn(20_000, 25, generator=torch.Generator().manual_seed(0))
    raised = (g - g.mean(-1, keepdim=True)).relu()
    score = 2 * float((raised[:, 0] / raised.sum(-1)).mean()) - 1
    assert score == pytest.approx(copying_random_level(25), abs=0.01)
    assert copying_random_level(25) == pytest.approx(-0.92)


def test_copying_detail_reads_the_direct_path(tiny_cfg):
    model = make_model(tiny_cfg, n_layers=2, init_std=0.3)
    samples = torch.stack([torch.randperm(tiny_cfg.d_vocab, generator=torch.Generator().manual_seed(i))[:10]
                           for i in range(3)])
    detail = copying_detail(model, samples)
    layer, head = 1, 2
    attn = model.blocks[layer].attn
    tops, ranks = [], []
    for sample in samples:
        for i, t in enumerate(sample):
            logits = model.embed.W_E[t] @ attn.W_V[head] @ attn.W_O[head] @ model.unembed.W_U  # [vocab]
            tops.append(float(int(logits[sample].argmax()) == i))
            ranks.append(int((logits > logits[t]).sum()))
    assert detail["own_top"][layer, head] == pytest.approx(np.mean(tops))
    assert detail["own_rank"][layer, head] == float(torch.tensor(ranks, dtype=torch.float).median())
    assert copying_scores(model, samples).shape == detail["own_top"].shape
