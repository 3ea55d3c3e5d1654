"""Numbers derived from the two-layer chapter's results (``findings.two_layer.results``), shared by the chapter
(``book/05_two_layer``) and its findings rows (paper "Two-Layer Attention-Only Transformers" and its erratum): the
partner heads over the last several tokens, how the induction heads compose, what ablating the previous-token head
does, each layer's mean single-head term and the heads in the (+, +) corner of the eigen-positivity plot.
"""

from __future__ import annotations

import numpy as np

from circuits.analysis.composition import KINDS, composes


def partner_heads(r: dict) -> list[int]:
    """The layer-0 heads over the last several tokens, or the best candidate when none qualifies."""
    return list(r["several"]) or [int(r["several_candidate"])]


def composition_summary(r: dict) -> dict:
    """How the induction heads compose with the previous-token head and with the heads over the last several tokens.

    ``ratio[kind]`` [h1, h2]: score / random baseline. ``main_kind``, ``main_h1``: the kind and the layer-0 head
    whose mean ratio into the induction heads (``mean_into_induction[kind]`` [h1]) is largest.
    ``k_prev`` / ``q_prev``: the induction heads (layer-1 indices) that K- / Q-compose
    (``analysis.composition.composes``) with the previous-token head; ``k_several`` / ``q_several``: those that
    compose with any head of ``partner_heads``. ``max_other``: the largest ratio of any other layer-0 head into
    an induction head; ``strongest``: the largest ratio in the whole figure, as (kind, h1, h2, ratio); ``pairs``:
    for each kind, how many of all (h1, h2) pairs compose.
    """
    ratio = {k: np.asarray(r[f"comp_{k}"]) / r["baseline"] for k in KINDS}
    ind = list(r["induction"]) or list(range(r["n_heads"]))  # no induction head: every layer-1 head
    mean_in = {k: ratio[k][:, ind].mean(1) for k in KINDS}  # [h1]: mean ratio into the induction heads
    main_kind = max(KINDS, key=lambda k: float(mean_in[k].max()))
    out = {"ratio": ratio, "main_kind": main_kind, "main_h1": int(mean_in[main_kind].argmax()),
           "mean_into_induction": mean_in}
    partners = partner_heads(r)
    for k in ("K", "Q"):
        score = np.asarray(r[f"comp_{k}"])
        out[f"{k.lower()}_prev"] = [h for h in r["induction"] if composes(score[r["prev_head"], h], r["baseline"])]
        out[f"{k.lower()}_several"] = [h for h in r["induction"]
                                       if any(composes(score[g, h], r["baseline"]) for g in partners)]
    others = [h for h in range(r["n_heads"]) if h != r["prev_head"] and h not in partners]
    out["max_other"] = float(max(ratio[k][others][:, ind].max() for k in KINDS)) if others else float("nan")
    kind, h1, h2 = max(((k, a, b) for k in KINDS for a in range(r["n_heads"]) for b in range(r["n_heads"])),
                       key=lambda t: ratio[t[0]][t[1], t[2]])
    out["strongest"] = (kind, h1, h2, float(ratio[kind][h1, h2]))
    out["pairs"] = {k: int(sum(composes(x, r["baseline"]) for x in np.asarray(r[f"comp_{k}"]).ravel())) for k in KINDS}
    out["q_from_focus"] = int(sum(composes(x, r["baseline"]) for x in np.asarray(r["comp_Q"])[r["focus"]]))
    return out


def ablation_summary(r: dict) -> dict:
    """Prefix matching of the induction heads (or of the best layer-1 head when there is none) in the intact
    model, with the previous-token head ablated, and the mean over ablations of the other layer-0 heads."""
    prefix, ablated = np.asarray(r["prefix"])[1], np.asarray(r["ablated"])
    heads = list(r["induction"]) or [int(prefix.argmax())]
    others = [h for h in range(r["n_heads"]) if h != r["prev_head"]]
    return {"heads": heads, "intact": [float(prefix[h]) for h in heads],
            "ablated": [float(ablated[r["prev_head"], h]) for h in heads],
            "control": [float(ablated[others][:, h].mean()) for h in heads]}


def layer_means(r: dict) -> list[float]:
    """Mean loss increase from removing one head's single-head term, per layer."""
    return [float(x) for x in np.asarray(r["single"]).mean(1)]


def corner_heads(r: dict) -> list[int]:
    """Layer-1 heads with both circuits positive: QK through the previous-token head and OV (the (+, +) corner)."""
    qk, ov = np.asarray(r["qk_positivity"]), np.asarray(r["ov_positivity"])
    return [h for h in range(r["n_heads"]) if qk[h] > 0 and ov[h] > 0]
