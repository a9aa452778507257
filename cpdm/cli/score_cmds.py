"""Scoring commands: ``cpdm score``, ``cpdm scores list`` and ``cpdm backbones list``."""

from __future__ import annotations

import click
import numpy as np

from cpdm import metric
from cpdm.backbones import DEFAULT_SEMANTIC, DEFAULT_STYLE, lookup, names
from cpdm.cli.options import cpdm_command, offline_tiny_option, open_ws, workspace_option
from cpdm.errors import CpdmError
from cpdm.scoring import DEFAULT_BATCH_SIZE, DEFAULT_SCORING_PRECISION, SCORING_PRECISIONS


def _campaign_id(ws, campaign: str | None) -> int | None:
    from cpdm.rating.campaigns import campaign_id_by_name

    return None if campaign is None else campaign_id_by_name(ws, campaign)


def _add_metric_columns(frame, ws, semantic_key: str, style_key: str, weights: metric.Weights | None) -> str:
    """Add ``cm`` (CM_w with weights, else the paper CM) and ``release_score`` columns; say which x_ref CM used."""
    from cpdm.scoring.reader import reference_scale_for
    from cpdm.scoring.reference import load_reference_record

    sem, style = frame["m_sem"].to_numpy(), frame["m_style"].to_numpy()
    frame["release_score"] = metric.release_score(sem, style) if len(frame) else []
    if weights is not None:
        frame["cm"] = weights.cm(sem, style) if len(frame) else []
        fitted = "comparative (2AFC) judgments" if weights.judgment_kind == "2afc" else "ratings"
        return f"CM_w with w={weights.w:g}, x_ref={weights.x_ref:.6g} (from the weights file; w fitted to {fitted})"
    try:
        x_ref = reference_scale_for(ws, semantic_key, style_key)
    except CpdmError as exc:
        frame["cm"] = float("nan")
        return f"CM unavailable: {exc}"
    frame["cm"] = metric.cm_paper(sem, style, x_ref) if len(frame) else []
    return f"paper CM = 1 - Norm(M_sem*M_style)^2 with {load_reference_record(ws, semantic_key, style_key).describe()}"


def _weights_for_combinations(path: str | None, combinations: list[tuple[str, str]]) -> metric.Weights | None:
    """Weights that apply to one of the combinations being scored; else the weights' own backbone error."""
    if path is None:
        return None
    weights = metric.load_weights(path)
    if (weights.semantic, weights.style) not in combinations:
        weights.check_backbones(*combinations[0], source=str(path))
    return weights


def _registered(role: str):
    """A click callback refusing a name the registry does not know for this role (a usage error, status 2)."""

    def check(ctx, param, value):
        if value is not None:
            try:
                lookup(value, role)
            except CpdmError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return check


def split_backbones(text: str) -> tuple[list[str], list[str]]:
    """``--backbones a,b,c`` -> (semantic names, style names), each name's role from the registry."""
    semantic, style = [], []
    for name in dict.fromkeys(part.strip() for part in text.split(",")):
        if not name:
            raise click.BadParameter("an empty name in the list", param_hint="--backbones")
        try:
            role = lookup(name).role
        except CpdmError as exc:
            raise click.BadParameter(str(exc), param_hint="--backbones") from None
        (semantic if role == "semantic" else style).append(name)
    if not semantic or not style:
        raise click.BadParameter(
            "name at least one semantic and one style backbone (see `cpdm backbones list`)", param_hint="--backbones"
        )
    return semantic, style


