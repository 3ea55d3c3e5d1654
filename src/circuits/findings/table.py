"""Every reproduced claim in one table: the paper's value, ours, and where it is computed.

``compute_findings`` recomputes each number with the same functions the chapters call (it does
not read numbers the chapters printed), so the table is always in step with the models.
"""

from __future__ import annotations

import numpy as np
import torch

from circuits.analysis.ablation import ablation_prefix_matching
from circuits.analysis.bigrams import corpus_bigram_counts, corpus_bigram_logprobs, model_bigram_logprobs, rank_correlation
from circuits.analysis.circuits import eigen_positivity, ov_circuit
from circuits.analysis.composition import composition_baseline, composition_scores
from circuits.analysis.induction import induction_positivity, previous_token_head
from circuits.analysis.term_importance import term_importance
from circuits.config import Preset
from circuits.data.batches import iter_eval_batches
from circuits.data.stats import token_counts
from circuits.data.tokens import preset_tokens
from circuits.metrics.losses import per_token_loss, split_loss
from circuits.metrics.olsson import (ICL_WINDOWS, in_context_learning_score, prefix_matching_scores,
                                     previous_token_scores, repeated_random_tokens)
from circuits.model.published import load_preset_model

INDUCTION_THRESHOLD = 0.4  # prefix-matching score that makes a head an induction head
PREVIOUS_TOKEN_THRESHOLD = 0.5  # previous-token score that makes a head a previous-token head
COPYING_THRESHOLD = 0.5  # OV eigen-positivity that makes a head a copying head


def row(claim: str, paper: str, ours: str, where: str) -> dict:
    return {"claim": claim, "paper": paper, "ours": ours, "computed in": where}


def loss_findings(models: dict, val: np.ndarray) -> list[dict]:
    held = {n: split_loss(m, val) for n, m in models.items()}
    ordered = held[2] < held[1] < held[0]
    return [row("More layers, lower loss (2L < 1L < 0L)", "yes",
                f"{'yes' if ordered else 'no'}: {held[2]:.3f} < {held[1]:.3f} < {held[0]:.3f} nats",
                "Training chapter, held-out loss (evaluation.split_loss)")]


def zero_layer_findings(model, train: np.ndarray, d_vocab: int) -> list[dict]:
    counts = token_counts(train, d_vocab)
    sources = np.argsort(-counts, kind="stable")[:500]
    pairs = corpus_bigram_counts(train, sources, d_vocab)
    corpus_lp, model_lp = corpus_bigram_logprobs(pairs), model_bigram_logprobs(model, sources).numpy()
    r, c = np.nonzero(pairs >= 20)
    rho = rank_correlation(model_lp[r, c], corpus_lp[r, c])
    return [row("A zero-layer model is a bigram table W_U W_E", "approximates bigram log-likelihoods",
                f"Spearman ρ = {rho:.3f} with corpus bigrams ({len(r):,} frequent pairs)",
                "Zero-layer chapter (bigrams.model_bigram_logprobs)")]


def one_layer_findings(model, text: torch.Tensor) -> list[dict]:
    positivity = eigen_positivity(ov_circuit(model, 0))
    prev = previous_token_scores(model, text)[0]
    n = model.cfg.n_heads
    return [row("Most one-layer heads copy (OV eigenvalues mostly positive)", "10 of 12 heads",
                f"{int((positivity > COPYING_THRESHOLD).sum())} of {n} heads with Σλ/Σ|λ| > {COPYING_THRESHOLD}",
                "One-layer chapter, copying (circuits.eigen_positivity)"),
            row("Some heads are positional (attend to the previous token)", "a few heads",
                f"best previous-token score {float(prev.max()):.2f}; "
                f"{int((prev >= PREVIOUS_TOKEN_THRESHOLD).sum())} of {n} heads ≥ {PREVIOUS_TOKEN_THRESHOLD}",
                "One-layer chapter, positional heads (induction.previous_token_scores)")]


