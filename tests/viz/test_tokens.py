"""Readable tokens: spaces, newlines and tabs visible; skip-trigrams in the paper's notation."""

from circuits.viz.tokens import show_token, skip_trigram, token_labels


def test_tokens_are_readable():
    assert show_token(" the") == "·the"
    assert show_token("\n\n") == "↵↵"
    assert show_token("\tx") == "→x"
    assert show_token("") == "∅"
    assert show_token("(") == "("
    assert token_labels([1, 2], lambda i: {1: " a", 2: "b\n"}[i]) == ["·a", "b↵"]
    assert skip_trigram("·keep", "·in", "·mind") == "·keep … ·in → ·mind"