@click.command("score")
@click.option("--campaign", default=None, help="Score the pairs of this campaign.")
@click.option("--all", "all_pairs", is_flag=True, help="Score every pair in the workspace.")
@click.option("--semantic", default=None, callback=_registered("semantic"), help=f"Semantic backbone: {', '.join(names('semantic'))} or any open_clip MODEL/TAG (TAG may be a checkpoint file). [default: {DEFAULT_SEMANTIC}]")
@click.option("--style", default=None, callback=_registered("style"), help=f"Style backbone: {', '.join(names('style'))}. [default: {DEFAULT_STYLE}]")
@click.option("--backbones", default=None, help="Several backbones, comma-separated: every semantic x style combination is scored in one pass (each image decoded once, each backbone run once per image).")
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False), default=None, help="Weights JSON from `cpdm calibrate`: report CM_w at its w and x_ref.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (cuda:N for a given GPU).")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True, help="Images per batch (on the CPU run in passes of at most 512x512 input pixels).")
@click.option(
    "--precision",
    type=click.Choice(SCORING_PRECISIONS),
    default=DEFAULT_SCORING_PRECISION,
    show_default=True,
    help="auto: fp16 on CUDA, kept per backbone only where distances stay within 1e-3 of fp32 on a probe; "
    "fp32 on the CPU. reduced: also try bf16 matrix products on CPUs with bf16 instructions. fp32: always fp32.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@offline_tiny_option
@workspace_option
@cpdm_command
def score_cmd(campaign, all_pairs, semantic, style, backbones, weights_path, device, batch_size, precision, quiet, offline_tiny, workspace):
    """Score pairs with the CM metric (a semantic and a style backbone; `cpdm backbones list`).

    The backbones default to the CPDM release's metric: ViT-L-14/openai for
    semantics and its InceptionV3 Gram matrices (cpdm-inception) for style,
    as the authors' cpdm_metric.py computes them; --style vgg19 names VGG19.
    Scores every pair in scope that has no score yet for these backbones;
    re-running scores only what is new, and pairs another run scores
    meanwhile are skipped. Each image's features are computed once per
    backbone and cached in the workspace, so an anchor is embedded once
    however many generations it has. The first run that can also defines
    CM's reference set (each anchor against the baseline variant's
    generations of other anchors), whatever pairs it scores: `cpdm scores
    rescale` defines it again on purpose. Prints mean CM and the release's
    own score, (M_sem*M_style)^2, per variant.

    \b
    Examples:
      cpdm score --all --device cuda
      cpdm score --campaign pilot --style vgg19
      cpdm score --all --backbones ViT-L-14/openai,dinov2,vgg19,cpdm-inception,csd
      cpdm score --all --weights exports/weights.json
      cpdm score --all --precision fp32        # never reduced precision
      cpdm score --all --offline-tiny          # tiny random models, no weights needed
    """
    from cpdm.scoring.engine import score_pairs
    from cpdm.scoring.reader import backbone_keys, load_scores

    if campaign is not None and all_pairs:
        raise click.UsageError("give --campaign NAME or --all, not both")
    if campaign is None and not all_pairs:
        raise click.UsageError("say which pairs to score: --campaign NAME or --all")
    if backbones is not None and (semantic is not None or style is not None):
        raise click.UsageError("give --backbones, or --semantic/--style, not both")
    if backbones is not None:
        semantics, styles = split_backbones(backbones)
    else:
        semantics, styles = [semantic or DEFAULT_SEMANTIC], [style or DEFAULT_STYLE]
    combinations = [backbone_keys(sem, sty, offline_tiny) for sem in semantics for sty in styles]
    weights = _weights_for_combinations(weights_path, combinations)  # before any model is loaded
    ws = open_ws(workspace)
    campaign_id = _campaign_id(ws, campaign)
    report = score_pairs(
        ws,
        campaign_id=campaign_id,
        semantic=semantics,
        style=styles,
        device=device,
        batch_size=batch_size,
        offline_tiny=offline_tiny,
        progress=not quiet,
        precision=precision,
    )
    click.echo(report.summary())
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo("precision: " + ", ".join(f"{key} {chosen}" for key, chosen in report.precision.items()))
    for semantic_key, style_key in combinations:
        frame = load_scores(ws, semantic_key, style_key, campaign_id)
        if len(combinations) > 1:
            click.echo(f"\n== semantic={semantic_key} style={style_key}")
        applies = weights if weights is not None and (weights.semantic, weights.style) == (semantic_key, style_key) else None
        click.echo(_add_metric_columns(frame, ws, semantic_key, style_key, applies))
        _print_variant_summary(frame)


def _print_variant_summary(frame, n_boot: int = 1000) -> None:
    """Per variant (attention checks by kind): mean distances, mean CM, and the mean release score with its interval."""
    from cpdm.analysis.resampling import DEFAULT_RESAMPLE, describe_intervals
    from cpdm.analysis.variants import mean_by

    if frame.empty:
        return
    labelled = frame.assign(group=frame["variant"].where(frame["variant"].notna(), "(" + frame["kind"] + ")"))
    summary = labelled.groupby("group", sort=True).agg(m_sem=("m_sem", "mean"), m_style=("m_style", "mean"),
                                                       cm=("cm", "mean"))
    release = mean_by(labelled, "release_score", "group", n_boot=n_boot).set_index("group")
    click.echo(f"{'variant':<24} {'pairs':>6} {'m_sem':>10} {'m_style':>12} {'mean CM':>8}  "
               "mean release_score [95% CI]")
    for group, row in summary.iterrows():
        low, high = release.loc[group, ["release_score_ci_low", "release_score_ci_high"]]
        interval = f" [{low:.4g}, {high:.4g}]" if np.isfinite(low) else ""
        click.echo(f"{group:<24} {int(release.loc[group, 'pairs']):>6d} {row.m_sem:>10.4f} {row.m_style:>12.6g} "
                   f"{_fmt(row.cm):>8}  {release.loc[group, 'mean_release_score']:.4g}{interval}")
    click.echo(f"release_score = (M_sem*M_style)^2, the CPDM release's number (no Norm; lower = closer); "
               f"intervals: {describe_intervals(DEFAULT_RESAMPLE, n_boot)}")


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"


@click.group("scores")
def scores_cmd():
    """Read stored scores; define CM's reference set again.

    \b
    Examples:
      cpdm scores list --campaign pilot
      cpdm scores rescale
    """


@scores_cmd.command("list")
@click.option("--campaign", default=None, help="Only the pairs of this campaign.")
@click.option("--semantic", default=None, help="Semantic backbone (default: the only one scored).")
@click.option("--style", default=None, help="Style backbone (default: the only one scored).")
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False), default=None, help="Weights JSON: show CM_w at its w and x_ref.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Also write the table to this CSV file.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Rows to print (0: all).")
@offline_tiny_option
@workspace_option
@cpdm_command
def scores_list_cmd(campaign, semantic, style, weights_path, csv_path, limit, offline_tiny, workspace):
    """List scores: M_sem, M_style, CM and the release score per pair, and their means per variant.

    Without --weights, CM is the paper form with x_ref, the median of
    M_sem*M_style over the workspace's reference set (printed first).
    release_score is (M_sem*M_style)^2, the number the CPDM release reports
    (its mean over pairs, with an interval over anchors): no Norm, lower =
    closer, comparable with the paper's tables. With scores of several
    backbone combinations the paper's (ViT-L-14/openai + cpdm-inception) is
    listed unless --semantic/--style choose another.

    \b
    Examples:
      cpdm scores list
      cpdm scores list --style vgg19 --csv exports/scores.csv
      cpdm scores list --weights exports/weights.json --limit 0
    """
    from cpdm.scoring.reader import available_backbones, load_scores

    ws = open_ws(workspace)
    available = available_backbones(ws)
    semantic_key, style_key = _choose_backbones(available, semantic, style, offline_tiny)
    weights = _weights_for_combinations(weights_path, [(semantic_key, style_key)])
    if (semantic_key, style_key) not in available:
        scored = "; ".join(f"--semantic {s} --style {t}" for s, t in available) or "none yet"
        raise CpdmError(f"no scores for --semantic {semantic_key} --style {style_key} (scored: {scored})")
    frame = load_scores(ws, semantic_key, style_key, _campaign_id(ws, campaign))
    click.echo(f"semantic={semantic_key} style={style_key}: {len(frame)} scored pairs")
    others = [f"--semantic {s} --style {t}" for s, t in available if (s, t) != (semantic_key, style_key)]
    if others:
        click.echo(f"also scored: {'; '.join(others)}")
    click.echo(_add_metric_columns(frame, ws, semantic_key, style_key, weights))
    _print_variant_summary(frame)
    if csv_path:
        frame.to_csv(csv_path, index=False)
        click.echo(f"wrote {csv_path}")
    shown = frame if limit == 0 else frame.head(limit)
    click.echo(f"{'pair':>6} {'anchor':>6} {'artist':<18} {'variant':<14} {'kind':<16} {'m_sem':>8} {'m_style':>12} "
               f"{'cm':>7} {'release_score':>13}")
    for row in shown.itertuples():
        click.echo(
            f"{row.pair:>6} {row.anchor:>6} {str(row.artist or '-')[:18]:<18} {str(row.variant or '-')[:14]:<14} "
            f"{row.kind:<16} {row.m_sem:>8.4f} {row.m_style:>12.6g} {_fmt(row.cm):>7} {row.release_score:>13.6g}"
        )
    if len(shown) < len(frame):
        click.echo(f"... {len(frame) - len(shown)} more (--limit 0 shows all, --csv writes all)")


