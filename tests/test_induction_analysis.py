"""Induction analysis (copying, positivity, ablation, eigenvalues, snapshots) and virtual heads, against
dense or looped versions and hand-built heads."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from circuits.batches import iter_eval_batches
from circuits.checkpoint import save_model
from circuits.circuits import bilinear_scores
from circuits.composition import composition_baseline, composition_scores, k_composition_circuit
from circuits.config import ModelConfig
from circuits.induction import per_token_loss, prefix_matching_scores, previous_token_scores
from circuits.induction_analysis import (AblatedModel, ablated_run_with_cache, ablation_prefix_matching,
                                         checkpoint_progress, copying_scores, induction_eigenvalues,
                                         induction_positivity, middling_tokens, phase_change_scores,
                                         previous_token_head, run_with_ablation)
from circuits.model import AttnOnlyTransformer
from circuits.runs import snapshot_paths
from circuits.term_importance import virtual_head_effects, virtual_head_terms
from circuits.virtual_heads import (strongest_virtual_heads, virtual_head_table, virtual_ov_summary,
                                    virtual_pattern)


def make_model(cfg, n_layers=2, init_std=0.15, seed=0):
    model = AttnOnlyTransformer(dataclasses.replace(cfg, n_layers=n_layers, init_std=init_std))
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model.requires_grad_(False)


def tokens_for(cfg, batch=3, n=None, seed=0):
    return torch.randint(0, cfg.d_vocab, (batch, n or cfg.n_ctx), generator=torch.Generator().manual_seed(seed))


def dense_positivity(M):
    lam = torch.linalg.eigvals(M.double())
    return float(lam.sum().real / lam.abs().sum())


# ---- copying ----------------------------------------------------------------------------------
def test_copying_score_is_the_looped_definition(tiny_cfg):
    model = make_model(tiny_cfg)
    toks = torch.tensor([3, 7, 11, 20, 42, 60])
    got = copying_scores(model, toks)
    assert got.shape == (2, 4)
    for l in range(2):
        attn = model.blocks[l].attn
        for h in range(4):
            ratios = []
            for t in toks.tolist():
                logits = model.embed.W_E[t] @ attn.W_V[h] @ attn.W_O[h] @ model.unembed.W_U  # our row convention
                boost = torch.relu(logits - logits.mean())
                ratios.append(float(boost[t] / boost.sum()))
            assert float(got[l, h]) == pytest.approx(2 * np.mean(ratios) - 1, abs=1e-5)
    torch.testing.assert_close(copying_scores(model, toks, layer=1), got[1])


def test_copying_score_of_hand_built_heads():
    """W_U = W_Eᵀ with orthonormal embeddings: OV = I copies (+1), OV = -I anti-copies (-1)."""
    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=16, n_ctx=8, d_vocab=12)
    model = AttnOnlyTransformer(cfg).requires_grad_(False)
    Q, _ = torch.linalg.qr(torch.randn(16, 12))
    attn = model.blocks[0].attn
    model.embed.W_E.copy_(Q.T)
    model.unembed.W_U.copy_(Q)
    attn.W_V.copy_(torch.eye(16).expand(2, 16, 16))
    attn.W_O.copy_(torch.stack([torch.eye(16), -torch.eye(16)]))
    got = copying_scores(model, torch.arange(12), layer=0)
    torch.testing.assert_close(got, torch.tensor([1.0, -1.0]))


def test_middling_tokens_are_distinct_and_mid_frequency():
    counts = np.arange(1000)[::-1] * 10 + 10  # token 0 the commonest
    toks = middling_tokens(counts, n=50)
    assert len(set(toks.tolist())) == 50
    assert toks.min() >= 10 and toks.max() < 500  # commonest 1 % and rarest half excluded


# ---- previous-token head, positivity, eigenvalues ------------------------------------------------
def previous_token_model(prev: int = 2) -> AttnOnlyTransformer:
    """Head 0.``prev`` attends to the previous position: positions in dims 0-15 (one-hot), tokens above."""
    cfg = ModelConfig(n_layers=2, d_model=48, n_heads=4, d_head=16, n_ctx=16, d_vocab=30, init_std=0.05)
    model = AttnOnlyTransformer(cfg)
    model.reset_parameters(torch.Generator().manual_seed(1))
    model.requires_grad_(False)
    with torch.no_grad():
        model.pos_embed.W_pos.zero_()
        model.pos_embed.W_pos[:, :16] = torch.eye(16)
        model.embed.W_E[:, :16] = 0
        a0 = model.blocks[0].attn
        a0.W_Q[prev] = 0
        a0.W_K[prev] = 0
        a0.W_Q[prev, :16] = 40 * torch.eye(16)
        a0.W_K[prev, :16] = torch.eye(16).roll(1, dims=1)  # key of position j lands on query j + 1
    return model


def test_previous_token_head_is_found_not_hard_coded():
    for prev in (1, 3):
        model = previous_token_model(prev)
        text = tokens_for(model.cfg, batch=4)
        assert float(previous_token_scores(model, text)[0, prev]) > 0.99
        assert previous_token_head(model, text) == (0, prev)


def test_k_composition_circuit_orientation_is_dst_by_src(tiny_cfg):
    """Entry [dst, src]: the layer-1 score of a query token dst against a key position where the
    layer-0 head wrote W_OV W_E[src] (row vectors: W_E[src] W_V W_O)."""
    model = make_model(tiny_cfg)
    a0 = model.blocks[0].attn
    dst, src = torch.tensor([1, 5, 9]), torch.tensor([2, 4, 8, 30])
    for h1, h2 in [(0, 0), (2, 3)]:
        key_in = model.embed.W_E[src] @ a0.W_V[h1] @ a0.W_O[h1]
        want = bilinear_scores(model, 1, model.embed.W_E[dst], key_in)[h2]  # scaled by 1/sqrt(d_head)
        got = k_composition_circuit(model, 0, h1, 1, h2).block(dst, src) / math.sqrt(tiny_cfg.d_head)
        torch.testing.assert_close(got, want)


def test_induction_positivity_and_eigenvalues_match_dense(tiny_cfg):
    model = make_model(tiny_cfg, init_std=0.1)
    prev = (0, 2)
    pos = induction_positivity(model, prev)
    eig = induction_eigenvalues(model, prev)
    assert eig["ov"].shape == eig["qk"].shape == (4, tiny_cfg.d_head) and np.iscomplexobj(eig["qk"])
    E, U = model.embed.W_E, model.unembed.W_U
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    for h in range(4):
        ov_dense = (E @ a1.W_V[h] @ a1.W_O[h] @ U).T  # paper's W_U W_OV W_E [out, src]
        kc_dense = E @ a1.W_Q[h] @ a1.W_K[h].T @ (E @ a0.W_V[2] @ a0.W_O[2]).T  # [dst, src]
        assert float(pos["ov"][h]) == pytest.approx(dense_positivity(ov_dense), abs=1e-4)
        assert float(pos["qk"][h]) == pytest.approx(dense_positivity(kc_dense), abs=1e-4)
        lam = torch.linalg.eigvals(kc_dense.double())
        top = lam[lam.abs().argsort(descending=True)][: tiny_cfg.d_head]
        assert np.sort_complex(top.numpy()) == pytest.approx(np.sort_complex(eig["qk"][h]), abs=1e-5)
    with pytest.raises(ValueError, match="after layer 0"):
        induction_positivity(model, prev, layer=0)


# ---- ablation ---------------------------------------------------------------------------------
def test_ablating_nothing_is_the_model(tiny_cfg):
    model, toks = make_model(tiny_cfg), tokens_for(tiny_cfg)
    logits, cache = model.run_with_cache(toks)
    got_logits, got_cache = ablated_run_with_cache(model, toks)
    torch.testing.assert_close(got_logits, logits, rtol=0, atol=0)
    for k, v in cache.items():
        torch.testing.assert_close(got_cache[k], v, rtol=0, atol=0)
    _, pats = run_with_ablation(model, toks, set())
    assert pats.shape == (2, 3, 4, tiny_cfg.n_ctx, tiny_cfg.n_ctx)


def test_zero_ablation_is_zeroing_w_o(tiny_cfg):
    model, toks = make_model(tiny_cfg), tokens_for(tiny_cfg)
    zeroed = make_model(tiny_cfg)
    zeroed.blocks[0].attn.W_O[1] = 0
    logits, pats = run_with_ablation(model, toks, {(0, 1)})
    want_logits, want_cache = zeroed.run_with_cache(toks)
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(pats[1], want_cache["blocks.1.attn.pattern"])
    assert not torch.allclose(pats[1], model.run_with_cache(toks)[1]["blocks.1.attn.pattern"])  # layer 1 moved
    torch.testing.assert_close(prefix_matching_scores(AblatedModel(model, {(0, 1)}), toks),
                               prefix_matching_scores(zeroed, toks))
    torch.testing.assert_close(per_token_loss(AblatedModel(model, [(0, 1)]), tokens_for(tiny_cfg, n=25)),
                               per_token_loss(zeroed, tokens_for(tiny_cfg, n=25)))
    table = ablation_prefix_matching(model, toks)
    assert table.shape == (4, 2, 4)
    torch.testing.assert_close(table[1], prefix_matching_scores(zeroed, toks))
    with pytest.raises(ValueError, match="does not exist"):
        run_with_ablation(model, toks, {(2, 0)})


def test_mean_ablation_writes_the_mean_output(tiny_cfg):
    model, toks = make_model(tiny_cfg), tokens_for(tiny_cfg)
    ref = tokens_for(tiny_cfg, batch=5, seed=3)
    _, cache = ablated_run_with_cache(model, toks, {(1, 2)}, mode="mean", mean_tokens=ref)
    mean = model.run_with_cache(ref)[1]["blocks.1.attn.head_out"][:, :, 2].mean(dim=(0, 1))
    torch.testing.assert_close(cache["blocks.1.attn.head_out"][:, :, 2], mean.expand(3, tiny_cfg.n_ctx, -1))


# ---- snapshots --------------------------------------------------------------------------------
def test_phase_change_scores_read_snapshots(tiny_cfg, tmp_path):
    val = np.random.default_rng(0).integers(0, tiny_cfg.d_vocab, 2000).astype(np.uint16)
    repeated = tokens_for(tiny_cfg, batch=2, n=21)
    models = []
    for step in (5, 50):
        model = make_model(tiny_cfg, seed=step)
        save_model(model, tmp_path / "snapshots" / f"step_{step:06d}.safetensors", torch.bfloat16,
                   extra={"step": str(step), "tokens": str(step * 8 * tiny_cfg.n_ctx)})
        models.append(model)
    rows = phase_change_scores(snapshot_paths(tmp_path), val, repeated, n_windows=6, batch_size=3)
    assert [r["step"] for r in rows] == [5, 50] and rows[1]["tokens"] == 50 * 8 * 24
    assert checkpoint_progress(snapshot_paths(tmp_path)[0]) == (5, 5 * 8 * 24)
    bf16 = make_model(tiny_cfg, seed=50)
    for p in bf16.parameters():
        p.copy_(p.bfloat16().float())  # snapshots are bf16
    assert np.array(rows[1]["prefix_matching"]) == pytest.approx(prefix_matching_scores(bf16, repeated).numpy(), abs=1e-6)
    assert rows[1]["prev_token_best_l0"] == pytest.approx(max(rows[1]["prev_token"][0]))
    assert np.isfinite(rows[0]["icl_score"]) and rows[0]["val_loss"] > 0
    windows = torch.cat(list(iter_eval_batches(val, 3, tiny_cfg.n_ctx, 2)))
    assert rows[1]["val_loss"] == pytest.approx(float(per_token_loss(bf16, windows).mean()), abs=1e-5)
    assert np.array(rows[1]["prev_token"]) == pytest.approx(previous_token_scores(bf16, windows[:3, :-1]).numpy(),
                                                            abs=1e-6)


# ---- virtual heads ----------------------------------------------------------------------------
def test_virtual_pattern_times_virtual_ov_is_the_virtual_term(tiny_cfg):
    model, toks = make_model(tiny_cfg), tokens_for(tiny_cfg)
    _, cache = model.run_with_cache(toks)
    terms = virtual_head_terms(model, toks, cache)
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    for h1, h2 in [(0, 1), (3, 3)]:
        A = virtual_pattern(cache, (0, h1), (1, h2))
        torch.testing.assert_close(A.sum(-1), torch.ones(3, tiny_cfg.n_ctx))
        assert torch.all(A.triu(1) == 0)
        want = A @ (model.embed.W_E[toks] @ a0.W_V[h1] @ a0.W_O[h1] @ a1.W_V[h2] @ a1.W_O[h2])
        torch.testing.assert_close(terms[h1, h2], want, atol=1e-6, rtol=1e-5)


def test_virtual_head_table_and_ov_summary(tiny_cfg):
    model = make_model(tiny_cfg)
    windows = tokens_for(tiny_cfg, n=25)
    table = virtual_head_table(model, windows, baseline=0.1)
    assert len(table) == 16 and table[0]["loss"] >= table[-1]["loss"]
    v, eff = composition_scores(model, "V"), virtual_head_effects(model, windows)
    for r in table:
        (_, h1), (_, h2) = r["head1"], r["head2"]
        assert r["v_score"] == pytest.approx(float(v[h1, h2]))
        assert r["v_excess"] == pytest.approx(float(v[h1, h2]) - 0.1)
        assert r["loss"] == pytest.approx(float(eff["loss"][h1, h2]))
    top = strongest_virtual_heads(table, "v_excess", top=3)
    assert [r["v_excess"] for r in top] == sorted((r["v_excess"] for r in table), reverse=True)[:3]
    s = virtual_ov_summary(model, (0, 1), (1, 2), k=5)
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    dense = (model.embed.W_E @ a0.W_V[1] @ a0.W_O[1] @ a1.W_V[2] @ a1.W_O[2] @ model.unembed.W_U).T  # [out, src]
    assert s["eigen_positivity"] == pytest.approx(dense_positivity(dense), abs=1e-4)
    vals, idx = dense.flatten().topk(5)
    assert s["top_values"] == pytest.approx(vals.numpy(), rel=1e-5)
    assert list(zip(s["top_out"], s["top_src"])) == [(int(i) // 61, int(i) % 61) for i in idx]
    assert composition_baseline(32, 8, n_samples=20) > 0


def test_induction_targets_stay_on_the_tokens_device():
    # regression: the causal mask was built on the CPU, so evaluation crashed on CUDA at the first eval;
    # the meta device catches any such mix-up without a GPU
    from circuits.induction import induction_targets
    assert induction_targets(torch.zeros(2, 5, dtype=torch.long, device="meta")).device.type == "meta"
