"""Measuring skip-trigrams by running the model (``analysis.skip_trigram_effect``) against the model's own forward
pass, on small sizes."""

import numpy as np
import pytest
import torch

from circuits.analysis.skip_trigram_effect import (last_position_terms, next_token_logprobs, skip_trigram_effect,
                                                   text_contexts)
from tests.analysis.models import sharp_model


def test_text_contexts_and_effects_match_the_model(tiny_cfg):
    model = sharp_model(tiny_cfg)
    stream = np.random.default_rng(0).integers(0, tiny_cfg.d_vocab, 3000)
    pre, gap = text_contexts(stream, 6, 5, 3, avoid=[7])
    assert pre.shape == (6, 5) and gap.shape == (6, 3) and not np.isin(np.hstack([pre, gap]), [7]).any()
    seqs = torch.randint(0, tiny_cfg.d_vocab, (5, 9))
    torch.testing.assert_close(next_token_logprobs(model, seqs, batch_size=2),
                               model(seqs)[:, -1].log_softmax(-1))
    source, controls, targets, dest = 7, [1, 2], [3, 4], 9
    frame = skip_trigram_effect(model, pre, gap, source, controls, targets, dest=dest)
    for j, t in enumerate(targets):
        lp = lambda first, i: float(model(torch.tensor([[*pre[i], first, *gap[i], dest]]))[0, -1].log_softmax(-1)[t])
        diffs = [lp(source, i) - np.mean([lp(c, i) for c in controls]) for i in range(6)]
        assert frame["log-prob change (nats)"][j] == pytest.approx(np.mean(diffs), abs=1e-4)
        assert frame["P with source"][j] == pytest.approx(np.mean([np.exp(lp(source, i)) for i in range(6)]), rel=1e-4)
        ctx = [lp(source, i) - np.mean([lp(c, i) for c in controls]) for i in range(6)]
        assert frame["standard error"][j] == pytest.approx(np.std(ctx, ddof=1) / np.sqrt(6), rel=1e-3, abs=1e-6)
        logit = lambda first, i: float(model(torch.tensor([[*pre[i], first, *gap[i], dest]]))[0, -1, t])
        rise = np.mean([logit(source, i) - np.mean([logit(c, i) for c in controls]) for i in range(6)])
        assert frame["logit change"][j] == pytest.approx(rise, abs=1e-4)
        assert sum(frame["head logit change"][j]) == pytest.approx(rise, abs=1e-4)  # split exactly over heads
    no_dest = skip_trigram_effect(model, pre, gap, source, controls, targets)  # destination = last gap token
    want = float(model(torch.tensor([[*pre[0], source, *gap[0]]]))[0, -1].softmax(-1)[3])
    assert no_dest["P with source"][0] == pytest.approx(
        np.mean([float(model(torch.tensor([[*pre[i], source, *gap[i]]]))[0, -1].softmax(-1)[3]) for i in range(6)]),
        rel=1e-4) and want > 0
    two = sharp_model(tiny_cfg, n_layers=2)  # the general path: every position through every block
    torch.testing.assert_close(next_token_logprobs(two, seqs), two(seqs)[:, -1].log_softmax(-1))
    frame2 = skip_trigram_effect(two, pre, gap, source, controls, targets, dest=dest)
    assert "head logit change" not in frame2 and frame2["standard error"].notna().all()


def test_last_position_terms_split_the_residual_stream(tiny_cfg):
    model = sharp_model(tiny_cfg)
    seqs = torch.randint(0, tiny_cfg.d_vocab, (5, 11))
    seqs[1:, :-3] = seqs[0, :-3]  # sequences sharing most tokens share (token, position) keys
    direct, heads = last_position_terms(model, seqs)
    _, cache = model.run_with_cache(seqs)
    torch.testing.assert_close(direct, cache["hook_embed"][:, -1])
    torch.testing.assert_close(heads, cache["blocks.0.attn.hook_result"][:, -1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one-layer"):
        last_position_terms(sharp_model(tiny_cfg, n_layers=2), seqs)
