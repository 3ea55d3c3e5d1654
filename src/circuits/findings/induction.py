"""Induction heads and in-context learning (book chapter 06_induction): Olsson et al.'s (2022) per-head evaluators,
the loss on repeated random tokens, the in-context-learning score and the knock-outs of their "Argument 3".
``results`` computes every number that needs a model, once per build; ``findings_rows`` turns them, with the
training logs' phase change (``findings.phase_change``), into the findings table's rows, each with a verdict
computed by the rule written next to it (and stated in its ``rule``).

The pieces live beside it: ``findings.icl_knockouts`` (which heads are knocked out together, where the loss is
read, what each knock-out removes), ``findings.phase_change`` (the logs and the seed sweep),
``analysis.knockouts`` (the knocked-out losses from one pass) and ``analysis.induction_behaviour`` (copying and
the repeat read plainly).

Heads are picked by measurement, never by index (``metrics.heads``): induction heads by prefix matching,
previous-token heads by the previous-token score; the controls of the knock-outs by a fixed rule
(``knockout_sets``). Every ICL score that the chapter compares is measured on the same validation windows as the
score it is compared with: the knock-outs on the ``ICL_WINDOWS`` windows of ``findings.models.validation_losses``,
the training log's scores on the log's own windows (``log_windows``).
"""

from __future__ import annotations

import numpy as np
import torch

from circuits.analysis.ablation import ablate
from circuits.analysis.circuits import eigen_positivity, ov_circuit
from circuits.analysis.induction_behaviour import copying_detail, copying_random_level, repeat_detail
from circuits.analysis.knockouts import knockout_losses
from circuits.data.batches import iter_eval_batches
from circuits.metrics.heads import head_name, induction_heads, previous_token_heads
from circuits.metrics.losses import per_token_loss
from circuits.metrics.olsson import (ICL_WINDOWS, copying_scores, prefix_matching_scores, previous_token_scores,
                                     repeated_random_tokens)

from .context import Book
from .icl_knockouts import (CONTROL_KEEPS, KNOCKOUT_REMOVES, band_positions, band_scores, knockout_positions,
                            knockout_scores, knockout_sets, knockout_summary, knockout_variants, standard_error)
from .models import validation_losses
from .phase_change import ABRUPT_RATIO, DROP_SHARE, LAYERS, phase_change_summary
from .verdicts import verdict

SECTION = "06_induction#{}"
REPEAT_LEN = 50  # random tokens, then the same tokens again (ARENA's test: 14.5 -> 4.4 nats on its 2L model)
N_REPEATS = 10  # such sequences
N_MEAN_WINDOWS = 16  # validation windows whose mean head outputs replace a head in mean ablation
# the paper's numbers (PAPER.md)
PAPER_ICL_BEFORE, PAPER_ICL_AFTER = -0.15, -0.4  # nats: ICL score above -0.15 before the phase change, ≈ -0.4 after
ARENA_REPEAT = (14.5, 4.4, 50_257)  # ARENA's 2L model: loss on the first copy and on the repeat, its vocabulary
ICL_REACHED = -0.3  # our 2L model's ICL score "reaches the paper's level" at or below -0.3 nats
ICL_GAIN = 0.1  # ... and it "learns more in context" than the 1L model by at least 0.1 nats
BUMP_TOLERANCE = 0.005  # nats above the trend line that count as a bump (the logged loss is exact to ~1e-4)


def repeat_sequences(book: Book) -> torch.Tensor:
    """``N_REPEATS`` sequences of a start token, ``REPEAT_LEN`` random tokens of middling frequency and the same
    tokens again (shorter where the context is), [N_REPEATS, 1 + 2 * len]."""
    return repeated_random_tokens(book.counts, n_samples=N_REPEATS, seq_len=REPEAT_LEN, repeats=2, bos=book.bos,
                                  seed=1, n_ctx=book.preset.n_ctx)


def repeat_halves(loss: np.ndarray) -> tuple[float, float]:
    """Mean per-token loss [position] on the first copy and on the repeat of ``repeat_sequences``. Position t
    predicts token t + 1; the first copy's tokens 1..L are predicted at positions 0..L-1, the repeat's at
    positions L..2L-1, of which the first (the repeat's first token, which follows the last token of the
    first copy) cannot be found by induction: the repeat's mean is over positions L+1..2L-1."""
    n = len(loss) // 2  # the sequence length L: the loss has 2L positions
    return float(np.mean(loss[:n])), float(np.mean(loss[n + 1:]))


