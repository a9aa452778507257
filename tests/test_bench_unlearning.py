"""benchmarks/bench_unlearning.py's fidelity table on a few methods: real runs, figures beside the recorded ones."""

from __future__ import annotations

import pytest

from benchmarks import bench_unlearning


def test_every_method_has_quick_sizes_and_a_recorded_before_figure():
    from cpdm.unlearning import names

    assert set(bench_unlearning.FIDELITY_QUICK_SIZES) == set(names())
    before = bench_unlearning.FIDELITY_BEFORE
    assert set(before["quick"]) == set(before["default"]) == set(names())
    assert bench_unlearning.FIDELITY_BEFORE_COMMIT == "b85dee0"


@pytest.mark.slow
def test_the_fidelity_table_measures_how_far_a_method_moves_the_concept_and_the_rest(capsys):
    rows = {row["method"]: row for row in bench_unlearning.fidelity_table(quick=True, methods=("uce", "pruning"))}
    # UCE's closed-form edit moves the prompts that name the concept far more than the others.
    assert rows["uce"]["target"] < -0.01 and abs(rows["uce"]["retain"]) < 0.1 * abs(rows["uce"]["target"])
    assert all(row["target"] <= 0 and row["retain"] <= 0 for row in rows.values())  # the base model scores CM = 1
    bench_unlearning.print_fidelity(list(rows.values()), "quick")
    table = capsys.readouterr().out
    assert "before = commit b85dee0" in table
    uce_line = next(line for line in table.splitlines() if line.startswith("uce "))
    assert f"{bench_unlearning.FIDELITY_BEFORE['quick']['uce'][0]:+.3e}" in uce_line
