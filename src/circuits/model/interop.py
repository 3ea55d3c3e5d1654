"""Our model as a TransformerLens ``HookedTransformer``, and back (TransformerLens: a test dependency only).

Our state dict already uses TransformerLens's names and shapes; a ``HookedTransformer`` with
``attn_only=True``, ``positional_embedding_type="shortformer"`` (positions added to the inputs of
W_Q and W_K only), ``normalization_type=None`` and zero biases computes the same function.
Attention scaling: TransformerLens divides scores by ``cfg.attn_scale``, which defaults to
sqrt(d_head) when ``use_attn_scale=True`` (its default) -- the same as ``Attention.scores``.
We pass both explicitly, so a change of default cannot silently change the scores.

Conventions (see ``circuits.analysis.circuits``): TransformerLens's ``model.OV`` = ``W_V @ W_O`` is the
transpose of the paper's W_OV (same eigenvalues and norm); ``model.QK`` = ``W_Q @ W_Kᵀ`` equals
the paper's W_QK. transformer-lens is imported lazily: install it from requirements-dev.txt.
"""

from __future__ import annotations

import math
import warnings

import torch

from .transformer import AttnOnlyTransformer


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


def _tl_config_problems(cfg) -> list[str]:
    """What keeps a HookedTransformer config from being our architecture (empty: nothing)."""
    wanted = {"attn_only": True, "positional_embedding_type": "shortformer", "normalization_type": None,
              "use_attn_scale": True}
    problems = [f"{key}={getattr(cfg, key, None)!r} (need {value!r})" for key, value in wanted.items()
                if getattr(cfg, key, None) != value]
    if getattr(cfg, "attn_scale", math.sqrt(cfg.d_head)) != math.sqrt(cfg.d_head):
        problems.append(f"attn_scale={cfg.attn_scale} (need sqrt(d_head) = {math.sqrt(cfg.d_head)})")
    if getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads):
        problems.append(f"n_key_value_heads={cfg.n_key_value_heads} (grouped-query attention)")
    if getattr(cfg, "attention_dir", "causal") != "causal":
        problems.append(f"attention_dir={cfg.attention_dir!r} (need 'causal')")
    return problems


def from_hooked_transformer(tl, drop_biases: bool = False) -> AttnOnlyTransformer:
    """Our model computing what ``tl``, a ``transformer_lens.HookedTransformer`` of our architecture, computes:
    attention only, Shortformer positions, no LayerNorm (the inverse of ``to_hooked_transformer``).

    Our model has no biases. Two of TransformerLens's fold away exactly and are absorbed: b_K adds the same
    number to every score of a query row (the softmax ignores it), and b_V becomes Σ_h b_V^h W_O^h added to
    b_O (each row of a pattern sums to 1). What is left, b_Q, that folded b_O and b_U, must be zero; otherwise
    a ``ValueError`` names each bias and its largest entry, unless ``drop_biases`` (the model then computes
    other logits; compare them before reading its circuits).
    """
    from circuits.config import ModelConfig

    cfg = tl.cfg
    problems = _tl_config_problems(cfg)
    if problems:
        raise ValueError("not an attention-only Shortformer model without LayerNorm: " + "; ".join(problems))
    ours = AttnOnlyTransformer(ModelConfig(n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads,
                                           d_head=cfg.d_head, n_ctx=cfg.n_ctx, d_vocab=cfg.d_vocab))
    state = {k: v.detach().float().cpu() for k, v in tl.state_dict().items()}
    left = {}
    for l in range(cfg.n_layers):
        p = f"blocks.{l}.attn."
        b_O = state.get(p + "b_O", torch.zeros(cfg.d_model)) + torch.einsum(
            "he,hed->d", state.get(p + "b_V", torch.zeros(cfg.n_heads, cfg.d_head)), state[p + "W_O"])
        left[p + "b_Q"], left[p + "b_O (with b_V folded in)"] = state.get(p + "b_Q"), b_O
    left["unembed.b_U"] = state.get("unembed.b_U")
    nonzero = {k: float(v.abs().max()) for k, v in left.items() if v is not None and bool(v.abs().max() > 0)}
    if nonzero and not drop_biases:
        raise ValueError("biases our model cannot hold are not zero (largest entries: "
                         + ", ".join(f"{k} {v:.3g}" for k, v in nonzero.items()) + "); pass drop_biases=True "
                         "to load the weights without them")
    weights = {k: state[k] for k in ours.state_dict()}  # our names are TransformerLens's
    ours.load_state_dict(weights, strict=True)
    return ours.eval()


def hooked_transformer_from_file(path, **config) -> "object":
    """A ``HookedTransformer`` of our architecture built from ``config`` (``HookedTransformerConfig``'s fields,
    ours filled in: attention only, Shortformer, no LayerNorm) with the weights of a local file: safetensors,
    or a torch state dict read with ``weights_only=True`` (tensors only, no code). Nothing is downloaded.

    ARENA's two-layer attention-only model (``attn_only_2L_half.pth``) is ``n_layers=2, d_model=768, n_heads=12,
    d_head=64, n_ctx=2048, d_vocab=50278``; then ``from_hooked_transformer(..., drop_biases=...)``.
    """
    from pathlib import Path

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    defaults = dict(attn_only=True, positional_embedding_type="shortformer", normalization_type=None,
                    d_mlp=None, act_fn=None, init_weights=False, default_prepend_bos=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tl = HookedTransformer(HookedTransformerConfig(**{**defaults, **config}), move_to_device=False)
    missing, unexpected = tl.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.split(".")[-1].startswith(("b_", "IGNORE", "mask"))]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit that config: missing {missing[:4]}, unexpected {list(unexpected)[:4]}")
    return tl.eval()
