"""The phase change read from the training logs (``findings.phase_change``)."""

import numpy as np
import pytest

from circuits.findings.phase_change import _share


def test_the_share_of_a_rise_made_inside_the_window():
    assert _share(0.1, 0.4, 0.7) == pytest.approx(0.5)
    assert np.isnan(_share(0.5, 0.6, 0.5))  # no rise to share out