def log_windows(book: Book, n_layers: int) -> torch.Tensor:
    """The validation windows on which the training run of the ``n_layers`` model evaluated itself
    (``train.loop.evaluate``: ``eval_batches`` fixed batches, the same at every evaluation), [n, n_ctx + 1]."""
    tc = book.preset.train_config(n_layers)
    return torch.cat(list(iter_eval_batches(book.tokens["validation"], tc.batch_size, book.preset.n_ctx,
                                            tc.eval_batches)))



# ---- every measurement that needs a model ---------------------------------------------------------------------

def results(book: Book) -> dict:
    """Every measurement of the chapter that needs a model (cached for the build)."""
    return book.cache("induction", (0, *LAYERS), lambda: _compute(book))


@torch.no_grad()
def _compute(book: Book) -> dict:
    out: dict = {}
    text = book.windows(8)[:, :-1]  # the previous-token score's text, as the training log measures it
    repeats, samples = repeat_sequences(book), book.samples()
    n_ctx = book.preset.n_ctx
    bands = sorted(t for band in band_positions(n_ctx) for t in band)
    for n in LAYERS:
        model = book.model(n)
        out[f"prev_{n}"] = previous_token_scores(model, text).numpy()  # [layer, head]
        out[f"prefix_{n}"] = prefix_matching_scores(model, book.repeated()).numpy()  # [layer, head]
        out[f"copying_{n}"] = copying_scores(model, samples).numpy()  # [layer, head]
        out[f"positivity_{n}"] = np.stack([eigen_positivity(ov_circuit(model, l)).numpy() for l in range(n)])
        out.update({f"{k}_{n}": v for k, v in copying_detail(model, samples).items()})
        out[f"repeat_loss_{n}"] = per_token_loss(model, repeats).mean(0).numpy()  # [position]
        held = validation_losses(book, n)  # ICL_WINDOWS windows, shared with the models chapter
        out[f"icl_{n}"], out[f"icl_se_{n}"] = float(held["icl"]), float(held["icl_se"])
        out[f"position_loss_{n}"] = np.asarray(held["by_position"])  # [position], mean over windows
        # the final model on the training log's own windows: what the log's last evaluation measured
        logged = band_scores(knockout_losses(model, log_windows(book, n), bands, [("none", "none", [])])
                             [("none", "none")], bands, n_ctx)
        out[f"log_icl_{n}"], out[f"log_icl_se_{n}"] = float(logged.mean()), standard_error(logged)
        out["log_windows"] = len(logged)
    held = validation_losses(book, 0)  # the zero-layer model cannot use the context at all
    out["icl_0"], out["icl_se_0"] = float(held["icl"]), float(held["icl_se"])

    model = book.model(2)
    sets = knockout_sets(out["prefix_2"], out["prev_2"])
    out.update({f"repeat_{k}": v for k, v in repeat_detail(model, repeats, sets["induction"]).items()})
    windows = book.windows(ICL_WINDOWS)  # the windows of validation_losses: the intact ICL score is the same
    positions = knockout_positions(n_ctx)
    losses = knockout_losses(model, windows, positions, knockout_variants(sets),
                             book.windows(N_MEAN_WINDOWS)[:, :-1])
    intact = losses[("none", "none")]
    out["knockouts"] = [{"set": name, "mode": mode, "heads": [list(h) for h in heads],
                         **knockout_scores(losses[(name, mode)], intact, positions, n_ctx)}
                        for name, mode, heads in knockout_variants(sets)]
    with ablate(model, sets["induction"]):
        out["repeat_loss_2_knockout"] = per_token_loss(model, repeats).mean(0).numpy()
    out.update(knockout_windows=len(windows), knockout_positions=positions, repeat_len=(repeats.shape[1] - 1) // 2,
               n_heads=model.cfg.n_heads, n_ctx=n_ctx, icl_windows=ICL_WINDOWS, sample_len=samples.shape[1])
    return out


# ---- derived numbers, shared by the chapter and the rows ---------------------------------------------------

