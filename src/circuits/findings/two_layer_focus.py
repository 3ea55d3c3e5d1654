"""The two-layer chapter's focus head (paper "Two-Layer Attention-Only Transformers", "Term Importance Analysis"):
the layer-0 head whose single-head term costs most to remove, measured from every side; and the layer-1 head
furthest from the induction heads' (+, +) corner, measured on text. ``findings.two_layer`` calls ``focus_head`` and
``outlier_head`` once per build and keeps their numbers (``focus``, ``const_share``, ``focus_*``, ``q_*``, ``v_*``;
``outlier``, ``outlier_*``, ``peak``) in its results.
"""

from __future__ import annotations

import numpy as np
import torch

from circuits.analysis.ablation import ablate
from circuits.analysis.composition import patterns_without_writer
from circuits.analysis.induction import source_preference
from circuits.analysis.term_importance import constant_share, term_effect, virtual_head_terms
from circuits.metrics.losses import loss_fn, per_token_loss

N_FAVOURED = 4  # source tokens listed as the ones a head favours
N_SOURCES = 3  # source tokens listed as the ones the outlier's strongest attention lands on most


def mean_distance(pattern: torch.Tensor) -> float:
    """How far back a pattern [batch, dst, src] looks, in tokens: the attention-weighted distance, averaged over
    destinations."""
    n = pattern.shape[-1]
    dist = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).clamp_min(0).to(pattern.dtype)
    return float((pattern * dist).sum(-1).mean())


@torch.no_grad()
def outlier_head(cache, text, qk, ov) -> dict:
    """The layer-1 head furthest from the (+, +) corner, ``outlier`` (smallest sum of its QK and OV
    eigen-positivity, ``qk`` and ``ov`` [head]), measured on ``text`` [batch, pos]. ``peak`` [head]: how sharp each
    layer-1 head's attention is, the largest weight of a row averaged over destinations after the first;
    ``outlier_first``: the outlier's mean attention to the first position (same destinations); ``outlier_dist``:
    how far back it looks; ``outlier_sources``: the tokens its largest weight lands on most often, and
    ``outlier_source_share`` the share of rows whose largest weight is on one of them."""
    p1 = cache["blocks.1.attn.hook_pattern"]  # [b, H, dst, src]
    o = int(np.argmin(np.asarray(qk) + np.asarray(ov)))
    top = p1[:, o, 1:].argmax(-1)  # [b, dst - 1]: each row's strongest source
    tokens = torch.gather(text, 1, top).flatten()
    sources = torch.bincount(tokens, minlength=1).argsort(descending=True)[:N_SOURCES]
    return {"outlier": o, "peak": p1[:, :, 1:].max(-1).values.mean(dim=(0, 2)).numpy(),
            "outlier_first": float(p1[:, o, 1:, 0].mean()), "outlier_dist": mean_distance(p1[:, o]),
            "outlier_sources": [int(t) for t in sources],
            "outlier_source_share": float(torch.isin(tokens, sources).float().mean())}


@torch.no_grad()
def focus_head(model, windows, cache, base, single0, comp_q, virtual_loss, allowed, counts) -> dict:
    """The layer-0 head with the largest single-head term, ``focus``, measured from every side: how much of every
    head's single-head term is one constant vector (``const_share`` [layer, head]; a bias, which the model has no
    other way to learn), the head's effect with that constant kept, what it attends to (``focus_favoured``: the
    source tokens it prefers most), what the logits of its constant part follow, what the layer-1 head it
    Q-composes with most (``q_partner``) does when its queries lose the head's output (zeros, or the mean put
    back), and the virtual head through it that matters most (``v_partner``). ``base``: the model's loss on
    ``windows``."""
    text = windows[:, :-1]
    x0, p0 = cache["blocks.0.hook_resid_pre"], cache["blocks.0.attn.hook_pattern"]
    p1 = cache["blocks.1.attn.hook_pattern"]
    first = model.blocks[0].attn.head_outputs(x0, p0)  # [b, p, H, d]: layer 0's outputs (its single-head terms)
    shares = torch.stack([constant_share(first), constant_share(model.blocks[1].attn.head_outputs(x0, p1))])
    f = int(np.argmax(single0))
    out = first[:, :, f]  # [b, p, d]
    mean = out.mean(dim=(0, 1))  # [d_model]
    ablated = {}
    for mode in ("zero", "mean"):  # the whole model with the head knocked out: zeros, or its mean output
        with ablate(model, [(0, f)], mode, mean_tokens=text):
            ablated[mode] = float(per_token_loss(model, windows).mean()) - base
    logit = mean @ model.unembed.W_U  # [d_vocab]: what the constant part does to the logits
    freq = torch.log(torch.as_tensor(np.asarray(counts), dtype=torch.float64)[allowed] + 1)
    corr = float(np.corrcoef(logit[allowed].double().numpy(), freq.numpy())[0, 1])
    raised = allowed[logit[allowed].argsort(descending=True)[:N_FAVOURED]]
    ratio, count = source_preference(p0[:, f], text, model.cfg.d_vocab)
    seen = torch.nonzero(count >= max(5, text.numel() // 400)).flatten()  # tokens seen often in the windows
    favoured = seen[ratio[seen].argsort(descending=True)[:N_FAVOURED]]
    mean_dist = mean_distance(p0[:, f])

    # Q-composition on text: layer 1's queries without the head's output (zeros) or with its mean in its place
    q_partner = int(np.argmax(np.asarray(comp_q)[f]))
    pats = {"zero": patterns_without_writer(model, cache, (0, f), 1, "q"),
            "mean": patterns_without_writer(model, cache, (0, f), 1, "q", replacement=mean)}
    targets = windows[:, 1:]

    def patched_loss(new, heads):  # the model's loss with the patterns of ``heads`` of layer 1 replaced
        def hook(a, name):
            a = a.clone()
            a[:, heads] = new[:, heads]
            return a
        logits = model.run_with_hooks(text, [("blocks.1.attn.hook_pattern", hook)])
        return float(loss_fn(logits, targets)) - base

    every = list(range(model.cfg.n_heads))
    q = {}
    for mode, new in pats.items():
        q[f"q_tv_{mode}"] = (0.5 * (new - p1).abs().sum(-1)).mean(dim=(0, 2)).numpy()  # [h2]: attention moved
        q[f"q_loss_{mode}"] = patched_loss(new, [q_partner])
        q[f"q_loss_all_{mode}"] = patched_loss(new, every)

    # the virtual head through it that matters most (on the virtual-head windows), measured on all windows
    v_partner = int(np.argmax(np.asarray(virtual_loss)[f]))
    vterm = virtual_head_terms(model, text, cache, 0, 1, head1=f)[v_partner]  # [b, p, d]
    return {"focus": f, "const_share": shares.numpy(), "focus_mean_effect": term_effect(model, windows, out, cache,
                                                                                         keep_mean=True),
            "focus_ablated_zero": ablated["zero"], "focus_ablated_mean": ablated["mean"], "focus_freq_corr": corr,
            "focus_raised": [int(t) for t in raised], "focus_favoured": [int(t) for t in favoured],
            "focus_mean_dist": mean_dist, "q_partner": q_partner, **q, "v_partner": v_partner,
            "v_const_share": float(constant_share(vterm)), "v_effect": term_effect(model, windows, vterm, cache),
            "v_effect_mean": term_effect(model, windows, vterm, cache, keep_mean=True)}
