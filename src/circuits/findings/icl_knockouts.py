"""The knock-outs of Olsson et al.'s "Argument 3" as the induction chapter runs them: which heads go together
(the induction heads, and as controls as many other heads picked by a fixed rule or at random), where the loss is
read (the two bands of the ICL score and positions 2^k - 1), and what each knock-out removes. The losses
themselves come from ``analysis.knockouts.knockout_losses``, checked against the model run under ``ablate``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from circuits.metrics.heads import Head, induction_heads, previous_token_heads
from circuits.metrics.olsson import ICL_BAND, icl_positions

N_RANDOM_CONTROLS = 3  # draws of random layer-1 heads (as many as the induction heads) knocked out as controls
KNOCKOUT_REMOVES = 0.5  # a knock-out "removes most" in-context learning when it removes half the ICL score
CONTROL_KEEPS = 0.25  # ... and a control "does not" when it removes at most a quarter


def knockout_sets(prefix: np.ndarray, prev: np.ndarray, seed: int = 0) -> dict[str, list[Head]]:
    """The heads knocked out together, from the 2L model's prefix-matching and previous-token scores
    [layer, head]:

    - ``induction``: the induction heads (``metrics.heads``), or the best layer-1 head when there is none;
    - ``control``: as many layer-1 heads, those with the lowest prefix matching;
    - ``random 1..N``: as many layer-1 heads drawn at random among the others (``N_RANDOM_CONTROLS`` draws);
    - ``previous``: the previous-token heads, or the best layer-0 head when there is none;
    - ``control 0``: as many layer-0 heads, those with the lowest previous-token score.
    """
    prefix, prev = np.asarray(prefix), np.asarray(prev)
    n = prefix.shape[1]
    induction = induction_heads(torch.as_tensor(prefix)) or [(1, int(prefix[1].argmax()))]
    k = len(induction)
    others = [h for h in np.argsort(prefix[1], kind="stable") if (1, int(h)) not in induction]
    sets = {"induction": induction, "control": [(1, int(h)) for h in others[:k]]}
    rng = np.random.default_rng(seed)
    for i in range(N_RANDOM_CONTROLS):
        sets[f"random {i + 1}"] = [(1, int(h)) for h in sorted(rng.choice(others, size=min(k, len(others)),
                                                                             replace=False))]
    previous = previous_token_heads(torch.as_tensor(prev)) or [(0, int(prev[0].argmax()))]
    low = [h for h in np.argsort(prev[0], kind="stable") if (0, int(h)) not in previous]
    sets["previous"] = previous
    sets["control 0"] = [(0, int(h)) for h in low[:len(previous)]][:n]
    return sets


def knockout_variants(sets: dict[str, list[Head]]) -> list[tuple[str, str, list[Head]]]:
    """(set, mode, heads) of every knock-out the chapter runs: the intact model first, then each set zeroed, and
    the induction and previous-token heads also mean-ablated."""
    out = [("none", "none", [])]
    for name, heads in sets.items():
        out += [(name, mode, heads) for mode in (("zero", "mean") if name in ("induction", "previous") else ("zero",))]
    return out


# ---- the in-context-learning score, read at a few positions -------------------------------------------------

def icl_bands(n_ctx: int) -> tuple[int, int]:
    """The centres of the early and late bands of ``metrics.olsson.in_context_learning_score`` for windows of
    ``n_ctx`` predicted tokens (the late one kept ``ICL_BAND`` positions inside the context)."""
    early, late = icl_positions(n_ctx + 1)
    return early, min(late, n_ctx - 1 - ICL_BAND)


def band_positions(n_ctx: int) -> tuple[list[int], list[int]]:
    """The positions of the early and of the late band of the ICL score."""
    return tuple([t for t in range(max(0, c - ICL_BAND), min(n_ctx, c + ICL_BAND + 1))] for c in icl_bands(n_ctx))


def knockout_positions(n_ctx: int) -> list[int]:
    """Where the knock-outs read the loss: the two bands of the ICL score and the positions 2^k - 1 (1, 2, 4, ...
    tokens of context), enough for the shape of the loss along the context. Unembedding a position costs about
    twice what a layer costs there, so the loss is read nowhere else."""
    marks = [2 ** k - 1 for k in range(n_ctx.bit_length()) if 2 ** k - 1 < n_ctx]
    return sorted({*(t for band in band_positions(n_ctx) for t in band), *marks})


def band_scores(loss: torch.Tensor, positions: list[int], n_ctx: int) -> torch.Tensor:
    """Each window's ICL score [window] from its loss [window, len(positions)] at ``positions`` (which hold both
    bands): the mean loss over the late band minus that over the early band, as
    ``metrics.olsson.in_context_learning_score`` computes it from every position."""
    early, late = ([positions.index(t) for t in band] for band in band_positions(n_ctx))
    return loss[:, late].mean(1) - loss[:, early].mean(1)


def standard_error(x: torch.Tensor) -> float:
    return float(x.std() / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def knockout_scores(loss: torch.Tensor, intact: torch.Tensor, positions: list[int], n_ctx: int) -> dict:
    """From the loss [window, position] at ``positions`` (``knockout_positions``): the ICL score and its
    standard error over windows, its change from the intact model's ``intact`` on the same windows with the
    standard error of that paired difference, the mean loss, and the mean loss at each position."""
    score, base = band_scores(loss, positions, n_ctx), band_scores(intact, positions, n_ctx)
    return {"icl": float(score.mean()), "icl_se": standard_error(score), "change": float((score - base).mean()),
            "change_se": standard_error(score - base), "mean": float(loss.mean()),
            "by_position": [float(x) for x in loss.mean(0)]}


def knockout_table(r: dict) -> dict[tuple[str, str], dict]:
    """The knock-outs by (set, mode), each with ``removed``: the change of the ICL score it causes (paired, on
    the same windows) as a share of the intact model's ICL score on those windows (1: no in-context learning
    left, 0: unchanged, above 1: late tokens now predicted worse than early ones, < 0: more than before); NaN
    if the intact model has no ICL."""
    rows = {(k["set"], k["mode"]): dict(k) for k in r["knockouts"]}
    intact = rows[("none", "none")]["icl"]
    for k in rows.values():
        k["removed"] = k["change"] / -intact if intact < 0 else float("nan")
    return rows


def knockout_summary(r: dict) -> dict:
    """What the knock-outs do, in the numbers the chapter and the findings table quote: for every knock-out the
    rise of the mean loss over the early and over the late band of the ICL score (their difference is the
    change of the ICL score)."""
    rows = knockout_table(r)
    randoms = [rows[key] for key in ((f"random {i + 1}", "zero") for i in range(N_RANDOM_CONTROLS)) if key in rows]
    positions, intact = r["knockout_positions"], rows[("none", "none")]
    early, late = ([positions.index(t) for t in band] for band in band_positions(r["n_ctx"]))
    rise = lambda k, idx: float(np.mean([k["by_position"][i] - intact["by_position"][i] for i in idx]))
    return {"intact": intact, "induction": rows[("induction", "zero")],
            "induction_mean": rows[("induction", "mean")], "control": rows[("control", "zero")],
            "randoms": randoms, "previous": rows[("previous", "zero")], "previous_mean": rows[("previous", "mean")],
            "control0": rows[("control 0", "zero")],
            "early_rise": {key: rise(k, early) for key, k in rows.items()},
            "late_rise": {key: rise(k, late) for key, k in rows.items()},
            "random_removed_max": max((k["removed"] for k in randoms), default=float("nan"))}
