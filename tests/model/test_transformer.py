"""The model: TransformerLens names and shapes, exact per-head decomposition, input checks."""

import pytest
import torch

from circuits.config import ModelConfig, get_preset
from circuits.model.transformer import AttnOnlyTransformer


def randomised(cfg: ModelConfig) -> AttnOnlyTransformer:
    """A model with large random weights, so attention patterns are far from uniform."""
    model = AttnOnlyTransformer(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.4)
    return model


def test_parameter_names_and_shapes(tiny_cfg):
    c = tiny_cfg
    shapes = {k: tuple(v.shape) for k, v in AttnOnlyTransformer(c).state_dict().items()}
    expected = {"embed.W_E": (c.d_vocab, c.d_model), "pos_embed.W_pos": (c.n_ctx, c.d_model),
                "unembed.W_U": (c.d_model, c.d_vocab)}
    for l in range(c.n_layers):
        for w in "QKV":
            expected[f"blocks.{l}.attn.W_{w}"] = (c.n_heads, c.d_model, c.d_head)
        expected[f"blocks.{l}.attn.W_O"] = (c.n_heads, c.d_head, c.d_model)
    assert shapes == expected


def test_fast_and_explicit_paths_agree(tiny_cfg):
    model = randomised(tiny_cfg)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (3, tiny_cfg.n_ctx))
    fast = model(tokens)
    explicit, _ = model.run_with_cache(tokens)
    assert fast.shape == (3, tiny_cfg.n_ctx, tiny_cfg.d_vocab)
    torch.testing.assert_close(fast, explicit, rtol=1e-4, atol=1e-4)


def test_head_outputs_sum_to_layer_output(tiny_cfg):
    model = randomised(tiny_cfg)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (2, 17))
    _, cache = model.run_with_cache(tokens)
    x = cache["blocks.0.hook_resid_pre"]
    pos = model.pos_embed.W_pos[:17]
    layer_out = model.blocks[0].attn(x, pos)  # fast path of layer 0 alone
    torch.testing.assert_close(cache["blocks.0.attn.hook_result"].sum(2), layer_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cache["blocks.1.hook_resid_pre"], x + layer_out, rtol=1e-4, atol=1e-4)


def test_patterns_are_causal_distributions(tiny_cfg):
    model = randomised(tiny_cfg)
    _, cache = model.run_with_cache(torch.randint(0, tiny_cfg.d_vocab, (2, 10)))
    pattern = cache["blocks.1.attn.hook_pattern"]
    assert pattern.shape == (2, tiny_cfg.n_heads, 10, 10)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, tiny_cfg.n_heads, 10))
    assert (pattern.triu(1) == 0).all()


def test_positions_enter_only_queries_and_keys(tiny_cfg):
    """Shortformer: the residual stream holds tokens only, and values ignore W_pos."""
    model = randomised(tiny_cfg)
    tokens = torch.randint(0, tiny_cfg.d_vocab, (1, 9))
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], model.embed.W_E[tokens])
    attn = model.blocks[0].attn
    pattern = cache["blocks.0.attn.hook_pattern"]
    x = cache["blocks.0.hook_resid_pre"]
    torch.testing.assert_close(attn.head_outputs(x, pattern), cache["blocks.0.attn.hook_result"])
    moved = attn.scores(x, model.pos_embed.W_pos[:9] + 1.0).softmax(-1)
    assert not torch.allclose(moved, pattern), "positions must change the attention pattern"


def test_zero_layer_model_is_bigram_table():
    cfg = ModelConfig(n_layers=0, d_model=16, n_heads=2, d_head=8, n_ctx=8, d_vocab=30)
    model = randomised(cfg)
    tokens = torch.randint(0, 30, (2, 8))
    torch.testing.assert_close(model(tokens), model.embed.W_E[tokens] @ model.unembed.W_U)


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([[1, 2, 61]]), "token id 61 is outside the vocabulary"),
    (torch.tensor([[1, -1]]), "token id -1 is outside the vocabulary"),
    (torch.zeros(1, 25, dtype=torch.long), "longer than the model's context n_ctx=24"),
    (torch.zeros(1, 3), "must be an integer tensor"),
    (torch.zeros(1, 0, dtype=torch.long), "tokens is empty"),
])
def test_bad_tokens_raise_clear_errors(tiny_cfg, bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        AttnOnlyTransformer(tiny_cfg)(bad)


def test_unknown_preset_is_named(monkeypatch):
    monkeypatch.setenv("CIRCUITS_PRESET", "gigantic")
    with pytest.raises(ValueError, match="unknown preset 'gigantic'.*cpu.*paper.*smoke"):
        get_preset()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="n_layers must be >= 0"):
        ModelConfig(n_layers=-1, d_model=8, n_heads=1, d_head=8, n_ctx=4, d_vocab=5)


def test_embedding_init_scale_is_configurable(tiny_cfg):
    import dataclasses

    model = AttnOnlyTransformer(dataclasses.replace(tiny_cfg, embed_init_std=1.0))
    assert 0.9 < model.embed.W_E.std().item() < 1.1 and 0.8 < model.pos_embed.W_pos.std().item() < 1.2
    assert model.blocks[0].attn.W_Q.std().item() < 0.03


def test_sinusoidal_position_init():
    """pos_init="sinusoidal": W_pos is the sin/cos table at the embedding RMS, the same for every seed;
    W_E stays random. Unknown names are refused."""
    import dataclasses

    cfg = ModelConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, n_ctx=12, d_vocab=30, embed_init_std=1.0,
                      pos_init="sinusoidal")
    torch.manual_seed(0)
    a = AttnOnlyTransformer(cfg)
    torch.manual_seed(1)
    b = AttnOnlyTransformer(cfg)
    W = a.pos_embed.W_pos
    torch.testing.assert_close(W, b.pos_embed.W_pos)
    assert not torch.equal(a.embed.W_E, b.embed.W_E)
    assert W.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-5)
    scale = W[:, 1].abs().max()  # column 1 is cos(pos): 1 at pos 0
    torch.testing.assert_close(W[:, 0] / scale, torch.sin(torch.arange(12.0)))
    torch.testing.assert_close(W[:, 3] / scale, torch.cos(torch.arange(12.0) / 10000 ** (2 / 16)))
    with pytest.raises(ValueError, match="pos_init"):
        dataclasses.replace(cfg, pos_init="rotary")
    with pytest.raises(ValueError, match="pos_init_std must be > 0, got -1.0"):
        dataclasses.replace(cfg, pos_init_std=-1.0)
    with pytest.raises(ValueError, match="embed_init_std must be > 0"):
        dataclasses.replace(cfg, embed_init_std=0.0)