def _choose_backbones(available, semantic, style, offline_tiny) -> tuple[str, str]:
    """The stored backbone names to read: as given, else the only combination scored, else the paper's."""
    from cpdm.backbones import is_paper_combination
    from cpdm.scoring.reader import backbone_keys

    if semantic is not None and style is not None:
        return backbone_keys(semantic, style, offline_tiny)
    candidates = available
    if semantic is not None or style is not None:
        sem_key, style_key = backbone_keys(semantic or "", style or "", offline_tiny)
        candidates = [
            (s, t) for s, t in available if (semantic is None or s == sem_key) and (style is None or t == style_key)
        ]
    elif offline_tiny:
        candidates = [(s, t) for s, t in available if s.startswith("tiny:")]
    if not candidates:
        raise CpdmError("no scores yet for these backbones (run `cpdm score --all` first)")
    paper = [c for c in candidates if is_paper_combination(*c)]
    if len(candidates) > 1 and len(paper) == 1:
        return paper[0]
    if len(candidates) > 1:
        names = "; ".join(f"--semantic {s} --style {t}" for s, t in candidates)
        raise CpdmError(f"scores exist for several backbones, choose one: {names}")
    return candidates[0]


@scores_cmd.command("rescale")
@click.option("--semantic", default=None, help="Semantic backbone (default: the combination `scores list` shows).")
@click.option("--style", default=None, help="Style backbone (default: the combination `scores list` shows).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda, for features not cached yet.")
@offline_tiny_option
@workspace_option
@cpdm_command
def scores_rescale_cmd(semantic, style, device, offline_tiny, workspace):
    """Define CM's reference set again from the baseline's generations, and say how far x_ref moved.

    The reference set (anchors against the baseline variant's generations of
    other anchors, chosen by a fixed hash) is defined once, by the first
    `cpdm score` that can, so that CM never depends on the order in which
    pairs were scored. After new baseline generations (or on a workspace
    scored by an earlier cpdm) this command defines it again on purpose:
    every CM of the combination changes with x_ref. Features not cached yet
    are computed, so the backbones are loaded.

    \b
    Examples:
      cpdm scores rescale
      cpdm scores rescale --style vgg19 --device cuda
    """
    from cpdm.backbones import key_name_and_mode
    from cpdm.scoring.engine import build_engine
    from cpdm.scoring.reader import available_backbones

    ws = open_ws(workspace)
    semantic_key, style_key = _choose_backbones(available_backbones(ws), semantic, style, offline_tiny)
    (semantic_name, mode), (style_name, _) = key_name_and_mode(semantic_key), key_name_and_mode(style_key)
    engine = build_engine(ws, semantic_name, style_name, device=device, mode=mode)
    (before, after), = engine.rescale()
    click.echo(f"semantic={semantic_key} style={style_key}: reference set defined again: {after.describe()}")
    click.echo(_x_ref_change(before, after))


