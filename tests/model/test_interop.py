"""Our model and circuit maths against TransformerLens (installed from requirements-dev.txt)."""

import dataclasses

import pytest
import torch

transformer_lens = pytest.importorskip(
    "transformer_lens", reason="transformer-lens is a dev dependency: pip install -r requirements-dev.txt")

from circuits.analysis.circuits import ov_circuit, qk_circuit, w_ov, w_qk  # noqa: E402
from circuits.analysis.composition import KINDS, composition_scores  # noqa: E402
from circuits.model.interop import to_hooked_transformer  # noqa: E402
from circuits.model.transformer import AttnOnlyTransformer  # noqa: E402


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
        torch.testing.assert_close(tl_cache[f"blocks.{layer}.attn.hook_pattern"], cache[f"blocks.{layer}.attn.hook_pattern"])
        torch.testing.assert_close(tl_cache[f"blocks.{layer}.attn.hook_attn_scores"], cache[f"blocks.{layer}.attn.hook_attn_scores"])


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


def test_hook_points_have_transformer_lens_names(tiny_cfg):
    """Every hook point both models have holds the same activation under the same name."""
    model = model_with(tiny_cfg, 2)
    tl = to_hooked_transformer(model)
    tl.set_use_attn_result(True)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, theirs = tl.run_with_cache(tokens)
    _, ours = model.run_with_cache(tokens)
    shared = set(ours) & set(theirs.keys())
    assert {"hook_embed", "blocks.0.hook_resid_pre", "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_result",
            "blocks.1.hook_attn_out", "blocks.1.hook_resid_post"} <= shared
    for name in shared:  # hook_pos_embed: ours [pos, d_model], theirs broadcast over the batch
        torch.testing.assert_close(ours[name].expand_as(theirs[name]), theirs[name], atol=1e-5, rtol=1e-5, msg=name)


def hooked(cfg, n_layers=2, **extra):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(n_layers)
    fields = dict(n_layers=n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head, n_ctx=cfg.n_ctx,
                  d_vocab=cfg.d_vocab, attn_only=True, positional_embedding_type="shortformer",
                  normalization_type=None, d_mlp=None, act_fn=None, initializer_range=0.1)
    return HookedTransformer(HookedTransformerConfig(**{**fields, **extra}), move_to_device=False).eval()


def test_from_hooked_transformer_computes_the_same_and_analyses(tiny_cfg):
    from circuits.metrics.olsson import prefix_matching_scores
    from circuits.model.interop import from_hooked_transformer

    tl = hooked(tiny_cfg)
    model = from_hooked_transformer(tl)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (3, tiny_cfg.n_ctx), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), tl(tokens), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(composition_scores(model, "K"),  # the analysis runs on it as on our own models
                               composition_scores(from_hooked_transformer(to_hooked_transformer(model)), "K"))
    assert prefix_matching_scores(model, tokens).shape == (2, tiny_cfg.n_heads)
    for name, ours in model.state_dict().items():  # and it is the exact inverse of the export
        torch.testing.assert_close(to_hooked_transformer(model).state_dict()[name], ours)


def test_foldable_biases_fold_exactly(tiny_cfg):
    """b_K cancels in the softmax; b_V moves into b_O (pattern rows sum to 1): with b_O = -Σ_h b_V W_O the model
    has no bias left, and ours computes TransformerLens's logits."""
    from circuits.model.interop import from_hooked_transformer

    tl = hooked(tiny_cfg)
    with torch.no_grad():
        for block in tl.blocks:
            block.attn.b_K.normal_(0, 1.0)
            block.attn.b_V.normal_(0, 1.0)
            block.attn.b_O.copy_(-torch.einsum("he,hed->d", block.attn.b_V, block.attn.W_O))
    tokens = torch.randint(0, tiny_cfg.d_vocab, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(from_hooked_transformer(tl)(tokens), tl(tokens), atol=1e-4, rtol=1e-4)


def test_other_biases_and_architectures_are_named(tiny_cfg):
    from circuits.model.interop import from_hooked_transformer

    tl = hooked(tiny_cfg)
    with torch.no_grad():
        tl.blocks[1].attn.b_Q[0, 0] = 0.5
        tl.unembed.b_U[3] = -2.0
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.b_Q 0\.5.*unembed\.b_U 2.*drop_biases"):
        from_hooked_transformer(tl)
    assert from_hooked_transformer(tl, drop_biases=True).cfg.n_layers == 2
    with pytest.raises(ValueError, match="normalization_type='LN'"):
        from_hooked_transformer(hooked(tiny_cfg, normalization_type="LN"))
    with pytest.raises(ValueError, match="positional_embedding_type='standard'"):
        from_hooked_transformer(hooked(tiny_cfg, positional_embedding_type="standard"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_model_from_a_local_file(tmp_path, tiny_cfg, suffix):
    """A published model of this shape (ARENA's, say) loads from a file on disk: no download."""
    from safetensors.torch import save_file

    from circuits.model.interop import from_hooked_transformer, hooked_transformer_from_file

    tl = hooked(tiny_cfg)
    path = tmp_path / f"model{suffix}"
    state = {k: v.contiguous() for k, v in tl.state_dict().items() if not k.endswith(("IGNORE", "mask"))}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    loaded = hooked_transformer_from_file(path, n_layers=2, d_model=tiny_cfg.d_model, n_heads=tiny_cfg.n_heads,
                                          d_head=tiny_cfg.d_head, n_ctx=tiny_cfg.n_ctx, d_vocab=tiny_cfg.d_vocab)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(from_hooked_transformer(loaded)(tokens), tl(tokens), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="does not fit that config"):
        hooked_transformer_from_file(path, n_layers=1, d_model=tiny_cfg.d_model, n_heads=tiny_cfg.n_heads,
                                     d_head=tiny_cfg.d_head, n_ctx=tiny_cfg.n_ctx, d_vocab=tiny_cfg.d_vocab)
    with pytest.raises(FileNotFoundError):
        hooked_transformer_from_file(tmp_path / "missing.pth", n_layers=2)
