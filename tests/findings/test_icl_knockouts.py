"""Which heads the induction chapter knocks out together, and where it reads the loss (``findings.icl_knockouts``)."""

import numpy as np
import pytest
import torch

from circuits.findings import icl_knockouts
from circuits.metrics.olsson import in_context_learning_score


def test_band_scores_are_the_icl_score():
    for n_ctx in (24, 64, 256):
        loss = torch.rand(7, n_ctx)
        positions = icl_knockouts.knockout_positions(n_ctx)
        scores = icl_knockouts.band_scores(loss[:, positions], positions, n_ctx)
        assert float(scores.mean()) == pytest.approx(in_context_learning_score(loss), abs=1e-6)
        assert float(scores[2]) == pytest.approx(in_context_learning_score(loss[2:3]), abs=1e-6)


def test_knockout_positions_cover_the_bands():
    positions = icl_knockouts.knockout_positions(256)
    assert {0, 1, 3, 7, 15, 31, 63, 127} <= set(positions)
    assert set(range(20, 31)) | set(range(245, 256)) <= set(positions) and len(positions) == 30
    early, late = icl_knockouts.band_positions(256)
    assert early == list(range(20, 31)) and late == list(range(245, 256))


def test_knockout_sets_follow_their_rule():
    prefix = np.array([[0.9, 0.0, 0.0, 0.0, 0.0, 0.0], [0.05, 0.7, 0.01, 0.5, 0.02, 0.3]])
    prev = np.array([[0.1, 0.8, 0.05, 0.3, 0.2, 0.9], [0.9] * 6])
    sets = icl_knockouts.knockout_sets(prefix, prev)
    assert sets["induction"] == [(1, 1), (1, 3)]  # layer 0's 0.9 is no induction head
    assert sets["control"] == [(1, 2), (1, 4)]  # the two lowest
    for i in range(icl_knockouts.N_RANDOM_CONTROLS):
        heads = sets[f"random {i + 1}"]
        assert len(heads) == 2 and not set(heads) & {(1, 1), (1, 3)}
    assert sets["previous"] == [(0, 1), (0, 5)] and sets["control 0"] == [(0, 2), (0, 0)]
    none = icl_knockouts.knockout_sets(prefix * 0.1, prev * 0.1)  # no head passes a threshold: the best one
    assert none["induction"] == [(1, 1)] and none["previous"] == [(0, 5)] and len(none["control"]) == 1


def test_icl_bands_match_the_score():
    for n_ctx in (64, 256):  # contexts long enough for a full early band
        early, late = icl_knockouts.icl_bands(n_ctx)
        loss = torch.zeros(1, n_ctx)
        loss[0, late] = 11.0  # one position inside the late band only
        loss[0, early] = -11.0
        assert in_context_learning_score(loss) == pytest.approx(2.0)
