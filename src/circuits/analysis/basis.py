"""The residual stream has no privileged basis (paper "The Residual Stream" and "Privileged Basis").

Every weight of an attention-only transformer either writes the residual stream (``W_E``, ``W_pos``, ``W_O``)
or reads it (``W_Q``, ``W_K``, ``W_V``, ``W_U``), and nothing acts on its coordinates one at a time. So any
orthogonal ``R [d_model, d_model]`` applied to every writer, with ``Rᵀ`` applied to every reader, gives a model
that computes exactly the same function (row vectors, ``x -> x R``):

    W_E -> W_E R,     W_pos -> W_pos R,     W_O^h -> W_O^h R                      (writers)
    W_Q^h -> Rᵀ W_Q^h,  W_K^h -> Rᵀ W_K^h,  W_V^h -> Rᵀ W_V^h,   W_U -> Rᵀ W_U   (readers)

Each reader sees ``(x R)(Rᵀ W) = x W``: its input is unchanged, the attention patterns are unchanged, and the
new residual stream is the old one rotated, ``x R``. (In the paper's column vectors: ``W_E -> Rᵀ W_E``,
``W_U -> W_U R``, ...; any invertible map would do, an orthogonal one also keeps norms.) A per-coordinate
nonlinearity f breaks this: ``f(x R) Rᵀ != f(x)``, which is what makes a basis privileged.
"""

from __future__ import annotations

import torch

from circuits.model.transformer import AttnOnlyTransformer


def random_orthogonal(d: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random orthogonal matrix [d, d], uniform over the orthogonal group (Haar): the QR decomposition of a
    Gaussian matrix with the signs of R's diagonal moved into Q (Mezzadri 2007). Computed in float64."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


@torch.no_grad()
def rotate_residual(model: AttnOnlyTransformer, R: torch.Tensor) -> AttnOnlyTransformer:
    """A copy of ``model`` whose residual stream is the original's times ``R`` [d_model, d_model] (orthogonal):
    writers ``W_E, W_pos, W_O`` multiplied by R on the right, readers ``W_Q, W_K, W_V, W_U`` by Rᵀ on the left
    (module docstring). Its logits equal the original's up to float rounding."""
    d = model.cfg.d_model
    if R.shape != (d, d):
        raise ValueError(f"R must be [d_model, d_model] = [{d}, {d}], got {tuple(R.shape)}")
    R64 = R.double()
    if not torch.allclose(R64 @ R64.T, torch.eye(d, dtype=torch.float64), atol=1e-5):
        raise ValueError("R is not orthogonal (R Rᵀ != I)")
    rotated = AttnOnlyTransformer(model.cfg).to(model.embed.W_E.device)
    writers = ("embed.W_E", "pos_embed.W_pos", ".attn.W_O")  # [..., d_model] in the last dimension
    readers = (".attn.W_Q", ".attn.W_K", ".attn.W_V", "unembed.W_U")  # [..., d_model, k]
    state = {}
    for name, w in model.state_dict().items():
        w64 = w.double()
        if name.endswith(writers):
            w64 = w64 @ R64.to(w.device)
        elif name.endswith(readers):
            w64 = R64.T.to(w.device) @ w64
        else:
            raise KeyError(f"{name}: neither a reader nor a writer of the residual stream")
        state[name] = w64.to(w.dtype)
    rotated.load_state_dict(state)
    return rotated.requires_grad_(False).eval()
