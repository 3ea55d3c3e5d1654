"""The rules that judge the one-layer chapter's skip-trigrams tested on real text
(``findings.one_layer_skip_trigrams``); the rows themselves are checked on a stand-in book in
``test_one_layer``."""

from circuits.findings.one_layer_skip_trigrams import MIN_EFFECT, raised, top_rank, verdict


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
