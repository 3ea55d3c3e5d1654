"""Induction heads and in-context learning (book chapter 06_induction): Olsson et al.'s (2022) per-head evaluators,
the loss on repeated random tokens, the in-context-learning score, the phase change read from the training logs,
the knock-outs of their "Argument 3" and the seed sweep. ``results`` computes every number that needs a model,
once per build; ``phase_change_summary`` and ``seed_summary`` read logs; ``findings_rows`` turns them into the
findings table's rows, each with a verdict computed by the rule written next to it (and stated in its ``rule``).

Heads are picked by measurement, never by index (``metrics.heads``): induction heads by prefix matching,
previous-token heads by the previous-token score; the controls of the knock-outs by a fixed rule
(``knockout_sets``). Every ICL score that the chapter compares is measured on the same validation windows as the
score it is compared with: the knock-outs on the ``ICL_WINDOWS`` windows of ``findings.models.validation_losses``,
the training log's scores on the log's own windows (``log_windows``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import einsum

from circuits.analysis.ablation import ablate
from circuits.analysis.circuits import eigen_positivity, ov_circuit
from circuits.config import get_preset
from circuits.data.batches import iter_eval_batches
from circuits.metrics.heads import Head, head_name, induction_heads, previous_token_heads
from circuits.metrics.losses import loss_fn, per_token_loss
from circuits.metrics.olsson import (ICL_BAND, ICL_WINDOWS, copying_scores, icl_positions, prefix_matching_scores,
                                     previous_token_scores, repeated_random_tokens)
from circuits.model.transformer import AttnOnlyTransformer
from circuits.paths import project_root
from circuits.train.log import eval_rows, first_induction, loss_bump, phase_change, position_loss_grid
from circuits.train.sweep import EARLY_TOKENS, induction_fraction, read_sweep, sweep_label, sweep_summary

from .context import Book
from .models import validation_losses

SECTION = "06_induction#{}"
LAYERS = (1, 2)
REPEAT_LEN = 50  # random tokens, then the same tokens again (ARENA's test: 14.5 -> 4.4 nats on its 2L model)
N_REPEATS = 10  # such sequences
N_MEAN_WINDOWS = 16  # validation windows whose mean head outputs replace a head in mean ablation
N_RANDOM_CONTROLS = 3  # draws of random layer-1 heads (as many as the induction heads) knocked out as controls
BATCH = 32  # windows per forward pass
SWEEP_FILE = ("benchmarks", "logs", "h200_seed_sweep.jsonl")  # 48 runs of the cpu preset's 2L model, many seeds
# the paper's numbers (PAPER.md)
PAPER_ICL_BEFORE, PAPER_ICL_AFTER = -0.15, -0.4  # nats: ICL score above -0.15 before the phase change, ≈ -0.4 after
ARENA_REPEAT = (14.5, 4.4, 50_257)  # ARENA's 2L model: loss on the first copy and on the repeat, its vocabulary
ICL_REACHED = -0.3  # our 2L model's ICL score "reaches the paper's level" at or below -0.3 nats
ICL_GAIN = 0.1  # ... and it "learns more in context" than the 1L model by at least 0.1 nats
ABRUPT_RATIO = 1.5  # a phase change is abrupt when it ends within 1.5x the tokens at which it starts
BUMP_TOLERANCE = 0.005  # nats above the trend line that count as a bump (the logged loss is exact to ~1e-4)
DROP_SHARE = 0.5  # the ICL score drops "at the same time" when half its later fall happens across the window
KNOCKOUT_REMOVES = 0.5  # a knock-out "removes most" in-context learning when it removes half the ICL score
CONTROL_KEEPS = 0.25  # ... and a control "does not" when it removes at most a quarter
AROUND = 3  # evaluations averaged on each side of the window for the ICL score before and after it


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


def log_windows(book: Book, n_layers: int) -> torch.Tensor:
    """The validation windows on which the training run of the ``n_layers`` model evaluated itself
    (``train.loop.evaluate``: ``eval_batches`` fixed batches, the same at every evaluation), [n, n_ctx + 1]."""
    tc = book.preset.train_config(n_layers)
    return torch.cat(list(iter_eval_batches(book.tokens["validation"], tc.batch_size, book.preset.n_ctx,
                                            tc.eval_batches)))


# ---- the forward pass, read at a few positions, with heads knocked out ------------------------------------------

def _layer_inputs(model: AttnOnlyTransformer, tokens: torch.Tensor):
    """The residual stream before each layer, x_0 .. x_{L-1} [batch, pos, d_model], the positions p and, for
    every layer but the last, what each head computed there, z [batch, pos, head, d_head]."""
    x, pos = model.embed(tokens), model.pos_embed(tokens.shape[1])
    xs, zs = [x], []
    for layer, block in enumerate(model.blocks[:-1]):
        saved = {}
        with model.hooks([(f"blocks.{layer}.attn.hook_z", lambda z, name: saved.setdefault("z", z))]):
            x = block(x, pos)
        xs.append(x)
        zs.append(saved["z"])
    return xs, pos, zs


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """softmax*(q kᵀ / √d_head) v for the queries q [batch, head, len(idx), d_head] of the destinations ``idx``
    against every position's keys and values [batch, head, pos, d_head]: z [batch, len(idx), head, d_head]."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.arange(k.shape[-2], device=k.device) > idx[:, None], float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


