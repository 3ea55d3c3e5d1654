"""Preset overrides for training trials: typed values, the untouched preset, clear errors."""

import pytest

from circuits.config import get_preset, override


def test_override_sets_model_train_and_length_fields_and_leaves_the_preset_alone():
    cpu = get_preset("cpu")
    trial = override(cpu, ["d_model=128", "d_head=16", "train.lr=1e-2", "train.betas=0.9,0.99",
                           "total_tokens.2=20e6", "embed_init_std=none", "train.compile=true",
                           "data.tokenizer=bpe4k", "d_vocab=4096"])
    cfg, train = trial.model_config(2), trial.train_config(2)
    assert (cfg.d_model, cfg.d_head, cfg.n_heads, cfg.embed_init_std) == (128, 16, cpu.n_heads, None)
    assert (train.lr, train.betas, train.total_tokens, train.compile) == (1e-2, (0.9, 0.99), 20_000_000, True)
    assert (trial.data.tokenizer, trial.data.corpus, cfg.d_vocab) == ("bpe4k", cpu.data.corpus, 4096)
    assert train.batch_size == cpu.train.batch_size and trial.train_config(1).total_tokens == cpu.total_tokens[1]
    assert cpu.d_model == 256 and cpu.total_tokens[2] == 40_000_000 and override(cpu, []) == cpu


@pytest.mark.parametrize("item, message", [
    ("d_model", "not key=value"),
    ("width=3", "unknown override key 'width'"),
    ("train.speed=3", "unknown override key 'train.speed'"),
    ("name=other", "unknown override key 'name'"),
    ("d_model=1.5", "d_model='1.5': expected a value like 256"),
    ("train.compile=maybe", "expected a value like False"),
    ("train.lr=none", "train.lr='none': expected a value like 0.005"),
    ("data.size=3", "unknown override key 'data.size'"),
])
def test_bad_overrides_are_named(item, message):
    with pytest.raises(ValueError, match=message):
        override(get_preset("cpu"), [item])
