"""Seed-sweep summaries read from training logs."""

import json

import pytest

from circuits.train.sweep import (EARLY_TOKENS, compact_run, induction_fraction, read_sweep, sweep_label,
                                  sweep_summary)

from .test_log import two_layer_log


def test_compact_run_reads_the_settings_from_the_name():
    rows = two_layer_log(200, 500)
    run = compact_run("h16x16c-s7", rows)
    assert (run["n_heads"], run["d_head"], run["compiled_loss"], run["seed"]) == (16, 16, True, 7)
    assert run["induction_tokens"] == 500_000 and len(run["curve"]) == 10
    assert run["curve"][-1] == [1_000_000, 4.0, 0.9, 0.6]
    assert sweep_label(run) == "h16x16c" and sweep_label(compact_run("h12-s0", rows)) == "h12"
    with pytest.raises(ValueError, match="not named"):
        compact_run("seed0", rows)


def test_sweep_summary_and_fraction_match_a_direct_count():
    runs = [compact_run(f"h8-s{s}", two_layer_log(200, at)) for s, at in enumerate([300, 800, None, 500])]
    runs += [compact_run(f"h12-s{s}", two_layer_log(200, at)) for s, at in enumerate([300, 400])]
    summary = {s["setting"]: s for s in sweep_summary(runs, by_tokens=500_000)}
    assert summary["h8"]["runs"] == 4 and summary["h8"]["induced"] == 3 and summary["h8"]["induced_by"] == 2
    assert summary["h8"]["median_tokens"] == 500_000 and summary["h12"]["median_tokens"] == 350_000
    assert summary["h12"]["induced_by"] == 2
    fraction = induction_fraction(runs, [200_000, 300_000, 500_000, 1_000_000])
    assert fraction == {"h8": [0.0, 0.25, 0.5, 0.75], "h12": [0.0, 0.5, 1.0, 1.0]}


def test_read_sweep_from_run_folders_and_from_the_compact_file(tmp_path):
    for name, at in [("h12-s0", 300), ("h12-s1", None)]:
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "log.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in two_layer_log(200, at)))
    runs = read_sweep(tmp_path / "runs")
    assert [r["run"] for r in runs] == ["h12-s0", "h12-s1"]
    compact = tmp_path / "sweep.jsonl"
    compact.write_text("".join(json.dumps(r) + "\n" for r in runs))
    assert read_sweep(compact) == runs
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*/log.jsonl"):
        read_sweep(tmp_path / "empty")


def test_the_committed_sweep_has_every_run_to_the_end():
    from circuits.paths import project_root
    runs = read_sweep(project_root() / "benchmarks" / "logs" / "h200_seed_sweep.jsonl")
    assert len(runs) == 48 and all(r["curve"][-1][0] >= 39_000_000 for r in runs)
    assert sum(s["runs"] for s in sweep_summary(runs, EARLY_TOKENS)) == 48