def _qkv(attn, x: torch.Tensor, pos: torch.Tensor, idx: torch.Tensor):
    """A layer's queries at the destinations ``idx`` and every position's keys and values [batch, head, ., d_head]
    from its input x [batch, pos, d_model] (Shortformer: positions enter queries and keys only)."""
    y = x + pos
    return (einsum(y[:, idx], attn.W_Q, "b p d, h d e -> b h p e"), einsum(y, attn.W_K, "b s d, h d e -> b h s e"),
            einsum(x, attn.W_V, "b s d, h d e -> b h s e"))


def _last_layer(model: AttnOnlyTransformer, x: torch.Tensor, pos: torch.Tensor, idx: torch.Tensor):
    """The last layer for the destinations ``idx`` only: x_L there [batch, len(idx), d_model] and what each head
    computed there, z [batch, len(idx), head, d_head], from x_{L-1} [batch, pos, d_model]. The same maths as the
    model's layer (``model.transformer.Attention``)."""
    attn = model.blocks[-1].attn
    z = _attend(*_qkv(attn, x, pos, idx), idx)
    return x[:, idx] + einsum(z, attn.W_O, "b p h e, h e d -> b p d"), z


def _mean_z(model: AttnOnlyTransformer, tokens: torch.Tensor, heads) -> dict[Head, torch.Tensor]:
    """Each head's mean z over the batch and positions of ``tokens`` (what mean ablation writes instead,
    as ``analysis.ablation.ablate`` computes it)."""
    _, cache = model.run_with_cache(tokens)
    return {(l, h): cache[f"blocks.{l}.attn.hook_z"][:, :, h].mean(dim=(0, 1)) for l, h in heads}


@torch.no_grad()
def knockout_losses(model: AttnOnlyTransformer, windows: torch.Tensor, positions: list[int],
                    variants: list[tuple[str, str, list[Head]]], mean_tokens: torch.Tensor | None = None
                    ) -> dict[tuple[str, str], torch.Tensor]:
    """The next-token loss [window, len(positions)] of ``windows`` [n, n_ctx + 1] at ``positions`` for each
    (set, mode, heads) of ``variants``: the model with those heads (all of one layer; none: the intact model)
    knocked out as ``analysis.ablation.ablate`` does, zero or mean ablation.

    All from one pass of the intact model, exactly: a knocked-out head h of layer l only takes
    (z^h - m^h) W_O^h from the residual stream (m^h: zero, or its mean z), so until the next softmax everything
    downstream changes by a product with it. For a head of the last layer that is the logits, by
    (z^h - m^h) W_O^h W_U; for a head of the layer before, the last layer's queries, keys and values, by
    (z^h - m^h) W_O^h W_Q (W_K, W_V), and its attention is computed again. Earlier layers' knock-outs run the
    layers after them again. The last layer is computed at the destinations ``positions`` only."""
    heads_of = {(name, mode): heads for name, mode, heads in variants}
    layer_of = {}
    for key, heads in heads_of.items():
        layers = {l for l, _ in heads}
        if len(layers) > 1:
            raise ValueError("each knock-out must remove heads of one layer")
        layer_of[key] = layers.pop() if layers else None
    wanted = {h for (name, mode), heads in heads_of.items() if mode == "mean" for h in heads}
    means = _mean_z(model, mean_tokens, wanted) if wanted else {}
    last, idx, attn, W_U = model.cfg.n_layers - 1, torch.tensor(positions), model.blocks[-1].attn, model.unembed.W_U
    W_O = lambda l, h: model.blocks[l].attn.W_O[h]  # [d_head, d_model]
    into = {(l, h): [einsum(W_O(l, h), W, "e d, h d f -> h e f") for W in (attn.W_Q, attn.W_K, attn.W_V)]
            for key, heads in heads_of.items() if layer_of[key] == last - 1 for l, h in heads}
    out = {key: [] for key in heads_of}
    for batch in windows.split(BATCH):
        tokens, targets = batch[:, :-1], batch[:, 1:][:, idx]
        xs, pos, zs = _layer_inputs(model, tokens)
        x = xs[last]
        q, k, v = _qkv(attn, x, pos, idx)
        z = _attend(q, k, v, idx)  # [batch, p, head, d_head]
        logits = (x[:, idx] + einsum(z, attn.W_O, "b p h e, h e d -> b p d")) @ W_U
        loss = lambda lg: loss_fn(lg, targets, per_token=True)
        for key, heads in heads_of.items():
            layer = layer_of[key]
            taken = [(h, (z if layer == last else zs[layer])[:, :, h[1]]
                      - (means.get(h, 0.0) if key[1] == "mean" else 0.0)) for h in heads]  # (head, z^h - m^h)
            if layer is None:
                out[key].append(loss(logits))
            elif layer == last:
                out[key].append(loss(logits - sum(d @ (W_O(*h) @ W_U) for h, d in taken)))
            elif layer == last - 1:
                dq, dk, dv = (sum(einsum(d[:, idx] if i == 0 else d, into[h][i], "b s e, h e f -> b h s f")
                                  for h, d in taken) for i in range(3))
                z2 = _attend(q - dq, k - dk, v - dv, idx)
                x2 = x[:, idx] - sum(d[:, idx] @ W_O(*h) for h, d in taken)
                out[key].append(loss((x2 + einsum(z2, attn.W_O, "b p h e, h e d -> b p d")) @ W_U))
            else:
                x2 = xs[layer + 1] - sum(d @ W_O(*h) for h, d in taken)
                for block in model.blocks[layer + 1:-1]:
                    x2 = block(x2, pos)
                out[key].append(loss(model.unembed(_last_layer(model, x2, pos, idx)[0])))
    return {key: torch.cat(parts) for key, parts in out.items()}