def _x_ref_change(before, after) -> str:
    """How far x_ref moved between two reference records (before may be None)."""
    if before is None or before.x_ref is None or after.x_ref is None:
        return "x_ref before: none recorded (every CM of this combination now uses the new scale)"
    change = after.x_ref / before.x_ref - 1
    return (f"x_ref moved from {before.x_ref:.6g} to {after.x_ref:.6g} ({change:+.1%}); "
            f"reference pairs {before.pairs} -> {after.pairs}")


@click.group("backbones")
def backbones_cmd():
    """The metric's backbones.

    \b
    Example:
      cpdm backbones list
    """


@backbones_cmd.command("list")
@workspace_option
@cpdm_command
def backbones_list_cmd(workspace):
    """List the registered backbones: role, what each needs, whether real weights are on this machine, its tiny mode.

    Any open_clip MODEL/TAG is a semantic backbone too; `csd/PATH` and
    `dinov2/REPO-OR-DIR` name other checkpoints of those backbones.
    Weights are machine-wide (caches), so --workspace changes nothing here.

    \b
    Example:
      cpdm backbones list
    """
    from cpdm.backbones import registry_status

    for row in registry_status():
        click.echo(f"{row.name}  [{row.role}]  {row.note}")
        click.echo(f"    needs: {row.package} ({'installed' if row.installed else 'NOT installed'})")
        click.echo(f"    real weights: {row.weights}")
        click.echo(f"    tiny mode: {row.tiny}")

# The commands this module adds to `cpdm` (cpdm.cli registers them).
COMMANDS = (score_cmd, scores_cmd, backbones_cmd)
