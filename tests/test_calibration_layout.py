"""The calibration page shows everything: the chosen-w mark off the frame, no label cut off, no table wider than the page."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from cpdm.analysis.groups import GroupComparison
from cpdm.analysis.plots import calibration_figure
from cpdm.metric import LogSpreads
from cpdm.rating.auth import create_rater
from tests.browser_support import chromium_page


def _curve() -> pd.DataFrame:
    w = np.round(np.arange(0, 1.0001, 0.05), 2)
    rho = 0.6 + 0.2 * w
    return pd.DataFrame({"w": w, "rho_oof": rho, "ci_low": rho - 0.08, "ci_high": rho + 0.08})


@pytest.mark.parametrize("spreads", [None, LogSpreads(sem=2.0, style=1.0)])
@pytest.mark.parametrize("chosen_w", [0.0, 0.35, 1.0])
def test_chosen_w_mark_lies_inside_the_frame_and_the_legend_covers_no_data(chosen_w, spreads):
    figure = calibration_figure(_curve(), chosen_w, spreads=spreads)
    FigureCanvasAgg(figure).draw()
    axis = figure.axes[0]
    low, high = axis.get_xlim()
    assert low < 0 and high > 1  # a mark at 0 or 1 is not drawn on the frame itself
    (chosen,) = [line for line in axis.get_lines() if line.get_label().startswith("chosen w")]
    assert low < chosen.get_xdata()[0] < high
    legend = axis.get_legend().get_window_extent()
    assert not legend.overlaps(axis.get_window_extent())
    assert figure.bbox.x0 <= legend.x0 and legend.x1 <= figure.bbox.x1 and figure.bbox.y0 <= legend.y0
    if spreads is not None:  # w_std along the top: its 0.5 sits at w = s_style / (s_sem + s_style) = 1/3
        (top,) = axis.child_axes
        labels = {label.get_text(): label for label in top.get_xticklabels()}
        assert list(labels) == ["0.00", "0.25", "0.50", "0.75", "1.00"]
        renderer = figure.canvas.get_renderer()
        centre = labels["0.50"].get_window_extent(renderer).intervalx.mean()
        assert centre == pytest.approx(axis.transData.transform((1 / 3, 0))[0], abs=1.0)


def test_the_group_comparison_shows_each_estimate_with_its_interval_in_one_cell():
    # Spreads s_sem = 2, s_style = 1: w_std = 2w / (2w + 1 − w) = 2w / (1 + w), so w 0.375 is w_std 0.75 / 1.375.
    comparison = GroupComparison(
        question="copy", groups=("artists", "lay"), chosen_w={"artists": 0.375, "lay": 0.65},
        w_ci={"artists": (0.125, 0.5), "lay": (0.5, 0.91342)}, difference=-0.275, difference_ci=(-0.65, 0.0),
        curves={}, n_anchors=8, n_pairs={"artists": 32, "lay": 30}, interval="95% percentile bootstrap",
        spreads=LogSpreads(sem=2.0, style=1.0), difference_std_ci=(-0.6, 0.01),
    )
    assert comparison.screen_row() == {
        "question": "copy", "w_std artists (w)": "0.545 [0.222, 0.667] (w 0.375)",
        "w_std lay (w)": "0.788 [0.667, 0.955] (w 0.65)", "artists − lay, w_std": "-0.242 [-0.6, 0.01]",
        "anchors": 8, "pairs (artists / lay)": "32 / 30",
    }
    assert len(comparison.row()) == 23  # downloads keep every number in its own column, w_std and w
    assert comparison.row()["w_std difference (artists - lay)"] == pytest.approx(0.75 / 1.375 - 1.3 / 1.65)


@pytest.mark.browser
@pytest.mark.slow
def test_no_button_label_is_cut_off_and_no_table_is_wider_than_the_calibration_page(ws):
    from cpdm.app import serve
    from cpdm.demo.simulate import add_simulated_ratings
    from cpdm.testing import create_synthetic_campaign, free_port

    campaign = create_synthetic_campaign(ws, "study", n_anchors=8, reference=True, seed=4)
    add_simulated_ratings(ws, campaign, seed=2)
    _, token = create_rater(ws, "Res", "researcher")
    with open(ws.root / "app.log", "wb") as log, serve.running_app(ws.root, port=free_port(), stdout=log) as server:
        with chromium_page(1280, 720) as page:
            page.goto(f"{server.url}/calibration?token={token}")
            page.get_by_role("button", name="Record in workspace").wait_for(timeout=120_000)
            page.get_by_role("heading", name="Artists vs lay raters").wait_for(timeout=120_000)
            page.get_by_text("Brackets:").wait_for(timeout=120_000)  # the comparison table is drawn
            time.sleep(1)
            # A table's grid scrolls sideways inside its scroller when its columns are wider than the page.
            table_widths = page.locator("[data-testid='stMain'] [data-testid='stDataFrame'] .dvn-scroller").evaluate_all(
                "scrollers => scrollers.map(s => [s.scrollWidth, s.clientWidth])")
            labels = page.locator("[data-testid='stMain'] button").evaluate_all(
                """buttons => buttons.map(b => ({
                    text: b.innerText.trim(),
                    cut: [b, ...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1),
                }))"""
            )
    shown = {label["text"].splitlines()[-1]: label["cut"] for label in labels if label["text"]}
    assert {"Weights (JSON)", "Curve (CSV)", "Summary (CSV)", "Plot (PNG)", "Record in workspace"} <= set(shown)
    assert not any(shown.values()), shown
    assert len(table_widths) == 2  # the summary and the artists-vs-lay comparison
    assert all(scroll <= visible + 1 for scroll, visible in table_widths), table_widths