# ---- what the heads copy, and what the model predicts on the repeat ---------------------------------------------

def copying_random_level(n_tokens: int) -> float:
    """Olsson et al.'s copying score of a head whose write is unrelated to the token it attends to: the shares of
    the raise over the ``n_tokens`` tokens of a sample sum to 1 and none is favoured, so the attended token gets
    1 / n_tokens on average, a score of 2 / n_tokens - 1 (-0.92 with 25 tokens)."""
    return 2 / n_tokens - 1


@torch.no_grad()
def copying_detail(model: AttnOnlyTransformer, samples: torch.Tensor) -> dict[str, np.ndarray]:
    """Two plainer readings of what Olsson et al.'s copying score averages, per head [layer, head], over the
    tokens t of ``samples`` [n_samples, n_tokens]: ``own_top``, the share of t whose own logit is the one the head
    raises most among the sample's tokens when it attends to t (direct path: W_E[t] W_V W_O W_U), and
    ``own_rank``, the median rank of t's own logit among every token of the vocabulary (0: the top)."""
    W_E, W_U = model.embed.W_E, model.unembed.W_U
    top = np.zeros((model.cfg.n_layers, model.cfg.n_heads))
    rank = np.zeros_like(top)
    n = samples.shape[1]
    for layer, block in enumerate(model.blocks):
        attn, tops, ranks = block.attn, [], []
        for sample in samples:
            written = einsum(W_E[sample], attn.W_V, attn.W_O, "t d, h d e, h e f -> h t f")
            logits = written @ W_U  # [head, t, vocab]: the head's direct effect on every logit, attending to t
            own = logits[:, torch.arange(n), sample]  # [head, t]
            tops.append(logits[:, :, sample].argmax(-1) == torch.arange(n))
            ranks.append((logits > own[..., None]).sum(-1))
        top[layer] = torch.cat(tops, 1).float().mean(1).numpy()
        rank[layer] = torch.cat(ranks, 1).float().median(1).values.numpy()
    return {"own_top": top, "own_rank": rank}


