"""The findings table's rows: malformed rows are errors, and every chapter's summary shows them one way."""

import pytest

from circuits.findings.table import check_row, findings_frame, verdict_counts

ROW = {"claim": "Heads <add>", "paper": "exact", "ours": "1e-6", "verdict": "partly", "rule": "reproduced if < 1e-4",
       "section": "01_framework#fw-additive"}


def test_findings_frame_shows_the_verdict_with_its_rule_and_escapes_the_text():
    frame = findings_frame([ROW])
    assert list(frame.columns) == ["claim", "paper", "ours", "verdict"]
    assert frame.loc[0, "claim"] == "Heads &lt;add&gt;"
    assert ">partly</span>" in frame.loc[0, "verdict"]
    assert '<span class="rule">reproduced if &lt; 1e-4</span>' in frame.loc[0, "verdict"]
    linked = findings_frame([ROW], link=True).loc[0, "claim"]
    assert linked == '<a href="01_framework.html#fw-additive">Heads &lt;add&gt;</a>'


@pytest.mark.parametrize("change", [{"rule": None}, {"verdict": "maybe"}, {"section": "01_framework"}])
def test_a_malformed_row_is_an_error(change):
    row = {k: v for k, v in {**ROW, **change}.items() if v is not None}
    with pytest.raises(ValueError):
        findings_frame([row])
    with pytest.raises(ValueError):
        check_row(row)


def test_verdict_counts_name_every_verdict():
    assert verdict_counts([ROW, {**ROW, "verdict": "reproduced"}]) == {"reproduced": 1, "partly": 1,
                                                                       "not reproduced": 0}


def test_a_rule_of_two_conditions_maps_to_the_three_verdicts():
    from circuits.findings.verdicts import verdict

    assert [verdict(True, False), verdict(True, True), verdict(False, True), verdict(False, False), verdict(False)] \
        == ["reproduced", "reproduced", "partly", "not reproduced", "not reproduced"]
