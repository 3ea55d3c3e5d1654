"""The one rule per kind of head."""

import torch

from circuits.metrics.heads import (copying_heads, has_induction, head_name, induction_heads, positional_heads,
                                    previous_token_heads)


def test_head_rules():
    prev = torch.tensor([[0.1, 0.5, 0.9], [0.9, 0.0, 0.0]])
    assert previous_token_heads(prev) == [(0, 1), (0, 2)]  # layer 0 only, threshold inclusive
    prefix = torch.tensor([[0.9, 0.0, 0.0], [0.39, 0.4, 0.7]])
    assert induction_heads(prefix) == [(1, 1), (1, 2)]  # layer 1 and later only
    assert copying_heads(torch.tensor([0.5, 0.51, -1.0])) == [1]
    summary = {"self": torch.tensor([0.4, 0.1, 0.0]), "previous": torch.tensor([0.2, 0.1, 0.9]),
               "positional agreement": torch.tensor([0.6, 0.9, 0.4])}
    assert positional_heads(summary) == [0]
    assert head_name((1, 4)) == "1.4"
    assert has_induction([[0.6, 0.1], [0.0, 0.0]], [[0.0, 0.0], [0.1, 0.45]])
    assert not has_induction([[0.4, 0.1], [0.0, 0.0]], [[0.0, 0.0], [0.1, 0.45]])
    assert not has_induction([[0.9]], [[0.9]])  # one layer: no induction
