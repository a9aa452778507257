"""Analysis commands: analyze (report folder), calibrate (weights JSON), plan (study size from a pilot),
export (ratings), simulate-ratings.

Why one file of this length: each command is a thin click wrapper, but the
five share their options (campaign, group, flagged and simulated raters,
resampling) and their help texts, which read best next to each other.
"""

from __future__ import annotations

from pathlib import Path

import click

from cpdm.cli.options import cpdm_command, open_ws, resample_option, workspace_option

GROUP_CHOICE = click.Choice(["artists", "lay", "all"])
LEVEL_CHOICE = click.Choice(["nominal", "ordinal", "interval", "ratio"])


def analysis_options(func):
    """Options shared by analyze and calibrate: which ratings count and how intervals are made."""
    options = [
        click.option("--campaign", "-c", required=True, help="Campaign name."),
        click.option("--include-flagged", is_flag=True, help="Keep ratings of raters flagged by attention checks."),
        click.option("--exclude-simulated", is_flag=True, help="Leave out simulated raters (demo data)."),
        click.option("--zscore", is_flag=True,
                     help="Z-score each rater's ratings before averaging per pair (removes leniency)."),
        click.option("--semantic", default=None,
                     help="Semantic backbone of the scores, as stored (e.g. ViT-L-14/openai, tiny:ViT-L-14/openai); "
                          "default: the backbones that scored most pairs."),
        click.option("--style", default=None,
                     help="Style backbone of the scores, as stored (e.g. vgg19, tiny:vgg19)."),
        click.option("--n-boot", type=click.IntRange(0, 10_000), default=1000, show_default=True,
                     help="Bootstrap resamples for the 95% intervals."),
        resample_option,
        click.option("--folds", type=click.IntRange(2, 50), default=5, show_default=True,
                     help="Cross-validation folds (grouped by anchor)."),
        click.option("--step", type=click.FloatRange(0.001, 0.05), default=0.05, show_default=True,
                     help="Step of the w grid over [0, 1]."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for resampling and folds."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _options(group_list, calibration_group, strict, **kwargs):
    from cpdm.analysis.campaign_report import AnalysisOptions

    return AnalysisOptions(
        groups=tuple(group_list),
        strict_groups=strict,
        calibration_group=calibration_group,
        include_flagged=kwargs["include_flagged"],
        include_simulated=not kwargs["exclude_simulated"],
        zscore=kwargs["zscore"],
        semantic=kwargs["semantic"],
        style=kwargs["style"],
        n_boot=kwargs["n_boot"],
        folds=kwargs["folds"],
        step=kwargs["step"],
        seed=kwargs["seed"],
        resample=kwargs["resample"],
        level=kwargs.get("level", "ordinal"),
        target=kwargs.get("target", "copy"),
    )


@click.command("analyze")
@workspace_option
@analysis_options
@click.option("--group", "-g", type=GROUP_CHOICE, default=None,
              help="Rater group to analyse (default: artists, lay and all side by side; calibration on artists).")
@click.option("--target", default="copy", show_default=True, help="Protocol question the metric is compared with.")
@click.option("--level", type=LEVEL_CHOICE, default="ordinal", show_default=True,
              help="Level of measurement for Krippendorff's alpha.")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="Report folder (default: WORKSPACE/exports/report-CAMPAIGN).")
@cpdm_command
def analyze_cmd(workspace, campaign, group, out, **kwargs):
    """Write a report on a campaign: agreement, metric-human correlation, calibration, benchmark.

    The folder gets tables/*.csv, plots/*.png and summary.md. Agreement is
    Krippendorff's alpha per question and group; correlations are Spearman,
    Kendall tau-b and Pearson of CM, CM_w, -m_sem and -m_style with the mean
    human score, with bootstrap 95% intervals and a split-half noise ceiling;
    w is calibrated by cross-validation grouped by anchor and also given as
    w_std (the scale-free weight), per group and as the artists - lay
    difference. Ratings of flagged raters are left out unless --include-flagged.

    A comparative (2AFC) campaign gets its own report: alpha (nominal) on the
    choices, the split-half human agreement (the ceiling), the 2AFC score of
    CM at w = 0.5 and at the calibrated w with intervals, w calibrated by the
    out-of-fold 2AFC score, and Bradley-Terry strengths per variant and per
    generation. When a rating and a 2AFC campaign cover the same pairs, both
    w are shown side by side.

    \b
    Example:
      cpdm analyze --campaign demo --group artists --out reports/demo
    """
    from cpdm.analysis.campaign_report import default_report_dir, run_analysis, write_report

    ws = open_ws(workspace)
    groups = [group] if group else ["artists", "lay", "all"]
    options = _options(groups, group or "artists", strict=group is not None, **kwargs)
    analysis = run_analysis(ws, campaign, options)
    out_dir = Path(out) if out else default_report_dir(ws, campaign)
    written = write_report(analysis, out_dir)
    click.echo(f"report for campaign {campaign!r} written to {out_dir} ({len(written)} files)")
    click.echo(f"intervals: {options.intervals()}")
    if analysis.calibration is not None:
        cal = analysis.calibration
        row = cal.summary.iloc[0]
        click.echo(f"calibrated on {cal.stats.get('rater_group')}: out-of-fold {cal.statistic_label} "
                   f"{row[cal.value_column]:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
        for line in cal.weight_lines():
            click.echo(f"  {line}")
    if analysis.kind == "2afc":
        echo_2afc_headlines(analysis)
    for comparison in analysis.group_comparisons:
        if comparison.question == analysis.options.target:
            click.echo(comparison.headline())
    if analysis.side_by_side is not None:
        from cpdm.analysis.campaign_report import side_by_side_note

        click.echo("w from both kinds of judgment over the same pairs:")
        for line in side_by_side_note(analysis.side_by_side):
            click.echo(f"  {line}")
    for note in analysis.notes:
        click.echo(f"note: {note}")


def echo_2afc_headlines(analysis) -> None:
    """`cpdm analyze` on a 2afc campaign: the human ceiling, CM's 2AFC score and the variants' order."""
    for row in analysis.ceiling.itertuples(index=False):
        click.echo(f"{row.group}: human split-half agreement {row.agreement:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
                   f" over {row.triplets} triplets")
    for row in analysis.scores.itertuples(index=False):
        click.echo(f"{row.group}: 2AFC score of {row.metric} {row.score:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]")
    if analysis.strengths is not None:
        everyone = analysis.strengths[analysis.strengths["group"] == analysis.strengths["group"].iloc[-1]]
        order = " > ".join(f"{row.variant} ({row.strength:+.2f})" for row in everyone.itertuples(index=False))
        click.echo(f"Bradley–Terry copy-ness by variant ({everyone['group'].iloc[0]}): {order}")


@click.command("calibrate")
@workspace_option
@analysis_options
@click.option("--group", "-g", type=GROUP_CHOICE, default=None,
              help="Rater group whose judgement w is fitted to (default: artists; with --by, all).")
@click.option("--target", default="copy", show_default=True, help="Protocol question to fit (e.g. copy, style).")
@click.option("--by", "by", default=None, metavar="QUESTION",
              help="Calibrate once per level of the raters' answer to this background question "
                   "(e.g. art_years, familiarity) and print the table; --out then writes it as CSV.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              help="Weights JSON to write (required without --by).")
@cpdm_command
def calibrate_cmd(workspace, campaign, group, target, by, out, **kwargs):
    """Fit the semantic/style weight w of CM_w to human ratings and export it.

    w is chosen on a grid over [0, 1] as the value with the highest Spearman
    correlation with the group's mean rating; cross-validation grouped by
    anchor reports how well that choice generalises, beside the paper's
    w = 0.5, semantic only (w = 1) and style only (w = 0). w is also given
    as w_std, the weight on the log distances standardised by their spread
    over the reference pairs (0.5 = content and style count equally, for any
    backbones), with the conversion. The JSON holds w, w_std and the spreads,
    the reference scale x_ref, the backbones, target, group, fit statistics
    with intervals, the numbers of pairs, raters and ratings and a hash of the
    ratings used; `cpdm score --weights FILE` scores with its w.

    For a comparative (2AFC) campaign, w maximises the 2AFC score of CM_w
    against the group's choices (out of fold for the figures reported), and
    the JSON says judgment_kind "2afc" (counts are judgments); `cpdm score
    --weights` reads either kind.

    With --by QUESTION, w is calibrated once per level of the raters'
    answer to a background question of the campaign's protocol (each option;
    for numbers, the protocol's levels; for a question asked per artist, the
    rater's answer for each pair's artist), each with its interval and
    out-of-fold Spearman; nothing is recorded.

    \b
    Examples:
      cpdm calibrate --campaign demo --group artists --out weights.json
      cpdm calibrate --campaign pilot --by art_years --group lay
    """
    from cpdm.analysis.campaign_report import calibrate_campaign, record_calibration, save_weights
    from cpdm.rating.campaigns import campaign_id_by_name

    ws = open_ws(workspace)
    if by is not None:
        group = group or "all"
        calibrate_by_answer(ws, campaign, by, target, group, out,
                            _options([group], group, strict=True, target=target, **kwargs))
        return
    if out is None:
        raise click.UsageError("--out is required (the weights JSON to write), unless --by is given")
    group = group or "artists"
    options = _options([group], group, strict=True, target=target, **kwargs)
    result, weights = calibrate_campaign(ws, campaign, target=target, group=group, options=options, record=False)
    # The file first, the workspace's record only once the file is written: a failure leaves neither.
    path = save_weights(weights, out)
    try:
        record_calibration(ws, campaign_id_by_name(ws, campaign), weights)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    row = result.summary.iloc[0]
    value = result.value_column
    two_afc = weights.judgment_kind == "2afc"
    click.echo(f"weights written to {path} (w fitted to {'2AFC judgments' if two_afc else 'ratings'})")
    for line in result.weight_lines():
        click.echo(line)
    click.echo(f"intervals: {result.interval} (for w and w_std: the whole choice of w, bootstrapped)")
    counted = (f"{result.n_pairs} triplets, {weights.n_raters} raters, {weights.n_ratings} judgments" if two_afc
               else f"{weights.n_pairs} pairs, {weights.n_raters} raters, {weights.n_ratings} ratings")
    click.echo(f"out-of-fold {result.statistic_label} {row[value]:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] "
               f"over {counted}")
    for _, baseline in result.summary.iloc[1:].iterrows():
        in_std = f" (w_std {baseline['w_std']:.3f})" if baseline["w_std"] == baseline["w_std"] else ""
        click.echo(f"  {baseline['setting']}{in_std}: {baseline[value]:.3f} "
                   f"[{baseline['ci_low']:.3f}, {baseline['ci_high']:.3f}]")


def calibrate_by_answer(ws, campaign: str, question: str, target: str, group: str, out, options) -> None:
    """`cpdm calibrate --by`: the table of w per level of a background answer, printed and optionally saved."""
    from cpdm.analysis.by_answer import calibrate_by
    from cpdm.analysis.campaign_report import is_2afc
    from cpdm.analysis.data import write_table
    from cpdm.errors import CpdmError

    if is_2afc(ws, campaign):
        raise CpdmError(f"--by splits rating campaigns; campaign {campaign!r} holds 2AFC judgments")
    result = calibrate_by(ws, campaign, question, target=target, group=group, options=options)
    click.echo(f"w per answer to {question!r} ({result.text}), {group} raters, target {target!r}:")
    click.echo(result.screen_table().to_string(index=False))
    click.echo(f"intervals: {result.interval}")
    for note in result.notes:
        click.echo(f"note: {note}")
    if out:
        click.echo(f"table written to {write_table(result.table, Path(out), 'csv')}")


@click.command("plan")
@workspace_option
@click.option("--campaign", "-c", help="The pilot campaign's name (required for --kind rating).")
@click.option("--kind", type=click.Choice(["rating", "2afc"]), default="rating", show_default=True,
              help="rating: anchors x raters per pair for a rating study; 2afc: judgments each design "
                   "(Likert, random, balanced, active triplets) needs to pin w.")
@click.option("--target", default="copy", show_default=True, help="Protocol question w is fitted to.")
@click.option("--replicates", type=click.IntRange(20, 5000), default=200, show_default=True,
              help="Simulated studies per design.")
@click.option("--anchors", type=click.IntRange(5, 2000), default=20, show_default=True,
              help="--kind 2afc: anchors in each simulated study.")
@click.option("--max-judgments", type=click.IntRange(100, 100_000), default=3000, show_default=True,
              help="--kind 2afc: the largest number of judgments simulated.")
@click.option("--assume-w", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="--kind 2afc without --campaign: the raters' w.")
@click.option("--assume-noise", type=click.FloatRange(0.05, 5), default=0.6, show_default=True,
              help="--kind 2afc: the sd of a rating's noise on a 1-5 scale (assumed; a rating pilot shows its own).")
@click.option("--include-flagged", is_flag=True, help="Keep ratings of raters flagged by attention checks.")
@click.option("--exclude-simulated", is_flag=True, help="Leave out simulated raters (demo data).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the simulation.")
@cpdm_command
def plan_cmd(workspace, campaign, kind, target, replicates, anchors, max_judgments, assume_w, assume_noise,
             include_flagged, exclude_simulated, seed):
    """Estimate, from a pilot campaign, how many anchors and raters per pair a study needs.

    Two targets: pin the calibrated w to +/-0.1 (95% of studies choose a w
    that close to what they estimate), and detect a difference of 0.2
    between artists' and lay raters' w with 80% power. Every design in the
    table (anchors x raters per pair per group) is simulated by resampling
    the pilot: its anchors with their pairs, and new ratings made from each
    pair's pilot mean plus the group's rating noise.

    --kind 2afc compares designs instead: the judgments needed to pin w to
    +/-0.1 with Likert ratings, random, balanced and active triplets, for
    the same raters. The raters come from the pilot (a rating campaign:
    its pair means and rating noise; a 2afc campaign: the choice model
    fitted to its judgments) or, without --campaign, from stated
    assumptions (--assume-w, --assume-noise) on synthetic distances.

    \b
    Examples:
      cpdm plan --campaign pilot
      cpdm plan --kind 2afc --campaign pilot
      cpdm plan --kind 2afc --assume-w 0.4 --anchors 30
    """
    ws = open_ws(workspace)
    if kind == "2afc":
        _plan_judgments(ws, campaign, target, replicates, anchors, max_judgments, assume_w, assume_noise,
                        include_flagged, exclude_simulated, seed)
        return
    from cpdm.analysis.campaign_report import AnalysisOptions, plan_campaign
    from cpdm.errors import CpdmError

    if not campaign:
        raise CpdmError("cpdm plan needs --campaign (the pilot) unless --kind 2afc plans from assumptions")
    options = AnalysisOptions(include_flagged=include_flagged, include_simulated=not exclude_simulated, seed=seed)
    result = plan_campaign(ws, campaign, target=target, options=options, replicates=replicates)
    click.echo(f"pilot {campaign!r}: {result.pilot_anchors} anchors; {result.replicates} simulated studies per design")
    click.echo(result.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for line in result.summary_lines():
        click.echo(line)


def _plan_judgments(ws, campaign, target, replicates, anchors, max_judgments, assume_w, assume_noise,
                    include_flagged, exclude_simulated, seed) -> None:
    """`cpdm plan --kind 2afc`: judgments each design needs, from a pilot or from assumptions."""
    from cpdm.analysis.judgment_planning import JUDGMENT_DESIGNS, JudgmentWorld, pilot_world, plan_judgments

    if campaign:
        world = pilot_world(ws, campaign, target=target, include_flagged=include_flagged,
                            include_simulated=not exclude_simulated, noise_sd=assume_noise)
        source, w_true = f"pilot {campaign!r}", None
    else:
        from cpdm.demo.simulate import LENIENCY_SD, synthetic_study

        pairs, _, reference = synthetic_study(n_pairs=8 * max(anchors, 50), n_anchors=max(anchors, 50), n_raters=2,
                                              ratings_per_pair=1, w_true=assume_w, seed=seed)
        world = JudgmentWorld(pairs.assign(latent=1 + 4 * pairs["cm_true"]), assume_noise, reference=reference,
                              leniency_sd=LENIENCY_SD)
        source, w_true = f"assumptions (w = {assume_w:g}, rating noise sd {assume_noise:g})", assume_w
    plan = plan_judgments(world, anchors=anchors, replicates=replicates, max_judgments=max_judgments,
                          w_true=w_true, seed=seed)
    click.echo(f"{source}: {replicates} simulated studies of {anchors} anchors per design")
    table = plan.table.pivot(index="judgments", columns="design", values="halfwidth")[list(JUDGMENT_DESIGNS)]
    click.echo("half-width of the central 95% of the chosen w, by judgments:")
    click.echo(table.to_string(float_format=lambda v: f"{v:.3f}"))
    for line in plan.summary_lines():
        click.echo(line)


@click.command("export")
@workspace_option
@click.option("--campaign", "-c", required=True, help="Campaign name.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "jsonl"]), default="csv", show_default=True,
              help="File format.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="File to write.")
@click.option("--raters", "table", flag_value="raters",
              help="One row per rater instead: role, how they joined, times, active time, pairs, checks, flags "
                   "(pseudonymised).")
@click.option("--raters-identified", "table", flag_value="raters-identified",
              help="--raters plus each recruited rater's platform id: researchers only.")
@click.option("--approvals", "table", flag_value="approvals",
              help="One row per recruited rater: platform id, approve/reject/review and why, for the crowd platform.")
@click.option("--flagged", type=click.Choice(["reject", "review"]), default="reject", show_default=True,
              help="With --approvals: the decision for raters flagged by attention checks.")
@cpdm_command
def export_ratings_cmd(workspace, campaign, fmt, out, table, flagged):
    """Export a campaign's ratings in long form, one row per answer (or its raters, one row each).

    Columns: pair, anchor, kind, variant, rater (a pseudonymous id, stable
    within this workspace), role, question, value (empty when skipped),
    skip_reason, shown_at, submitted_at, seconds, too_fast, flagged,
    simulated. Rater names never leave the workspace.

    A 2afc campaign is exported one row per judgment (a rater's answer to
    one question on one triplet): triplet, anchor, kind, rater, role,
    question, the pair, generation and variant on the left and on the
    right as shown, answer (left, right or cant_tell; empty when skipped),
    the chosen pair, generation and variant (empty for can't tell),
    skip_reason, shown_at, submitted_at, seconds, too_fast, flagged,
    simulated.

    In CSV, a text cell that starts with = + - @, a tab or a carriage return
    (e.g. a skip reason "=HYPERLINK(...)") gets a leading apostrophe, so a
    spreadsheet shows it as text instead of running it as a formula. Numbers
    are written as numbers; parquet and jsonl keep text exactly as typed.

    --raters writes one row per rater instead (pseudonymous ids as above);
    --raters-identified adds the platform ids of raters recruited through a
    link (`cpdm campaign recruit`), and --approvals lists those raters with
    the decision to upload to the crowd platform: approve (finished), reject
    (flagged by attention checks; --flagged review to decide by hand),
    review (revoked) or not finished. Both identify people: keep them with
    the study's personal data.

    \b
    Examples:
      cpdm export --campaign demo --format parquet --out ratings.parquet
      cpdm export --campaign pilot --approvals --out approvals.csv
    """
    from cpdm.analysis.data import export_frame, write_table
    from cpdm.rating.campaigns import campaign_id_by_name
    from cpdm.rating.rules import campaign_kind
    from cpdm.errors import CpdmError

    ws = open_ws(workspace)
    campaign_id = campaign_id_by_name(ws, campaign)
    if table is not None:
        export_raters(ws, campaign, campaign_id, table, flagged, Path(out), fmt)
        return
    if campaign_kind(ws.conn, campaign_id) == "2afc":
        export_judgments(ws, campaign, campaign_id, Path(out), fmt)
        return
    frame = export_frame(ws, campaign_id)
    if len(frame) == 0:
        raise CpdmError(f"campaign {campaign!r} has no ratings to export")
    path = write_table(frame, Path(out), fmt)
    click.echo(f"{len(frame)} ratings of campaign {campaign!r} written to {path}")


def export_judgments(ws, campaign: str, campaign_id: int, out: Path, fmt: str) -> None:
    """`cpdm export` of a 2afc campaign: one row per judgment (cpdm.analysis.judgment_export)."""
    from cpdm.analysis.data import write_table
    from cpdm.analysis.judgment_export import judgment_export_frame
    from cpdm.errors import CpdmError

    frame = judgment_export_frame(ws, campaign_id)
    if len(frame) == 0:
        raise CpdmError(f"campaign {campaign!r} has no judgments to export")
    path = write_table(frame, out, fmt)
    click.echo(f"{len(frame)} judgments of campaign {campaign!r} written to {path}")


def export_raters(ws, campaign: str, campaign_id: int, table: str, flagged: str, out: Path, fmt: str) -> None:
    """The --raters, --raters-identified and --approvals tables of `cpdm export`."""
    from cpdm.analysis.data import write_table
    from cpdm.analysis.rater_export import approvals_frame, rater_frame
    from cpdm.errors import CpdmError

    if table == "approvals":
        frame = approvals_frame(ws, campaign_id, flagged_decision=flagged)
        what = "recruited raters"
    else:
        frame = rater_frame(ws, campaign_id, identified=table == "raters-identified")
        what = "raters"
    if len(frame) == 0:
        raise CpdmError(f"campaign {campaign!r} has no {what} to export")
    path = write_table(frame, out, fmt)
    click.echo(f"{len(frame)} {what} of campaign {campaign!r} written to {path}")
    if table != "raters":
        click.echo("it holds platform ids, which identify people: keep it with the study's personal data")


@click.command("simulate-ratings")
@workspace_option
@click.option("--campaign", "-c", required=True, help="Campaign name.")
@click.option("--artists", type=click.IntRange(0, 200), default=4, show_default=True, help="Simulated artists.")
@click.option("--lay", type=click.IntRange(0, 200), default=4, show_default=True, help="Simulated lay raters.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (the same seed gives the same ratings).")
@cpdm_command
def simulate_ratings_cmd(workspace, campaign, artists, lay, seed):
    """Fill a campaign with ratings from simulated raters (for demos and trying the analysis).

    Simulated raters are marked as such (analyze --exclude-simulated leaves
    them out). Their answers follow the pairs' metric scores when present
    (the "copy" answer weighs the log distances standardised over the
    reference pairs: artists 0.35 on content, lay raters 0.65, as w_std),
    else the variant's known effect, with rater leniency and noise. In a
    2afc campaign the same raters judge triplets: each choice follows the
    difference of the two generations' latent scores ("can't tell" now and
    then when they nearly tie), and an active campaign's queue is refreshed
    as the judgments come in. Running it again adds nothing.

    \b
    Example:
      cpdm simulate-ratings --campaign demo --artists 4 --lay 4
      cpdm simulate-ratings --campaign demo-2afc
    """
    from cpdm.rating.campaigns import campaign_id_by_name
    from cpdm.demo.simulate import add_simulated_ratings

    ws = open_ws(workspace)
    summary = add_simulated_ratings(ws, campaign_id_by_name(ws, campaign), seed=seed, n_artists=artists, n_lay=lay)
    if "judgments" in summary:
        click.echo(f"{summary['judgments']} simulated judgments added from {summary['raters']} raters on "
                   f"{summary['triplets']} triplets")
        return
    click.echo(f"{summary['ratings']} simulated ratings added from {summary['raters']} raters on "
               f"{summary['pairs']} pairs and {summary['checks']} attention checks")

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (analyze_cmd, calibrate_cmd, plan_cmd, export_ratings_cmd, simulate_ratings_cmd)
