"""Two layers (book chapter 05_two_layer): composition, the previous-token head, the two circuits of the induction
heads, the ablation that breaks them, term importance and virtual heads. ``results`` computes every number the
chapter and the findings table show, once per build; ``findings_rows`` turns them into the table's rows, each
with a verdict computed from the measurement by the rule its ``rule`` field states in words.

Heads are picked by measurement, never by index: previous-token and induction heads by ``metrics.heads``, the
erratum's heads over the last several tokens by ``analysis.induction.several_token_heads``, the head the chapter
examines for its large single-head term (``focus``) as the layer-0 head whose term costs most to remove.

The measurements of the focus head and of the layer-1 head furthest from the (+, +) corner (``outlier``) are in
``findings.two_layer_focus``; the numbers derived from the results that the chapter and the rows share
(composition and ablation summaries, the (+, +) corner) in ``findings.two_layer_summaries``.
"""

from __future__ import annotations

import numpy as np
import torch

from circuits.analysis.ablation import ablation_prefix_matching
from circuits.analysis.circuits import ov_circuit
from circuits.analysis.composition import COMPOSES, KINDS, composition_baseline, composition_scores
from circuits.analysis.induction import (RECENT_TOKENS, SPREAD_SHARE, induction_eigenvalues, induction_positivity,
                                         offset_profile, recent_mass, several_token_heads)
from circuits.analysis.scan.tables import copying_rates
from circuits.analysis.skip_trigrams import frequent_token_ids, restrict
from circuits.analysis.term_importance import (single_head_effects, term_effect, term_importance,
                                               virtual_head_effects, virtual_head_terms)
from circuits.metrics.heads import INDUCTION_THRESHOLD, head_name, induction_heads, previous_token_heads
from circuits.metrics.losses import per_token_loss
from circuits.metrics.olsson import prefix_matching_scores, previous_token_scores

from .context import Book
from .two_layer_focus import focus_head, outlier_head
from .two_layer_summaries import ablation_summary, composition_summary, corner_heads, layer_means, partner_heads
from .verdicts import verdict

N_WINDOWS = 16  # validation windows (n_ctx + 1 tokens each) for every measurement on text; with 8, sampling moved
# the single-head and direct-path effects of the cpu model by 0.2 nats
N_VIRTUAL_WINDOWS = 2  # of them, for the per-virtual-head removals (n_heads² unembeddings of every position)
N_VIRTUAL_SHOWN = 5  # the virtual heads that cost most on those windows, measured again on all N_WINDOWS
# the paper's term importance (video, approximate): marginal effect of each order of terms, nats
PAPER_TERMS = {"direct path": 1.8, "single heads": 5.2, "virtual heads": 0.3}
PAPER_SHARES = {k: v / sum(PAPER_TERMS.values()) for k, v in PAPER_TERMS.items()}  # of its uniform-to-model gap
TERM_SHARE_TOLERANCE = 0.15  # how far a share of the gap may be from the paper's for "reproduced"
MIN_COUNT = 50  # circuits read over tokens seen at least this often in training (rarer ones keep random embeddings)
MAX_OV_TOKENS = 4096  # ... and at most this many of them, the most frequent (all of them at a 4,096-token vocabulary)
ARENA_TOP1 = 0.31  # ARENA's 2L model: head 1.4's token is its own top output in its full OV circuit for ≈ 31 %
TOP1_REPRODUCED = 0.15  # an induction head "copies" by ARENA's test at about half ARENA's rate or more
SECTION = "05_two_layer#{}"


def ov_tokens(book: Book) -> torch.Tensor:
    """Token ids the full OV circuits are read over, ascending: seen at least ``MIN_COUNT`` times in training and
    decoding to whole characters, at most the ``MAX_OV_TOKENS`` most frequent of them (all tokens when fewer than 10
    qualify, as in a tiny test book)."""
    ids = frequent_token_ids(book.counts, MIN_COUNT)
    ids = ids[torch.tensor(["\ufffd" not in book.decode(int(t)) for t in ids], dtype=torch.bool)] if len(ids) else ids
    if len(ids) > MAX_OV_TOKENS:  # a 50k vocabulary: keep the most frequent (a d_vocab² scan is minutes on a CPU)
        counts = torch.as_tensor(np.asarray(book.counts)[ids.numpy()])
        ids = ids[counts.argsort(descending=True, stable=True)[:MAX_OV_TOKENS]].sort().values
    return ids if len(ids) >= 10 else torch.arange(book.model(2).cfg.d_vocab)