@torch.no_grad()
def repeat_detail(model: AttnOnlyTransformer, repeats: torch.Tensor, heads: list[Head]) -> dict[str, float]:
    """On ``repeat_sequences``: where the correct next token stands in the model's prediction on the first copy
    and on the repeat (its median rank, 0 the top; its median probability; the share of predictions with it in
    the top 10), and on the repeat what ``heads`` (of the last layer) do to it through the direct path: the share
    of predictions where it is the token their output raises most, by how much they raise its logit above the
    mean logit (median, nats), and how far below the model's top logit it would stand without them (median)."""
    n = (repeats.shape[1] - 1) // 2
    logits, cache = model.run_with_cache(repeats[:, :-1])  # [sample, position, vocab]
    target = repeats[:, 1:, None]
    own = logits.log_softmax(-1).gather(-1, target)[..., 0]  # log-probability of the correct token
    rank = (logits > logits.gather(-1, target)).sum(-1).float()
    first, repeat = slice(0, n), slice(n + 1, 2 * n)
    last = model.cfg.n_layers - 1
    write = cache[f"blocks.{last}.attn.hook_result"][:, :, [h for _, h in heads]].sum(2) @ model.unembed.W_U
    raised = write.gather(-1, target)[..., 0] - write.mean(-1)
    without = logits - write
    gap = without.max(-1).values - without.gather(-1, target)[..., 0]
    med = lambda x: float(x.median())
    return {"rank_first": med(rank[:, first]), "rank_repeat": med(rank[:, repeat]),
            "prob_first": med(own[:, first].exp()), "prob_repeat": med(own[:, repeat].exp()),
            "top10_repeat": float((rank[:, repeat] < 10).float().mean()),
            "heads_top": float((write.argmax(-1) == target[..., 0])[:, repeat].float().mean()),
            "heads_raise": med(raised[:, repeat]), "gap_without": med(gap[:, repeat])}


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
        out[f"log_icl_{n}"], out[f"log_icl_se_{n}"] = float(logged.mean()), _se(logged)
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
                         **_summarise(losses[(name, mode)], intact, positions, n_ctx)}
                        for name, mode, heads in knockout_variants(sets)]
    with ablate(model, sets["induction"]):
        out["repeat_loss_2_knockout"] = per_token_loss(model, repeats).mean(0).numpy()
    out.update(knockout_windows=len(windows), knockout_positions=positions, repeat_len=(repeats.shape[1] - 1) // 2,
               n_heads=model.cfg.n_heads, n_ctx=n_ctx, icl_windows=ICL_WINDOWS, sample_len=samples.shape[1])
    return out


