"""Losses: per token against F.cross_entropy, binned by position, over a whole split."""

import pytest
import torch
import torch.nn.functional as F

from circuits.metrics.losses import loss_by_position, loss_fn, per_token_loss, position_bins

from ..analysis.models import make_model


def test_loss_fn_is_cross_entropy():
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    per = loss_fn(logits, targets, per_token=True)
    for b in range(2):
        for t in range(5):
            assert float(per[b, t]) == pytest.approx(float(F.cross_entropy(logits[b, t], targets[b, t])), abs=1e-6)
    assert float(loss_fn(logits, targets)) == pytest.approx(float(per.mean()))


def test_position_bins_cover_every_position_once():
    for n in (8, 64, 256, 1024):
        edges = position_bins(n)
        assert edges[0] == 0 and edges[-1] == n and edges == sorted(set(edges))
        assert edges[1] == 1  # position 0 has a bin of its own
    loss = torch.arange(12.0)[None].expand(3, -1)
    assert loss_by_position(loss, [0, 1, 4, 12]) == [0.0, 2.0, 7.5]


def test_per_token_loss_at_chosen_positions_unembeds_only_those(tiny_cfg):
    model = make_model(tiny_cfg)
    windows = torch.randint(0, tiny_cfg.d_vocab, (3, tiny_cfg.n_ctx + 1))
    positions = [0, 5, tiny_cfg.n_ctx - 1]
    torch.testing.assert_close(per_token_loss(model, windows, positions), per_token_loss(model, windows)[:, positions])