def evaluator_summary(r: dict) -> dict:
    """The induction heads on Olsson et al.'s copying axis against every other head of both models: their
    scores, the other heads' best and median, whether each induction head copies more than every other head
    (``top``) or than the median one (``above_median``), and the level of a head that copies nothing."""
    prefix, copying = np.asarray(r["prefix_2"]), np.asarray(r["copying_2"])
    ind = induction_heads(torch.as_tensor(prefix))
    others = np.array([copying[l, h] for l in range(prefix.shape[0]) for h in range(prefix.shape[1])
                       if (l, h) not in ind] + list(np.asarray(r["copying_1"]).ravel()))
    return {"induction": ind, "copying": [float(copying[h]) for h in ind], "others_max": float(others.max()),
            "others_median": float(np.median(others)), "random": copying_random_level(r["sample_len"]),
            "top": bool(ind) and all(copying[h] > others.max() for h in ind),
            "above_median": bool(ind) and all(copying[h] > np.median(others) for h in ind)}


# ---- the findings table ------------------------------------------------------------------------------------

def findings_rows(book: Book) -> list[dict]:
    """The chapter's claims, each with the paper's value, ours, and a verdict by the rule in its ``rule``."""
    r, p = results(book), phase_change_summary(book)
    prefix = np.asarray(r["prefix_2"])
    ev = evaluator_summary(r)
    ind = ev["induction"]
    rows = []

    names = ", ".join(head_name(h) for h in ind)
    rows.append({"claim": "Induction heads stand out on prefix matching and on copying",
                 "paper": "induction heads high on both axes (Olsson et al., head evaluators)",
                 "ours": (f"{len(ind)} induction heads ({names}): prefix matching "
                          f"{', '.join(f'{prefix[h]:.2f}' for h in ind)}, copying "
                          f"{', '.join(f'{c:+.2f}' for c in ev['copying'])} against at most {ev['others_max']:+.2f} "
                          f"for every other head of both models (a head that copies nothing: "
                          f"{ev['random']:+.2f}); high relative to the other heads, low on Olsson et al.'s scale")
                         if ind else f"no induction head (best layer-1 prefix matching {prefix[1].max():.2f})",
                 "verdict": verdict(ev["top"], ev["above_median"]),
                 "rule": "reproduced if the model has induction heads and each has a higher copying score than "
                         "every other head of the one- and two-layer models; partly if each is above the median "
                         "head",
                 "section": SECTION.format("induction-evaluators")})

    i1, i2 = r["icl_1"], r["icl_2"]
    rows.append({"claim": "In-context learning only with ≥ 2 layers (ICL score: late minus early loss)",
                 "paper": "≈ -0.4 nats after the phase change; 1L models: above -0.15",
                 "ours": f"2L {i2:+.3f} ± {r['icl_se_2']:.3f}, 1L {i1:+.3f} ± {r['icl_se_1']:.3f} nats "
                         f"({r['icl_windows']:,} validation windows)",
                 "verdict": verdict(i2 <= ICL_REACHED and i1 > PAPER_ICL_BEFORE, i2 <= i1 - ICL_GAIN),
                 "rule": f"reproduced if the 2L score is at most {ICL_REACHED} nats and the 1L score above "
                         f"{PAPER_ICL_BEFORE}; partly if the 2L score is at least {ICL_GAIN} nats below the 1L score",
                 "section": SECTION.format("induction-icl")})

    w = p["window"]
    rows.append({"claim": "Induction heads form abruptly, and the ICL score drops at the same time",
                 "paper": "a phase change: ICL score above -0.15 before, ≈ -0.4 after",
                 "ours": (f"prefix matching {p['prefix_start']:.2f} → {p['prefix_end']:.2f} between "
                          f"{w['start_tokens'] / 1e6:.1f} M and {w['end_tokens'] / 1e6:.1f} M tokens; logged ICL "
                          f"score {p['icl_before']:+.2f} → {p['icl_after']:+.2f} across it "
                          f"({p['drop_share']:.0%} of its fall to {p['icl_final'][2]:+.2f} at the end)") if w else
                         "no induction head forms in the 2L log",
                 "verdict": verdict(bool(w) and p["abrupt"] and p["drop_share"] >= DROP_SHARE,
                                     bool(w) and (p["abrupt"] or p["drop_share"] >= DROP_SHARE)),
                 "rule": f"the phase change runs from the last evaluation where the best last-layer prefix matching "
                         f"is below half the induction threshold to the first where it reaches it; reproduced if it "
                         f"ends within {ABRUPT_RATIO}× the tokens at which it starts and at least "
                         f"{DROP_SHARE:.0%} of the logged ICL score's later fall happens across it; partly if one "
                         f"of the two holds",
                 "section": SECTION.format("induction-phase-change")})

    b = p.get("bump")
    bumped = b is not None and (b["excess"] > BUMP_TOLERANCE or b["rise"] > 0)
    rows.append({"claim": "A small bump in the loss curve at the phase change",
                 "paper": "visible in small models' loss curves",
                 "ours": (f"largest excess over the trend {b['excess']:+.4f} nats; "
                          + ("the loss never rises between evaluations; " if b["rise"] <= 0 else
                             f"the loss rises by up to {b['rise']:.4f} nats between evaluations; ")
                          + f"it falls {p['fall_per_doubling']['during']:.3f} nats per doubling of tokens across the "
                          f"window, {p['fall_per_doubling']['before']:.3f} before") if b else
                         "no phase change to look at" if not w else "too few evaluations around the window",
                 "verdict": verdict(bumped, False),
                 "rule": f"reproduced if, during the phase change, the validation loss lies more than "
                         f"{BUMP_TOLERANCE} nats above its trend from before it (a straight line in log tokens) or "
                         f"rises between two evaluations; otherwise not",
                 "section": SECTION.format("induction-bump")})

    k = knockout_summary(r)
    controls = [k["control"]["removed"], *[x["removed"] for x in k["randoms"]]]
    rows.append({"claim": "Knocking out the induction heads removes most in-context learning; other heads do not",
                 "paper": "ICL score moves back toward zero; other knock-outs do not (Argument 3)",
                 "ours": f"zeroing {len(ind)} induction heads moves the ICL score from {k['intact']['icl']:+.3f} by "
                         f"{k['induction']['change']:+.3f} ± {k['induction']['change_se']:.3f} nats, "
                         f"{k['induction']['removed']:.0%} of it; lowest-prefix-matching control "
                         f"{k['control']['removed']:.0%}, random controls at most {k['random_removed_max']:.0%} "
                         f"(the same {r['knockout_windows']:,} windows)",
                 "verdict": verdict(bool(ind) and k["induction"]["removed"] >= KNOCKOUT_REMOVES
                                     and max(controls) <= CONTROL_KEEPS,
                                     bool(ind) and k["induction"]["removed"] > max(controls)),
                 "rule": f"reproduced if zeroing the induction heads removes at least {KNOCKOUT_REMOVES:.0%} of the "
                         f"ICL score and no control (as many layer-1 heads, lowest prefix matching or drawn at random) "
                         f"removes more than {CONTROL_KEEPS:.0%}; partly if they remove more than every control",
                 "section": SECTION.format("induction-knockouts")})

    has_prev = bool(previous_token_heads(torch.as_tensor(np.asarray(r["prev_2"]))))
    rows.append({"claim": "Knocking out the previous-token head removes in-context learning too",
                 "paper": "the induction circuit needs it (ARENA: prefix matching 0.68 → 0.01 without it)",
                 "ours": f"the ICL score moves by {k['previous']['change']:+.3f} ± {k['previous']['change_se']:.3f} "
                         f"nats, {k['previous']['removed']:.0%} of the model's {k['intact']['icl']:+.3f}; layer-0 "
                         f"control {k['control0']['removed']:.0%}",
                 "verdict": verdict(has_prev and k["previous"]["removed"] >= KNOCKOUT_REMOVES
                                     and k["control0"]["removed"] <= CONTROL_KEEPS,
                                     has_prev and k["previous"]["removed"] > k["control0"]["removed"]),
                 "rule": f"reproduced if the model has a previous-token head and zeroing it removes at least "
                         f"{KNOCKOUT_REMOVES:.0%} of the ICL score while the layer-0 head with the lowest "
                         f"previous-token score removes at most {CONTROL_KEEPS:.0%}; partly if it removes more than "
                         f"that control",
                 "section": SECTION.format("induction-knockouts")})
    return rows
