"""Our model as a TransformerLens ``HookedTransformer`` (a test and benchmark dependency only).

Our state dict already uses TransformerLens's names and shapes; a ``HookedTransformer`` with
``attn_only=True``, ``positional_embedding_type="shortformer"`` (positions added to the inputs of
W_Q and W_K only), ``normalization_type=None`` and zero biases computes the same function.
Attention scaling: TransformerLens divides scores by ``cfg.attn_scale``, which defaults to
sqrt(d_head) when ``use_attn_scale=True`` (its default) -- the same as ``Attention.scores``.
We pass both explicitly, so a change of default cannot silently change the scores.

Conventions (see ``circuits.circuits``): TransformerLens's ``model.OV`` = ``W_V @ W_O`` is the
transpose of the paper's W_OV (same eigenvalues and norm); ``model.QK`` = ``W_Q @ W_Kᵀ`` equals
the paper's W_QK. transformer-lens is imported lazily: install it from requirements-dev.txt.
"""

from __future__ import annotations

import math
import warnings

from .model import AttnOnlyTransformer


def hooked_transformer_config(model: AttnOnlyTransformer):
    """The ``HookedTransformerConfig`` of a model with our architecture and ``model``'s sizes."""
    from transformer_lens import HookedTransformerConfig

    cfg = model.cfg
    return HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head,
        n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab, d_mlp=None, act_fn=None, attn_only=True,
        positional_embedding_type="shortformer", normalization_type=None,
        use_attn_scale=True, attn_scale=math.sqrt(cfg.d_head),
        init_weights=False, default_prepend_bos=False,
        device=str(model.embed.W_E.device), dtype=model.embed.W_E.dtype,
    )


def to_hooked_transformer(model: AttnOnlyTransformer):
    """A ``transformer_lens.HookedTransformer`` computing the same logits as ``model``.

    Our weights are copied in; every bias (b_Q, b_K, b_V, b_O, b_U) is zero. TransformerLens 3.x
    marks ``HookedTransformer`` as deprecated in favour of ``TransformerBridge`` (which wraps
    Hugging Face models, not ours); the warning is silenced here.
    """
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tl = HookedTransformer(hooked_transformer_config(model), move_to_device=False)
    state = {k: v.detach().clone() for k, v in tl.state_dict().items()}
    ours = model.state_dict()
    missing = set(ours) - set(state)
    if missing:
        raise KeyError(f"HookedTransformer has no parameters named {sorted(missing)}")
    for name, tensor in state.items():
        if name in ours:
            state[name] = ours[name].detach().clone()
        elif name.split(".")[-1].startswith("b_"):
            state[name] = tensor.new_zeros(tensor.shape)
    tl.load_state_dict(state, strict=True)
    return tl.eval()
