"""Readable tokens: spaces, newlines and tabs visible; skip-trigrams in the paper's notation."""

from circuits.viz.tokens import show_token, skip_trigram


def test_tokens_are_readable():
    assert show_token(" the") == "·the"
    assert show_token("\n\n") == "↵↵"
    assert show_token("\tx") == "⇥x"
    assert show_token("") == "∅"
    assert show_token("(") == "("
    assert skip_trigram("·keep", "·in", "·mind") == "·keep … ·in → ·mind"


def test_control_characters_and_split_characters_are_visible():
    from circuits.data.tokenizer import load_tokenizer, token_bytes
    from circuits.viz.tokens import show_bytes

    assert show_token("\x1f") == "⟨1f⟩" and show_token("a\rb") == "a␍b"
    assert show_bytes("é".encode()) == "é" and show_bytes("é".encode()[:1]) == "⟨c3⟩"
    gpt2 = load_tokenizer("gpt2")
    assert show_bytes(token_bytes(gpt2, 447)) == "⟨e2⟩⟨80⟩"  # the first two bytes of a three-byte character
    assert show_bytes(token_bytes(gpt2, 220)) == "·" and show_bytes(token_bytes(gpt2, gpt2.eos_token_id)) == "<|endoftext|>"
    assert token_bytes(gpt2, 40) == gpt2.decode([40]).encode()
