"""Induction heads in a two-layer model: copying, QK/OV positivity, ablation, eigenvalues, phase change.

Paper "Two-layer transformers" (Elhage et al. 2021): an induction head of the last layer
K-composes with a layer-0 previous-token head (its QK circuit through that head,
``W_Eᵀ W_QK^{h2} W_OV^{h_prev} W_E``, has mostly positive eigenvalues: it attends to the token after
an earlier copy of the present one) and copies (its OV circuit ``W_U W_OV^{h2} W_E`` has mostly
positive eigenvalues). Olsson et al. (2022) add per-head scores (copying, prefix matching, previous
token), ablations, and scores tracked over training snapshots. No head index is ever hard-coded:
the previous-token head is the layer-0 head with the highest previous-token score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .batches import iter_eval_batches
from .checkpoint import load_model, read_metadata
from .circuits import eigen_positivity, ov_circuit
from .composition import k_composition_circuit
from .induction import (in_context_learning_score, per_token_loss, prefix_matching_scores, previous_token_scores,
                        repeated_random_tokens)
from .model import AttnOnlyTransformer

Head = tuple[int, int]  # (layer, head)


# ---- copying (Olsson et al.) ------------------------------------------------------------------
def middling_tokens(token_counts: np.ndarray, n: int = 500, seed: int = 0) -> torch.Tensor:
    """``n`` distinct tokens of middling frequency [n], from the pool of ``repeated_random_tokens``
    (the commonest 1 % and the rarest half excluded), so the copying score sees the same tokens as
    the prefix-matching score."""
    sample = repeated_random_tokens(token_counts, n_samples=1, seq_len=n, repeats=1, bos=-1, seed=seed)
    return sample[0, 1:]  # drop the start token


@torch.no_grad()
def copying_scores(model: AttnOnlyTransformer, tokens: torch.Tensor, layer: int | None = None) -> torch.Tensor:
    """Olsson et al.'s copying score of every head: the head's direct OV effect on the logits,
    mean-subtracted then ReLU'd; the share of the boost that goes to the attended token, in [-1, 1].

    For each source token t in ``tokens`` [n] and head h (our row vectors):
        ℓ    = W_E[t] W_V^h W_O^h W_U                 (= column t of the OV circuit W_U W_OV^h W_E)
        b    = ReLU(ℓ - mean_v ℓ_v)                   (the tokens the head boosts, by how much)
        r_t  = b_t / sum_v b_v                        (0 when nothing is boosted)
        score = 2 · mean_t r_t - 1
    +1: the head boosts only the token it attends to (pure copying); -1: never that token. A head
    that boosts ``m`` random tokens scores about 2/m - 1, i.e. close to -1, not 0. Scale: if the other
    logits spread like N(0, σ²), the ReLU'd total is about 0.4 d_vocab σ, so a head lifting its own
    token z σ above the mean gets r ≈ 2.5 z / d_vocab: on thousands of tokens every head short of a very sharp
    copier sits within a few hundredths of -1 (compare ``1 + score``, or ``eigen_positivity`` / ``copying_rates``).
    Olsson et al.'s own text was not at hand: this follows ``PAPER.md``'s summary literally.
    Returns [n_layers, n_heads], or [n_heads] for one ``layer``.
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    layers = range(model.cfg.n_layers) if layer is None else [layer]
    out = torch.empty(len(layers), model.cfg.n_heads)
    for i, l in enumerate(layers):
        ov = ov_circuit(model, l)  # [head, out, src]
        for h in range(model.cfg.n_heads):
            logits = ov[h].block(slice(None), tokens).T  # [n, d_vocab]: row i = effect of attending to tokens[i]
            boost = (logits - logits.mean(-1, keepdim=True)).relu()
            own = boost.gather(1, tokens[:, None])[:, 0]
            ratio = own / boost.sum(-1).clamp_min(torch.finfo(boost.dtype).tiny)
            out[i, h] = 2 * ratio.mean() - 1
    return out if layer is None else out[0]


# ---- the previous-token head and the induction circuit ----------------------------------------
def previous_token_head(model: AttnOnlyTransformer, text: torch.Tensor) -> Head:
    """The layer-0 head with the highest previous-token score ``mean_i A[i, i-1]`` on ``text`` [batch, pos]."""
    return 0, int(previous_token_scores(model, text)[0].argmax())