def results(book: Book) -> dict:
    """Every measurement of the two-layer chapter on the preset's 2-layer model (cached for the build)."""
    return book.cache("two-layer", (2,), lambda: _compute(book))


@torch.no_grad()
def _compute(book: Book) -> dict:
    model = book.model(2)
    cfg = model.cfg
    windows = book.windows(N_WINDOWS)  # [window, n_ctx + 1]
    text = windows[:, :-1]
    repeated = book.repeated()
    _, cache = model.run_with_cache(text)

    prev_scores = previous_token_scores(model, text)  # [layer, head]
    prefix = prefix_matching_scores(model, repeated)  # [layer, head]
    previous = [h for _, h in previous_token_heads(prev_scores)]
    prev_head = int(prev_scores[0].argmax())  # the previous-token head, or the closest layer 0 has
    induction = [h for _, h in induction_heads(prefix)]
    max_offset = min(RECENT_TOKENS, text.shape[1] - 1)
    profile = offset_profile(model, text, 0, max_offset, cache)  # [head, offsets 0..K, further]
    several = several_token_heads(profile, max_offset)
    others = [h for h in range(cfg.n_heads) if h not in previous] or list(range(cfg.n_heads))
    candidate = max(others, key=lambda h: float(recent_mass(profile, max_offset)[h]))

    baseline = composition_baseline(cfg.d_model, cfg.d_head)
    comp = {kind: composition_scores(model, kind).numpy() for kind in KINDS}  # [h1 (layer 0), h2 (layer 1)]
    ablated = ablation_prefix_matching(model, repeated, layer=0)[:, 1]  # [ablated layer-0 head, layer-1 head]
    positivity = induction_positivity(model, (0, prev_head))
    eig = induction_eigenvalues(model, (0, prev_head))

    ti = term_importance(model, windows, cache)
    single = single_head_effects(model, windows, cache)  # [layer, head]
    virtual = virtual_head_effects(model, windows[::N_WINDOWS // N_VIRTUAL_WINDOWS])  # [h1, h2] each, spread windows
    costliest = np.argsort(-virtual["loss"].numpy(), axis=None, kind="stable")[:N_VIRTUAL_SHOWN]
    virtual_top = [[int(i) for i in np.unravel_index(k, virtual["loss"].shape)] for k in costliest]  # [(h1, h2)]
    virtual_top_all = [term_effect(model, windows, virtual_head_terms(model, text, cache, 0, 1, head1=a)[b], cache)
                       for a, b in virtual_top]  # the same removals on all windows

    # ARENA's test of copying: how often a token is its own top output in each layer-1 head's full OV circuit
    allowed = ov_tokens(book)
    top1, top5 = copying_rates(restrict(ov_circuit(model, 1), allowed, allowed), ks=(1, 5))  # [head] each
    per_window = per_token_loss(model, windows).mean(1)  # [window]: each window's mean loss
    focus = focus_head(model, windows, cache, float(per_window.mean()), single[0].numpy(), comp["Q"],
                       virtual["loss"].numpy(), allowed, book.counts)
    outlier = outlier_head(cache, text, positivity["qk"].numpy(), positivity["ov"].numpy())
    return {"n_heads": cfg.n_heads, "d_head": cfg.d_head, "windows": N_WINDOWS, "virtual_windows": N_VIRTUAL_WINDOWS,
            "ov_top1": top1.numpy(), "ov_top5": top5.numpy(), "ov_tokens": len(allowed), **focus, **outlier,
            "virtual_top": virtual_top, "virtual_top_all": virtual_top_all,
            "window_se": float(per_window.std() / len(per_window) ** 0.5),
            "tokens": int(text.numel()), "prev_scores": prev_scores.numpy(), "prefix": prefix.numpy(),
            "previous": previous, "prev_head": prev_head, "induction": induction, "max_offset": max_offset,
            "profile": profile.numpy(), "several": several, "several_candidate": candidate,
            "baseline": baseline, **{f"comp_{k}": v for k, v in comp.items()},
            "ablated": ablated.numpy(), "qk_positivity": positivity["qk"].numpy(),
            "ov_positivity": positivity["ov"].numpy(), "eig_ov": eig["ov"], "eig_qk": eig["qk"],
            "uniform": ti.uniform, "losses": ti.losses, "model_loss": ti.model_loss, "marginal": ti.marginal,
            "shares": ti.gap_shares, "single": single.numpy(), "virtual_loss": virtual["loss"].numpy(),
            "virtual_norm": virtual["norm"].numpy()}


# ---- derived numbers, shared by the chapter and the rows (the others: ``two_layer_summaries``) ------------

def shares_close(shares: list[float]) -> bool:
    """Whether every order's share of the gap is within ``TERM_SHARE_TOLERANCE`` of the paper's."""
    return all(abs(a - b) <= TERM_SHARE_TOLERANCE for a, b in zip(shares, PAPER_SHARES.values()))


# ---- the findings table ------------------------------------------------------------------------------------

def findings_rows(book: Book) -> list[dict]:
    """The chapter's claims, each with the paper's value, ours, a verdict and the rule that decides it."""
    r = results(book)
    c, ab = composition_summary(r), ablation_summary(r)
    names = lambda layer, hs: ", ".join(head_name((layer, h)) for h in hs) or "none"
    ind, n = list(r["induction"]), r["n_heads"]
    prev_name = head_name((0, r["prev_head"]))
    rows = []

    k_all = bool(ind) and bool(r["previous"]) and len(c["k_prev"]) == len(ind)
    main = c["main_kind"] == "K" and c["main_h1"] == r["prev_head"]
    main_ratio = float(c["mean_into_induction"][c["main_kind"]].max())
    rows.append({"claim": "The induction heads' composition is K-composition with a previous-token head",
                 "paper": "K-composition with one layer-0 previous-token head is the main effect (erratum)",
                 "ours": f"{len(c['k_prev'])} of {len(ind)} induction heads K-compose with {prev_name} "
                         f"(score ≥ {COMPOSES:g}× baseline); strongest into them: {c['main_kind']} from "
                         f"{head_name((0, c['main_h1']))}, {main_ratio:.1f}× baseline on average",
                 "verdict": verdict(k_all and main, bool(c["k_prev"])),
                 "rule": f"Reproduced if every induction head K-composes with the previous-token head (score at "
                         f"least {COMPOSES:g}× the random baseline) and that is the strongest composition into them; "
                         f"partly if at least one does.",
                 "section": SECTION.format("two-layer-composition")})

    kind, h1, h2, x = c["strongest"]
    strongest_k_prev = kind == "K" and h1 == r["prev_head"]
    k_most = c["pairs"]["K"] >= max(c["pairs"]["Q"], c["pairs"]["V"])
    from_focus = c["q_from_focus"]
    rows.append({"claim": "Across all pairs of heads, composition is essentially K-composition with the "
                          "previous-token head",
                 "paper": "the previous-token head's K-composition is the main effect of the whole figure "
                          "(corrected figure, erratum)",
                 "ours": f"strongest pair: {kind}-composition {head_name((0, h1))} → {head_name((1, h2))}, "
                         f"{x:.1f}× baseline; pairs at ≥ {COMPOSES:g}×: K {c['pairs']['K']}, Q {c['pairs']['Q']} "
                         f"({from_focus} of them from {head_name((0, r['focus']))}), V {c['pairs']['V']}",
                 "verdict": verdict(strongest_k_prev and k_most and bool(c["k_prev"]), bool(c["k_prev"])),
                 "rule": f"Reproduced if the strongest pair of the whole figure is K-composition from the "
                         f"previous-token head and no kind has more pairs at {COMPOSES:g}× the baseline than K; partly "
                         f"if at least one induction head K-composes with the previous-token head.",
                 "section": SECTION.format("two-layer-erratum")})

    several = list(r["several"])
    partners = sorted(set(c["k_several"]) | set(c["q_several"])) if several else []
    heads0 = ", ".join(head_name((0, h)) for h in partner_heads(r))
    rows.append({"claim": "Two induction heads also compose with a layer-0 head over the last several tokens",
                 "paper": "two of the induction heads (corrected figure, erratum)",
                 "ours": (f"{heads0} attend over the last {r['max_offset']} tokens; "
                          f"K-composing with them: {names(1, c['k_several'])}; Q: {names(1, c['q_several'])}"
                          if several else f"no layer-0 head attends over the last {r['max_offset']} tokens "
                          f"(closest: {heads0})"),
                 "verdict": verdict(bool(several) and bool(ind) and len(partners) >= min(2, len(ind)),
                                     bool(several) and bool(partners)),
                 "rule": f"Reproduced if a layer-0 head attends over the last several tokens (at least "
                         f"{SPREAD_SHARE:g} of its attention on the {r['max_offset']} before the present one, none of "
                         f"them holding more than {SPREAD_SHARE:g} of that) and two induction heads (all, if fewer) "
                         f"K- or Q-compose with it; partly if one does.",
                 "section": SECTION.format("two-layer-erratum")})

    prev = np.asarray(r["prev_scores"])[0]
    rows.append({"claim": "One layer-0 head is a previous-token head",
                 "paper": "one (ARENA's 2L: head 0.7)",
                 "ours": f"{len(r['previous'])} ({names(0, r['previous'])}); best score {float(prev.max()):.2f}",
                 "verdict": verdict(len(r["previous"]) == 1, len(r["previous"]) > 1),
                 "rule": "Reproduced with exactly one previous-token head in layer 0; partly with more than one.",
                 "section": SECTION.format("two-layer-layer-0")})

    best = float(np.asarray(r["prefix"])[1].max())
    rows.append({"claim": "Several layer-1 heads are induction heads",
                 "paper": "about 6 of 12 (video); ARENA's 1.4: prefix matching 0.68",
                 "ours": f"{len(ind)} of {n} ({names(1, ind)}); best prefix matching {best:.2f}",
                 "verdict": verdict(len(ind) >= n / 4, len(ind) >= 1),
                 "rule": "Reproduced if at least a quarter of the layer-1 heads are induction heads (the paper: "
                         "about half); partly if at least one is.",
                 "section": SECTION.format("two-layer-induction")})

    fell = [a < 0.5 * b and a < INDUCTION_THRESHOLD for a, b in zip(ab["ablated"], ab["intact"])]
    rows.append({"claim": "Ablating the previous-token head removes induction",
                 "paper": "ARENA: prefix matching 0.68 → ≈ 0.01",
                 "ours": f"{prev_name} ablated: mean prefix matching of {names(1, ab['heads'])} "
                         f"{np.mean(ab['intact']):.2f} → {np.mean(ab['ablated']):.2f} "
                         f"(other layer-0 heads ablated: {np.mean(ab['control']):.2f})",
                 "verdict": verdict(bool(ind) and all(fell),
                                     bool(ind) and np.mean(ab["ablated"]) < 0.5 * np.mean(ab["intact"])),
                 "rule": "Reproduced if, with the previous-token head ablated, every induction head falls below half "
                         "its score and below the induction threshold; partly if their mean score halves.",
                 "section": SECTION.format("two-layer-ablation")})

    qk, ov = np.asarray(r["qk_positivity"]), np.asarray(r["ov_positivity"])
    corner = [h for h in ind if h in corner_heads(r)]
    others = [h for h in corner_heads(r) if h not in ind]
    rows.append({"claim": "Induction heads sit in the (+,+) corner of QK and OV eigen-positivity",
                 "paper": "all of them",
                 "ours": f"{len(corner)} of {len(ind)} induction heads" + (
                     f" (QK {min(qk[ind]):.2f} to {max(qk[ind]):.2f}, OV {min(ov[ind]):.2f} to {max(ov[ind]):.2f})"
                     if ind else "") + f"; so do {len(others)} of the {n - len(ind)} other layer-1 heads",
                 "verdict": verdict(bool(ind) and len(corner) == len(ind), bool(corner)),
                 "rule": "Reproduced if every induction head has both circuits' eigen-positivity above 0 (QK "
                         "through the previous-token head, and OV); partly if some do.",
                 "section": SECTION.format("two-layer-circuits")})

    top1 = np.asarray(r["ov_top1"])
    copy = [h for h in ind if top1[h] >= TOP1_REPRODUCED]
    rest = [h for h in range(n) if h not in ind]
    rows.append({"claim": "An induction head's full OV circuit maps a token to itself (ARENA's top-1 test)",
                 "paper": f"ARENA's 1.4: its token is its own top output for ≈ {ARENA_TOP1:.0%} of tokens",
                 "ours": (", ".join(f"{head_name((1, h))} {top1[h]:.0%}" for h in ind) or "no induction head")
                         + f" of {r['ov_tokens']:,} frequent tokens"
                         + (f"; other layer-1 heads at most {top1[rest].max():.1%}" if rest else ""),
                 "verdict": verdict(bool(ind) and len(copy) == len(ind), bool(copy)),
                 "rule": f"Reproduced if every induction head's token is its own top output for at least "
                         f"{TOP1_REPRODUCED:.0%} of the frequent tokens (about half ARENA's {ARENA_TOP1:.0%}); partly "
                         f"if one head's is.",
                 "section": SECTION.format("two-layer-circuits")})

    d, s, v = r["marginal"]
    sd, ss, sv = r["shares"]
    rows.append({"claim": "Term importance: direct path, single heads, virtual heads",
                 "paper": "≈ 1.8 / 5.2 / 0.3 nats (video); shares of the gap "
                          + " / ".join(f"{x:.2f}" for x in PAPER_SHARES.values()),
                 "ours": f"{d:.2f} / {s:.2f} / {v:.2f} nats; shares {sd:.2f} / {ss:.2f} / {sv:.2f} "
                         f"(on {r['windows']} windows)",
                 "verdict": verdict(s > d > v and shares_close(r["shares"]), v < min(d, s)),
                 "rule": f"Reproduced if single heads gain most, then the direct path, then virtual heads, each "
                         f"share of the uniform-to-model gap within {TERM_SHARE_TOLERANCE:.0%} points of the "
                         f"paper's; partly if the virtual heads gain least.",
                 "section": SECTION.format("two-layer-terms")})

    m0, m1 = layer_means(r)
    single = np.asarray(r["single"])
    rows.append({"claim": "Layer-1 heads matter more than layer-0 heads",
                 "paper": "far more (video)",
                 "ours": f"mean loss increase per head removed: layer 1 {m1:.3f}, layer 0 {m0:.3f} nats; the largest "
                         f"single term is {head_name((0, r['focus']))}'s ({single[0, r['focus']]:.3f}), "
                         f"{r['const_share'][0][r['focus']]:.0%} of its output one constant vector",
                 "verdict": verdict(m1 >= 2 * m0, m1 > m0),
                 "rule": "Reproduced if removing a layer-1 head's single-head term costs on average at least twice "
                         "as much as a layer-0 head's; partly if more.",
                 "section": SECTION.format("two-layer-head-terms")})

    rows.append({"claim": "Virtual heads matter little",
                 "paper": f"≈ 0.3 nats in all, {PAPER_SHARES['virtual heads']:.0%} of the gap (video)",
                 "ours": f"{v:.2f} nats, {sv:.1%} of the gap",
                 "verdict": verdict(abs(sv) <= 0.10, abs(sv) <= 0.25),
                 "rule": "Reproduced if the virtual-head terms add at most 10 % of the uniform-to-model gap (the "
                         "paper: 4 %); partly if at most 25 %.",
                 "section": SECTION.format("two-layer-virtual")})
    return rows
