"""The per-variant table compares every variant with the baseline, found by its method, never by its name."""

from __future__ import annotations

import pandas as pd
import pytest

from cpdm.analysis.variants import baseline_variant, variant_benchmark


def pairs_frame(names_and_methods: dict[str, str]) -> pd.DataFrame:
    rows = []
    for index, (name, method) in enumerate(names_and_methods.items()):
        for k in range(4):
            rows.append({"pair": 10 * index + k, "anchor": k, "variant": name, "variant_method": method, "CM": 0.9 - 0.3 * index})
    return pd.DataFrame(rows)


def test_the_baseline_is_the_variant_whose_method_is_original():
    pairs = pairs_frame({"original": "esd", "sd15": "original", "uce-run": "uce"})
    assert baseline_variant(pairs) == "sd15"
    table = variant_benchmark(pairs, {}, threshold=4.0, n_boot=0)
    assert table["variant"].tolist()[0] == "sd15"
    changes = dict(zip(table["variant"], table["CM_change"].round(6)))
    assert changes == {"sd15": 0.0, "original": 0.3, "uce-run": -0.3}


def test_no_baseline_no_comparison():
    for pairs in (pairs_frame({"original": "demo", "esd": "esd"}),  # a variant called original is not the baseline
                  pairs_frame({"a": "original", "b": "original"}),  # two baselines: none to compare against
                  pairs_frame({"original": "original"}).drop(columns="variant_method")):
        table = variant_benchmark(pairs, {}, threshold=4.0, n_boot=0)
        assert "CM_change" not in table


def test_more_columns_get_their_mean_and_interval_beside_the_metric():
    pairs = pairs_frame({"sd15": "original", "uce-run": "uce"})
    pairs["release_score"] = [0.0, 0.1, 0.2, 0.3, 1.0, 1.0, 2.0, 4.0]  # (M_sem · M_style)² of each pair
    table = variant_benchmark(pairs, {}, threshold=4.0, n_boot=200, also=("release_score",)).set_index("variant")
    assert table.loc["sd15", "mean_release_score"] == pytest.approx(0.15)
    assert table.loc["uce-run", "mean_release_score"] == pytest.approx(2.0)
    assert table.loc["uce-run", "release_score_ci_low"] < 2.0 < table.loc["uce-run", "release_score_ci_high"]
    assert list(table.columns[:6]) == ["pairs", "mean_CM", "CM_ci_low", "CM_ci_high", "mean_release_score",
                                       "release_score_ci_low"]
