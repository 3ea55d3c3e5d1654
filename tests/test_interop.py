"""Our model and circuit maths against TransformerLens (installed from requirements-dev.txt)."""

import dataclasses

import pytest
import torch

transformer_lens = pytest.importorskip(
    "transformer_lens", reason="transformer-lens is a dev dependency: pip install -r requirements-dev.txt")

from circuits.circuits import ov_circuit, qk_circuit, w_ov, w_qk  # noqa: E402
from circuits.composition import KINDS, composition_scores  # noqa: E402
from circuits.interop import to_hooked_transformer  # noqa: E402
from circuits.model import AttnOnlyTransformer  # noqa: E402


def model_with(cfg, n_layers, init_std=0.1):
    model = AttnOnlyTransformer(dataclasses.replace(cfg, n_layers=n_layers, init_std=init_std))
    model.reset_parameters(torch.Generator().manual_seed(n_layers))
    return model.requires_grad_(False)


def same_spectrum(ours: torch.Tensor, theirs: torch.Tensor, tol: float):
    """Eigenvalue multisets equal (greedy nearest matching)."""
    theirs = theirs.to(torch.complex128).tolist()
    for z in ours.to(torch.complex128).tolist():
        i = min(range(len(theirs)), key=lambda j: abs(z - theirs[j]))
        assert abs(z - theirs[i]) < tol * (1 + abs(z)), (z, theirs[i])
        theirs.pop(i)


@pytest.mark.parametrize("n_layers", [0, 1, 2])
def test_same_logits_and_scores(tiny_cfg, n_layers):
    model = model_with(tiny_cfg, n_layers)
    tl = to_hooked_transformer(model)
    assert tl.cfg.positional_embedding_type == "shortformer" and tl.cfg.attn_scale == pytest.approx(8 ** 0.5)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (3, tiny_cfg.n_ctx), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs, tl_cache = tl.run_with_cache(tokens)
    ours, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(theirs, model(tokens), atol=1e-5, rtol=1e-5)
    for layer in range(n_layers):
        torch.testing.assert_close(tl_cache[f"blocks.{layer}.attn.hook_pattern"], cache[f"blocks.{layer}.attn.pattern"])
        torch.testing.assert_close(tl_cache[f"blocks.{layer}.attn.hook_attn_scores"], cache[f"blocks.{layer}.attn.scores"])


def test_ov_and_qk_are_transposes_or_equal(tiny_cfg):
    """TransformerLens's OV (W_V W_O) is the transpose of the paper's W_OV; its QK is the paper's W_QK."""
    model = model_with(tiny_cfg, 2)
    tl = to_hooked_transformer(model)
    for layer in range(2):
        torch.testing.assert_close(tl.OV[layer].AB, w_ov(model, layer).dense().mT)
        torch.testing.assert_close(tl.QK[layer].AB, w_qk(model, layer).dense())
        full_ov = tl.W_E @ tl.OV[layer] @ tl.W_U  # TransformerLens: [src, out]
        torch.testing.assert_close(full_ov.AB, ov_circuit(model, layer).dense().mT)
        full_qk = tl.W_E @ tl.QK[layer] @ tl.W_E.T  # [dst, src]
        torch.testing.assert_close(full_qk.AB, qk_circuit(model, layer).dense())


def test_same_ov_eigenvalues(tiny_cfg):
    model = model_with(tiny_cfg, 2)
    tl = to_hooked_transformer(model)
    for layer in range(2):
        ours = w_ov(model, layer).eigenvalues()
        theirs = tl.OV[layer].eigenvalues
        assert ours.shape == theirs.shape == (tiny_cfg.n_heads, tiny_cfg.d_head)
        circuit_ours = ov_circuit(model, layer).eigenvalues()
        circuit_theirs = (tl.W_E @ tl.OV[layer] @ tl.W_U).eigenvalues
        for h in range(tiny_cfg.n_heads):
            same_spectrum(ours[h], theirs[h], tol=1e-4)
            same_spectrum(circuit_ours[h], circuit_theirs[h], tol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_same_composition_scores(tiny_cfg, kind):
    """all_composition_scores(kind)[0, h1, 1, h2] forms the transposed row-vector products
    (OV @ QK, OV @ QK.T, OV_h1 @ OV_h2); Frobenius norms agree with the paper's column-vector order."""
    model = model_with(tiny_cfg, 2)
    tl = to_hooked_transformer(model)
    theirs = tl.all_composition_scores(kind)[0, :, 1, :]  # [h1, h2]
    torch.testing.assert_close(composition_scores(model, kind), theirs, rtol=1e-4, atol=1e-6)