def last_layer(model: AttnOnlyTransformer, layer: int | None) -> int:
    layer = model.cfg.n_layers - 1 if layer is None else layer
    if not 1 <= layer < model.cfg.n_layers:
        raise ValueError(f"induction needs a layer after layer 0; got {layer} in a {model.cfg.n_layers}-layer model")
    return layer


@torch.no_grad()
def induction_positivity(model: AttnOnlyTransformer, prev_head: Head, layer: int | None = None) -> dict[str, torch.Tensor]:
    """Paper "Induction heads": eigen-positivity ``sum λ / sum |λ|`` of both circuits of every head
    of ``layer`` (default: the last), [n_heads] each:

        ``qk``: the K-composition circuit through ``prev_head``, ``W_Eᵀ W_QK^{h} W_OV^{h_prev} W_E``
        ``ov``: the full OV circuit ``W_U W_OV^{h} W_E``
    Induction heads sit near (+1, +1).
    """
    layer = last_layer(model, layer)
    qk = torch.stack([eigen_positivity(k_composition_circuit(model, *prev_head, layer, h))
                      for h in range(model.cfg.n_heads)])
    return {"qk": qk, "ov": eigen_positivity(ov_circuit(model, layer))}


@torch.no_grad()
def induction_eigenvalues(model: AttnOnlyTransformer, prev_head: Head, layer: int | None = None) -> dict[str, np.ndarray]:
    """Eigenvalues for complex-plane plots (paper "Induction heads"), complex numpy [n_heads, d_head]:

    ``ov``: of each head's OV circuit ``W_U W_OV^{h} W_E``; ``qk``: of its K-composition circuit
    ``W_Eᵀ W_QK^{h} W_OV^{h_prev} W_E`` through the previous-token head. Nonzero spectra only
    (from the d_head x d_head cyclic products); unscaled QK (no 1/sqrt(d_head)).
    """
    layer = last_layer(model, layer)
    qk = torch.stack([k_composition_circuit(model, *prev_head, layer, h).eigenvalues()
                      for h in range(model.cfg.n_heads)])
    return {"ov": ov_circuit(model, layer).eigenvalues().numpy(), "qk": qk.numpy()}


# ---- ablation ---------------------------------------------------------------------------------
def _check_heads(model: AttnOnlyTransformer, heads) -> set[Head]:
    heads = {(int(l), int(h)) for l, h in heads}
    for l, h in heads:
        if not (0 <= l < model.cfg.n_layers and 0 <= h < model.cfg.n_heads):
            raise ValueError(f"head ({l}, {h}) does not exist in a model of {model.cfg.n_layers} layers "
                             f"x {model.cfg.n_heads} heads")
    return heads