def two_layer_findings(model, text: torch.Tensor, repeated: torch.Tensor, windows: torch.Tensor) -> list[dict]:
    cfg = model.cfg
    base = composition_baseline(cfg.d_model, cfg.d_head)
    comp = {k: composition_scores(model, k) - base for k in "QKV"}
    prev_head = previous_token_head(model, text)
    prev_score = float(previous_token_scores(model, text)[prev_head])
    prefix = prefix_matching_scores(model, repeated)[-1]
    induction = prefix >= INDUCTION_THRESHOLD
    ablated = ablation_prefix_matching(model, repeated)[prev_head[1], -1]
    pos = induction_positivity(model, prev_head)
    corner = ((pos["qk"] > 0) & (pos["ov"] > 0))[induction]
    ti = term_importance(model, windows)
    return [
        row("Composition is essentially K-composition with a previous-token head",
            "only K-composition stands out",
            f"max above baseline ({base:.3f}): K {float(comp['K'].max()):+.3f}, Q {float(comp['Q'].max()):+.3f}, "
            f"V {float(comp['V'].max()):+.3f}; strongest K pair reads head 0.{int(comp['K'].max(1).values.argmax())}",
            "Two-layer chapter, composition (composition.composition_scores)"),
        row("One layer-0 head is a previous-token head", "one (and one over the last few tokens)",
            f"head 0.{prev_head[1]}, previous-token score {prev_score:.2f}",
            "Two-layer chapter (induction_analysis.previous_token_head)"),
        row("Layer-1 heads are induction heads", "about 6 of 12 (video); ARENA's 1.4: 0.68",
            f"{int(induction.sum())} of {cfg.n_heads} with prefix matching ≥ {INDUCTION_THRESHOLD}; "
            f"best {float(prefix.max()):.2f}", "Two-layer chapter (induction.prefix_matching_scores)"),
        row("Ablating the previous-token head removes induction", "ARENA: 0.68 → ≈ 0",
            f"best layer-1 prefix matching {float(prefix.max()):.2f} → {float(ablated.max()):.2f}",
            "Two-layer chapter, ablation (induction_analysis.ablation_prefix_matching)"),
        row("Induction heads sit in the (+,+) corner of QK/OV positivity", "all of them",
            f"{int(corner.sum())} of {int(induction.sum())} induction heads" if induction.any()
            else "no induction heads to place", "Two-layer chapter (induction_analysis.induction_positivity)"),
        row("Term importance: direct path / single heads / virtual heads", "≈ 1.8 / 5.2 / 0.3 nats (video)",
            " / ".join(f"{m:.2f}" for m in ti.marginal) + f" nats (uniform {ti.uniform:.2f})",
            "Two-layer chapter, term importance (term_importance.term_importance)"),
    ]


def icl_findings(models: dict, val: np.ndarray, n_ctx: int) -> list[dict]:
    batches = list(iter_eval_batches(val, 32, n_ctx, ICL_WINDOWS // 32))
    icl = {n: in_context_learning_score(torch.cat([per_token_loss(models[n], b) for b in batches]))
           for n in (1, 2)}
    return [row("In-context learning: late tokens predicted better than early ones, only with ≥ 2 layers",
                "ICL score ≈ -0.4 nats after the phase change, > -0.15 before; 1L: none",
                f"2L {icl[2]:+.3f}, 1L {icl[1]:+.3f} nats",
                "Training chapter and two-layer chapter (induction.in_context_learning_score)")]


@torch.no_grad()
def compute_findings(preset: Preset) -> list[dict]:
    """All rows of the findings table for ``preset``'s models."""
    models = {n: load_preset_model(n, preset) for n in (0, 1, 2)}
    tokens = preset_tokens(preset)
    val = np.asarray(tokens["validation"])
    text = next(iter(iter_eval_batches(val, 8, preset.n_ctx, 1)))[:, :-1]
    counts = token_counts(tokens["train"], preset.d_vocab)
    repeated = repeated_random_tokens(counts, n_ctx=preset.n_ctx)
    windows = torch.cat(list(iter_eval_batches(val, 8, preset.n_ctx, 2)))
    return (loss_findings(models, val) + zero_layer_findings(models[0], tokens["train"], preset.d_vocab)
            + one_layer_findings(models[1], text) + two_layer_findings(models[2], text, repeated, windows)
            + icl_findings(models, val, preset.n_ctx))
