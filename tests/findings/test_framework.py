"""The framework chapter's library functions (analysis.basis, analysis.qk_paths) against dense or looped
versions on tiny random models, and its findings rows on a stand-in book."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from circuits.analysis.basis import random_orthogonal, rotate_residual
from circuits.analysis.circuits import w_ov, w_qk
from circuits.analysis.qk_paths import (COMPOSITION_GROUPS, bilinear_row_centred_rms, composition_groups,
                                        grouped_queries_keys, piece_queries_keys, qk_score_paths, residual_pieces,
                                        row_centred_rms, term_rms)
from circuits.findings import framework
from circuits.findings.table import check_row
from tests.analysis.models import make_model, tokens_for


def test_random_orthogonal_is_orthogonal_and_seeded():
    R = random_orthogonal(12, seed=3)
    torch.testing.assert_close(R @ R.T, torch.eye(12), atol=1e-6, rtol=0)
    torch.testing.assert_close(R, random_orthogonal(12, seed=3))
    assert not torch.allclose(R, random_orthogonal(12, seed=4))


def test_rotated_model_computes_the_same_function_in_a_rotated_basis(tiny_cfg):
    model = make_model(tiny_cfg, n_layers=2)
    R = random_orthogonal(tiny_cfg.d_model, seed=1)
    rotated = rotate_residual(model, R)
    tokens = tokens_for(tiny_cfg)
    logits, cache = model.run_with_cache(tokens)
    logits_r, cache_r = rotated.run_with_cache(tokens)
    torch.testing.assert_close(logits_r, logits, atol=1e-4, rtol=1e-4)
    for l in range(2):  # same patterns, residual stream rotated: x -> x R
        torch.testing.assert_close(cache_r[f"blocks.{l}.attn.hook_pattern"], cache[f"blocks.{l}.attn.hook_pattern"],
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(cache_r[f"blocks.{l}.hook_resid_post"], cache[f"blocks.{l}.hook_resid_post"] @ R,
                                   atol=1e-4, rtol=1e-4)
    assert not torch.allclose(cache_r["hook_resid_final"], cache["hook_resid_final"], atol=1e-2)
    relu = [("hook_resid_final", lambda x, name: torch.relu(x))]  # a per-coordinate nonlinearity is not invariant
    assert (rotated.run_with_hooks(tokens, relu) - model.run_with_hooks(tokens, relu)).abs().max() > 1e-2
    torch.testing.assert_close(model(tokens), logits)  # the original is untouched


def test_rotate_residual_rejects_a_matrix_that_is_not_orthogonal(tiny_cfg):
    model = make_model(tiny_cfg, n_layers=1)
    with pytest.raises(ValueError):
        rotate_residual(model, 2 * torch.eye(tiny_cfg.d_model))
    with pytest.raises(ValueError):
        rotate_residual(model, torch.eye(tiny_cfg.d_model + 1))


def test_residual_pieces_sum_to_the_stream_each_layer_reads(tiny_cfg):
    model = make_model(tiny_cfg, n_layers=3)
    _, cache = model.run_with_cache(tokens_for(tiny_cfg, batch=2))
    for layer in range(3):
        pieces, names = residual_pieces(model, cache, layer)
        assert names[:2] == ["position", "token"] and len(names) == 2 + layer * tiny_cfg.n_heads
        torch.testing.assert_close(pieces[1:].sum(0), cache[f"blocks.{layer}.hook_resid_pre"], atol=1e-5, rtol=1e-5)
    assert names[-1] == f"1.{tiny_cfg.n_heads - 1}"


@pytest.mark.parametrize("layer", [1, 2])
def test_qk_score_paths_sum_to_the_model_scores(tiny_cfg, layer):
    model = make_model(tiny_cfg, n_layers=3)
    _, cache = model.run_with_cache(tokens_for(tiny_cfg, batch=2))
    for head in range(tiny_cfg.n_heads):
        terms, names = qk_score_paths(model, cache, layer, head)
        n = 2 + layer * tiny_cfg.n_heads
        assert terms.shape == (n, n, 2, tiny_cfg.n_ctx, tiny_cfg.n_ctx)
        scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][:, head]
        causal = scores.isfinite()
        torch.testing.assert_close(terms.sum((0, 1))[causal], scores[causal], atol=1e-4, rtol=1e-4)
        groups = composition_groups(terms, names)
        assert groups.shape == (len(COMPOSITION_GROUPS), 2, tiny_cfg.n_ctx, tiny_cfg.n_ctx)
        torch.testing.assert_close(groups.sum(0), terms.sum((0, 1)), atol=1e-4, rtol=1e-4)


def test_k_composition_term_is_the_papers_formula_looped(tiny_cfg):
    """Term (token, 0.h1) of head 1.h2 = Σ_s' A^{h1}[s, s'] e_tᵀ W_QK^{h2} W_OV^{h1} e_s' / √d_head."""
    model = make_model(tiny_cfg, n_layers=2)
    tokens = tokens_for(tiny_cfg, batch=1, n=7)
    _, cache = model.run_with_cache(tokens)
    h1, h2 = 2, 1
    terms, names = qk_score_paths(model, cache, 1, h2)
    W_E = model.embed.W_E.T  # paper's W_E [d_model, d_vocab]
    W_QK, W_OV = w_qk(model, 1)[h2].dense(), w_ov(model, 0)[h1].dense()
    A = cache["blocks.0.attn.hook_pattern"][0, h1]
    t = tokens[0]
    for dst in range(7):
        for src in range(7):
            value = sum(A[src, s2] * W_E[:, t[dst]] @ W_QK @ W_OV @ W_E[:, t[s2]] for s2 in range(7))
            got = terms[names.index("token"), names.index(f"0.{h1}"), 0, dst, src]
            torch.testing.assert_close(got, value / math.sqrt(tiny_cfg.d_head), atol=1e-4, rtol=1e-4)
    groups = composition_groups(terms, names)  # the K-composition group holds exactly the (direct, 0.h) terms
    direct, written = [0, 1], list(range(2, len(names)))
    torch.testing.assert_close(groups[2], terms[direct][:, written].sum((0, 1)))