@torch.no_grad()
def ablated_run_with_cache(model: AttnOnlyTransformer, tokens: torch.Tensor, ablate=(), mode: str = "zero",
                           mean_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``model.run_with_cache`` with the outputs of the heads in ``ablate`` ({(layer, head), ...}) replaced.

    ``mode="zero"``: the head writes nothing (the same as zeroing its W_O). ``mode="mean"``: it writes
    its mean output over the batch and positions of ``mean_tokens`` (default ``tokens``) in the
    unablated model. Later layers see the changed residual stream, so their patterns change too.
    Same cache keys as ``run_with_cache``; ``head_out`` holds what each head actually wrote.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    tokens, ablate = model.check_tokens(tokens), _check_heads(model, ablate)
    if mode == "mean" and ablate:
        _, ref = model.run_with_cache(tokens if mean_tokens is None else mean_tokens)

    def edit(layer: int, out: torch.Tensor) -> torch.Tensor:
        for l, h in ablate:
            if l == layer:
                out[:, :, h] = 0 if mode == "zero" else ref[f"blocks.{l}.attn.head_out"][:, :, h].mean(dim=(0, 1))
        return out

    return model.run_with_cache(tokens, edit_head_out=edit)


def run_with_ablation(model: AttnOnlyTransformer, tokens: torch.Tensor, ablate=(), mode: str = "zero",
                      mean_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [batch, pos, d_vocab] and patterns [layer, batch, head, dst, src] with heads ablated
    (``ablated_run_with_cache``)."""
    logits, cache = ablated_run_with_cache(model, tokens, ablate, mode, mean_tokens)
    return logits, torch.stack([cache[f"blocks.{l}.attn.pattern"] for l in range(model.cfg.n_layers)])


class AblatedModel:
    """A model with heads ablated, answering ``run_with_cache`` and ``__call__`` like the model, so the
    scores of ``circuits.induction`` (prefix matching, previous token, per-token loss) apply unchanged."""

    def __init__(self, model: AttnOnlyTransformer, ablate=(), mode: str = "zero", mean_tokens=None):
        self.model, self.cfg = model, model.cfg
        self.ablate, self.mode, self.mean_tokens = _check_heads(model, ablate), mode, mean_tokens

    def run_with_cache(self, tokens):
        return ablated_run_with_cache(self.model, tokens, self.ablate, self.mode, self.mean_tokens)

    def __call__(self, tokens):
        return self.run_with_cache(tokens)[0]


@torch.no_grad()
def ablation_prefix_matching(model: AttnOnlyTransformer, repeated: torch.Tensor, layer: int = 0,
                             mode: str = "zero") -> torch.Tensor:
    """Prefix-matching scores of every head with each head of ``layer`` ablated in turn (Olsson et al.).

    repeated: repeated random tokens [batch, pos]. Returns [n_heads(ablated), n_layers, n_heads];
    an induction head's score collapses when its previous-token head is ablated.
    """
    return torch.stack([prefix_matching_scores(AblatedModel(model, {(layer, h)}, mode), repeated)
                        for h in range(model.cfg.n_heads)])


# ---- scores over training (the phase change) --------------------------------------------------
def checkpoint_progress(path: str | Path) -> tuple[int, int]:
    """(step, tokens seen) of a snapshot (metadata ``step``/``tokens``) or a resume checkpoint (``state``)."""
    meta = read_metadata(path)
    if "tokens" in meta:
        return int(meta.get("step", -1)), int(meta["tokens"])
    if "state" in meta and "train_config" in meta:
        step = int(meta["state"]["step"])
        return step, step * int(meta["train_config"]["batch_size"]) * int(meta["model_config"]["n_ctx"])
    raise ValueError(f"{path} records neither tokens nor a training state")


@torch.no_grad()
def phase_change_scores(paths, validation_tokens: np.ndarray, repeated: torch.Tensor,
                        n_windows: int = 256, batch_size: int = 8) -> list[dict]:
    """Olsson et al.'s scores at each snapshot in ``paths`` (e.g. ``circuits.runs.snapshot_paths``).

    Per snapshot: ``step``, ``tokens``; ``icl_score`` (loss late minus loss early in the context: one
    position each, so it needs many windows) and ``val_loss`` on ``n_windows`` validation windows
    (run ``batch_size`` at a time); ``prev_token`` (on the first batch of windows) and
    ``prefix_matching`` (on ``repeated``) [n_layers][n_heads], and their best heads
    ``prev_token_best_l0``, ``prefix_matching_best_last``.
    """
    rows, batches = [], None
    for path in paths:
        model = load_model(path).eval()
        if batches is None:
            batches = list(iter_eval_batches(validation_tokens, batch_size, model.cfg.n_ctx,
                                             max(1, n_windows // batch_size)))
        step, tokens = checkpoint_progress(path)
        losses = torch.cat([per_token_loss(model, b) for b in batches])
        windows = batches[0]
        row = {"path": str(path), "step": step, "tokens": tokens, "val_loss": float(losses.mean()),
               "icl_score": in_context_learning_score(losses)}
        if model.cfg.n_layers:
            prev = previous_token_scores(model, windows[:, :-1])
            prefix = prefix_matching_scores(model, repeated)
            row.update(prev_token=prev.tolist(), prefix_matching=prefix.tolist(),
                       prev_token_best_l0=float(prev[0].max()), prefix_matching_best_last=float(prefix[-1].max()))
        rows.append(row)
    return rows
