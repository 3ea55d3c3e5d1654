"""The whole analysis runs on a model trained elsewhere: a TransformerLens HookedTransformer of our architecture
(built here, no download), turned into ours by ``from_hooked_transformer`` and handed to the book's chapters."""

import warnings

import pytest
import torch

transformer_lens = pytest.importorskip("transformer_lens")

from circuits.findings import framework, induction, one_layer, two_layer  # noqa: E402
from circuits.findings.context import open_book  # noqa: E402
from circuits.model.interop import from_hooked_transformer  # noqa: E402


def hooked(n_layers: int, preset):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(n_layers)
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=preset.d_model, n_heads=preset.n_heads,
                                  d_head=preset.d_head, n_ctx=preset.n_ctx, d_vocab=preset.d_vocab, attn_only=True,
                                  positional_embedding_type="shortformer", normalization_type=None, d_mlp=None,
                                  act_fn=None, initializer_range=0.2)
    with warnings.catch_warnings():  # TransformerLens 3 marks HookedTransformer deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedTransformer(cfg, move_to_device=False).eval()


def test_every_chapter_measures_a_transformer_lens_model(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    book = open_book("smoke")
    theirs = {n: hooked(n, book.preset) for n in (1, 2)}
    ours = {n: from_hooked_transformer(tl) for n, tl in theirs.items()}
    book = book.use_models(ours)
    tokens = book.windows(2)[:, :-1]
    with torch.no_grad():
        torch.testing.assert_close(book.model(2)(tokens), theirs[2](tokens), atol=1e-4, rtol=1e-4)
    r2 = two_layer.results(book)  # composition, induction circuits, term importance, virtual heads
    assert len(r2["comp_K"]) == book.preset.n_heads
    r1 = one_layer.results(book)  # skip-trigrams, copying, positional heads
    assert len(r1["positivity"]) == book.preset.n_heads
    ri = induction.results(book)  # Olsson's scores, ICL, knock-outs
    assert "prefix_2" in ri and "icl_2" in ri
    assert framework.results(book)  # the framework's identities hold for any model of this architecture
    rows = framework.findings_rows(book)
    assert rows and all(row["verdict"] == "reproduced" for row in rows)
    with pytest.raises(ValueError, match="cannot stand in"):
        book.use_models({1: ours[2]})
