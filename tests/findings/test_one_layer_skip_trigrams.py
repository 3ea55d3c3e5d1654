"""The rules that judge the one-layer chapter's skip-trigrams tested on real text
(``findings.one_layer_skip_trigrams``); the rows themselves are checked on a stand-in book in
``test_one_layer``."""

from circuits.findings.one_layer_skip_trigrams import MIN_EFFECT, bug_kind, raised, top_rank, verdict


def test_rules():
    assert verdict(True, True) == "reproduced"
    assert verdict(True, False) == verdict(False, True) == "partly"
    assert verdict(False, False) == "not reproduced"
    # the model raises a continuation: at least MIN_EFFECT nats and more than MIN_Z standard errors
    assert raised(0.3, 0.1) and raised(MIN_EFFECT, 0.01)
    assert not raised(0.05, 0.001)  # significant but too small (the paper's open … " → w case)
    assert not raised(0.3, 0.2) and not raised(-0.5, 0.01)  # noisy; lowered
    assert not raised(0.3, float("nan"))
    assert top_rank(100) == 5 and top_rank(4000) == 40


def test_bug_kind():
    text = {1: "ve", 2: "y", 3: " mind", 4: " bay", 5: " │", 6: "│", 7: " in"}
    kind = lambda o1, o2: bug_kind(text.get, o1, o2)
    assert kind(1, 2) == "inside a word"  # ·tw … el → ve and ·tw … ent → y: ·twelve, ·twenty
    assert kind(3, 4) == "whole words"  # keep … in → mind and keep … at → bay
    assert kind(5, 6) == "symbols" and kind(1, 3) == "mixed"