def _se(x: torch.Tensor) -> float:
    return float(x.std() / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def _summarise(loss: torch.Tensor, intact: torch.Tensor, positions: list[int], n_ctx: int) -> dict:
    """From the loss [window, position] at ``positions`` (``knockout_positions``): the ICL score and its
    standard error over windows, its change from the intact model's ``intact`` on the same windows with the
    standard error of that paired difference, the mean loss, and the mean loss at each position."""
    score, base = band_scores(loss, positions, n_ctx), band_scores(intact, positions, n_ctx)
    return {"icl": float(score.mean()), "icl_se": _se(score), "change": float((score - base).mean()),
            "change_se": _se(score - base), "mean": float(loss.mean()),
            "by_position": [float(x) for x in loss.mean(0)]}


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


def phase_change_summary(book: Book) -> dict:
    """The phase change read from the 2L model's training log (``train.log.phase_change``), the loss around it
    (``train.log.loss_bump``) and the ICL score before and after it, with the 1L and 0L logs' scores for
    contrast (the 0L model, a bigram table, cannot use the context: its logged score is the text's own)."""
    logs = {n: book.log(n) for n in (0, *LAYERS)}
    window = phase_change(logs[2])
    ev = {n: [r for r in eval_rows(logs[n]) if "icl_score" in r] for n in logs}
    out = {"window": window, "logs": logs, "ev": ev, "first_induction": first_induction(logs[2]),
           "grid": {n: position_loss_grid(logs[n]) for n in LAYERS}, "evaluations": {n: len(ev[n]) for n in LAYERS},
           "best_prefix_1": max((max(r["prefix_matching"][-1]) for r in ev[1]), default=float("nan")),
           "icl_last": {n: float(ev[n][-1]["icl_score"]) if ev[n] else float("nan") for n in logs},
           "icl_final": {n: float(np.mean([r["icl_score"] for r in ev[n][-AROUND:]])) if ev[n] else float("nan")
                         for n in logs}}
    if window is None:
        return out
    s, e = window["start_tokens"], window["end_tokens"]
    before = [r["icl_score"] for r in ev[2] if r["tokens"] <= s][-AROUND:]
    after = [r["icl_score"] for r in ev[2] if r["tokens"] >= e][:AROUND]
    icl_before, icl_after = float(np.mean(before)), float(np.mean(after))
    fall = icl_before - out["icl_final"][2]
    out.update(icl_before=icl_before, icl_after=icl_after,
               drop_share=(icl_before - icl_after) / fall if fall > 0 else float("nan"),
               abrupt=e <= ABRUPT_RATIO * s, bump=loss_bump(logs[2], s, e),
               prefix_start=max(window["start"]["prefix_matching"][-1]),
               prefix_end=max(window["end"]["prefix_matching"][-1]),
               fall_per_doubling=_fall_per_doubling(ev[2], s, e))
    return out


def _fall_per_doubling(ev: list[dict], start: float, end: float) -> dict[str, float]:
    """How fast the validation loss falls (nats per doubling of training tokens) across the window and over
    the ``AROUND`` evaluations before and after it."""
    idx = [i for i, r in enumerate(ev) if start <= r["tokens"] <= end]
    a, b = idx[0], idx[-1]
    rate = lambda i, j: (ev[i]["val_loss"] - ev[j]["val_loss"]) / math.log2(ev[j]["tokens"] / ev[i]["tokens"]) \
        if j > i else float("nan")
    return {"before": rate(max(0, a - AROUND), a), "during": rate(a, b),
            "after": rate(b, min(len(ev) - 1, b + AROUND))}


def seed_summary() -> dict:
    """The committed seed sweep of the published two-layer recipe (the cpu preset's shape, data and schedule; only
    the seed changes), whatever preset this book is built with: its runs, the share of them with both halves of
    the induction circuit at each evaluation, and how many grew them, by when."""
    cpu = get_preset("cpu")
    label = sweep_label({"n_heads": cpu.n_heads, "d_head": cpu.d_head, "compiled_loss": False})
    runs = [run for run in read_sweep(project_root().joinpath(*SWEEP_FILE)) if sweep_label(run) == label]
    grid = sorted({point[0] for run in runs for point in run["curve"]})
    (summary,) = sweep_summary(runs, EARLY_TOKENS)
    return {"runs": runs, "grid": grid, "fraction": induction_fraction(runs, grid)[label], "summary": summary,
            "early_tokens": EARLY_TOKENS, "total_tokens": cpu.train_config(2).total_tokens}


# ---- the findings table ------------------------------------------------------------------------------------

def _verdict(full: bool, part: bool) -> str:
    return "reproduced" if full else "partly" if part else "not reproduced"


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
                 "verdict": _verdict(ev["top"], ev["above_median"]),
                 "rule": "reproduced if the model has induction heads and each has a higher copying score than "
                         "every other head of the one- and two-layer models; partly if each is above the median "
                         "head",
                 "section": SECTION.format("induction-evaluators")})

    i1, i2 = r["icl_1"], r["icl_2"]
    rows.append({"claim": "In-context learning only with ≥ 2 layers (ICL score: late minus early loss)",
                 "paper": "≈ -0.4 nats after the phase change; 1L models: above -0.15",
                 "ours": f"2L {i2:+.3f} ± {r['icl_se_2']:.3f}, 1L {i1:+.3f} ± {r['icl_se_1']:.3f} nats "
                         f"({r['icl_windows']:,} validation windows)",
                 "verdict": _verdict(i2 <= ICL_REACHED and i1 > PAPER_ICL_BEFORE, i2 <= i1 - ICL_GAIN),
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
                 "verdict": _verdict(bool(w) and p["abrupt"] and p["drop_share"] >= DROP_SHARE,
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
                 "ours": (f"largest excess over the trend {b['excess']:+.4f} nats, largest rise {b['rise']:+.4f}; "
                          f"loss falls {p['fall_per_doubling']['during']:.3f} nats per doubling of tokens across the "
                          f"window, {p['fall_per_doubling']['before']:.3f} before") if b else
                         "no phase change to look at" if not w else "too few evaluations around the window",
                 "verdict": _verdict(bumped, False),
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
                 "verdict": _verdict(bool(ind) and k["induction"]["removed"] >= KNOCKOUT_REMOVES
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
                 "verdict": _verdict(has_prev and k["previous"]["removed"] >= KNOCKOUT_REMOVES
                                     and k["control0"]["removed"] <= CONTROL_KEEPS,
                                     has_prev and k["previous"]["removed"] > k["control0"]["removed"]),
                 "rule": f"reproduced if the model has a previous-token head and zeroing it removes at least "
                         f"{KNOCKOUT_REMOVES:.0%} of the ICL score while the layer-0 head with the lowest "
                         f"previous-token score removes at most {CONTROL_KEEPS:.0%}; partly if it removes more than "
                         f"that control",
                 "section": SECTION.format("induction-knockouts")})
    return rows