def test_row_centred_rms_matches_a_loop():
    scores = torch.randn(3, 5, 5, generator=torch.Generator().manual_seed(0))
    scores += 7.0 * torch.randn(3, 5, 1, generator=torch.Generator().manual_seed(1))  # per-row shifts: ignored
    out = row_centred_rms(scores)
    for b in range(3):
        squares = []
        for t in range(5):
            row = scores[b, t, : t + 1]
            squares += ((row - row.mean()) ** 2).tolist()
        assert abs(float(out[b]) - math.sqrt(sum(squares) / len(squares))) < 1e-5


def test_bilinear_row_centred_rms_is_the_rms_of_the_formed_products():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(3, 2, 9, 4, generator=g), torch.randn(5, 2, 9, 4, generator=g) + 3.0
    dense = row_centred_rms(torch.einsum("ibte,jbse->ijbts", q, k))  # [3, 5, 2]
    torch.testing.assert_close(bilinear_row_centred_rms(q, k), dense, atol=1e-5, rtol=1e-5)


def test_term_rms_matches_the_formed_terms_and_groups(tiny_cfg):
    model = make_model(tiny_cfg, n_layers=2)
    _, cache = model.run_with_cache(tokens_for(tiny_cfg, batch=2))
    for head in range(tiny_cfg.n_heads):
        terms, names = qk_score_paths(model, cache, 1, head)
        rms, groups, names2 = term_rms(model, cache, 1, head)
        assert names2 == names
        torch.testing.assert_close(rms, row_centred_rms(terms), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(groups, row_centred_rms(composition_groups(terms, names)), atol=1e-5, rtol=1e-4)
        q, k, _ = piece_queries_keys(model, cache, 1, head)
        qg, kg = grouped_queries_keys(q, k, names)
        formed = torch.stack([qg[a] @ kg[b].mT for a, b in ((0, 0), (1, 0), (0, 1), (1, 1))])
        torch.testing.assert_close(formed, composition_groups(terms, names), atol=1e-5, rtol=1e-4)


class StandInBook:
    """What ``framework.results`` needs of a ``Book``, with tiny random models."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.preset = SimpleNamespace(name="test", d_vocab=cfg.d_vocab, n_ctx=cfg.n_ctx)
        self._models = {n: make_model(cfg, n_layers=n, seed=n) for n in (0, 1, 2)}

    def model(self, n):
        return self._models[n]

    def windows(self, n):
        return tokens_for(self.cfg, batch=n, n=self.cfg.n_ctx + 1)

    def decode(self, token):
        return "abcdefghijklmnopqrstuvwxyz"[int(token) % 26] * (1 + int(token) % 3)

    def repeated(self):
        half = tokens_for(self.cfg, batch=3, n=self.cfg.n_ctx // 2, seed=5)
        return torch.cat([half, half], dim=1)

    def cache(self, name, layers, compute):
        return compute()


def test_framework_findings_hold_on_a_random_model(tiny_cfg):
    book = StandInBook(tiny_cfg)
    r = framework.results(book)
    assert r["qk_group_rms"].shape == (tiny_cfg.n_heads, 4)
    assert r["qk_term_rms"].shape == (tiny_cfg.n_heads, 2 + tiny_cfg.n_heads, 2 + tiny_cfg.n_heads)
    assert len(r["virtual"]["head_to_embedding_rms"]) == tiny_cfg.n_heads
    assert all(0 <= h < tiny_cfg.n_heads for h in [*r["induction_heads"], *r["previous_token_heads"]])
    assert 0 <= r["k_head"] < tiny_cfg.n_heads and 0 <= r["k_writer"] < tiny_cfg.n_heads
    assert len(r["qk_head_diff"]) == len(r["qk_head_scale"]) == tiny_cfg.n_heads
    assert r["qk_diff"] == max(r["qk_head_diff"]) and framework.qk_exact(r)
    ex = r["example"]  # random windows hold no repeated phrase: Olsson's repeated tokens do
    assert ex["text"] == "repeated random tokens"
    seq, i, k = ex["tokens"], ex["dst"], ex["earlier"]
    assert seq[i - 2:i + 2] == seq[k - 2:k + 2] and i - k >= framework.EXAMPLE_GAP
    rows = framework.findings_rows(book)
    assert len(rows) == 5
    for row in rows:
        check_row(row)
        assert row["verdict"] == "reproduced", row
        assert row["section"].startswith("01_framework#framework-")
        assert "_{" not in row["claim"] + row["ours"]  # words, not TeX


def test_find_repeat_takes_the_first_phrase_that_repeats():
    is_word = lambda t: t >= 10  # noqa: E731
    #              0   1   2   3   4   5   6   7   8   9  10  11  12  13  14  15
    row = [1, 2, 10, 3, 4, 5, 6, 7, 8, 9, 1, 2, 10, 3, 7, 7]
    assert framework.find_repeat(torch.tensor([row]), is_word, gap=5) == (0, 12, 2)
    assert framework.find_repeat(torch.tensor([row]), is_word, gap=11) is None  # too close
    assert framework.find_repeat(torch.tensor([row]), lambda t: False, gap=5) is None  # not a word
    two = [[0] * 16, row]
    assert framework.find_repeat(torch.tensor(two), is_word, gap=5) == (1, 12, 2)
    latest = [1, 2, 10, 3, 0, 1, 2, 10, 3, 0, 5, 1, 2, 10, 3]  # the latest earlier copy is the one returned
    assert framework.find_repeat(torch.tensor([latest]), is_word, gap=5) == (0, 7, 2)
    assert framework.find_repeat(torch.tensor([latest[:7] + latest[11:]]), is_word, gap=5) == (0, 9, 2)


def test_k_composition_head_and_writer():
    groups = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 5.0, 5.0]])
    assert framework.k_composition_head(groups) == 1  # share 0.75 against 0.5
    pieces = ["position", "token", "0.0", "0.1", "0.2"]
    rms = torch.zeros(3, 5, 5)
    rms[1, 1, 3] = 2.0  # head 1.1's (token, 0.1) term
    rms[1, 2, 4] = 9.0  # a Q-composition term does not count
    assert framework.k_composition_writer(rms, pieces, 1) == 1


def test_exactness_rule():
    assert framework.exact(1e-6, 10.0) and not framework.exact(1e-2, 10.0)


def test_every_section_label_is_in_the_chapter(tiny_cfg):
    notebook = Path(__file__).parents[2] / "book" / "01_framework.ipynb"
    text = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    labels = set(re.findall(r"^\(([\w-]+)\)=$", text, re.M))
    for row in framework.findings_rows(StandInBook(tiny_cfg)):
        assert row["section"] == f"01_framework#{row['section'].split('#')[1]}"
        assert row["section"].split("#")[1] in labels
