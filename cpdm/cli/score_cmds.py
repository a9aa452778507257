"""Scoring commands: ``cpdm score``, ``cpdm scores list`` and ``cpdm backbones list``."""

from __future__ import annotations

import click

from cpdm import metric
from cpdm.backbones import DEFAULT_SEMANTIC, DEFAULT_STYLE, lookup, names
from cpdm.cli import cli, cpdm_command, offline_tiny_option, open_ws, workspace_option
from cpdm.errors import CpdmError
from cpdm.scoring import DEFAULT_BATCH_SIZE, DEFAULT_PRECISION, PRECISION_CHOICES


def _campaign_id(ws, campaign: str | None) -> int | None:
    from cpdm.rating.campaigns import campaign_id_by_name

    return None if campaign is None else campaign_id_by_name(ws, campaign)


def _add_cm(frame, ws, semantic_key: str, style_key: str, weights: metric.Weights | None):
    """Add a ``cm`` column (CM_w with weights, else the paper CM) and say which x_ref it used."""
    from cpdm.scoring.reader import reference_scale_for

    if weights is not None:
        frame["cm"] = weights.cm(frame["m_sem"].to_numpy(), frame["m_style"].to_numpy()) if len(frame) else []
        return f"CM_w with w={weights.w:g}, x_ref={weights.x_ref:.6g} (from the weights file)"
    try:
        x_ref = reference_scale_for(ws, semantic_key, style_key)
    except CpdmError as exc:
        frame["cm"] = float("nan")
        return f"CM unavailable: {exc}"
    frame["cm"] = metric.cm_paper(frame["m_sem"].to_numpy(), frame["m_style"].to_numpy(), x_ref) if len(frame) else []
    return f"paper CM = 1 - Norm(M_sem*M_style)^2 with x_ref={x_ref:.6g} (median over stored mismatched pairs)"


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


@cli.command()
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
    type=click.Choice(PRECISION_CHOICES),
    default=DEFAULT_PRECISION,
    show_default=True,
    help="auto: fp16 on CUDA, kept per backbone only where distances stay within 1e-3 of fp32 on a probe; "
    "fp32 on the CPU. reduced: also try bf16 matrix products on CPUs with bf16 instructions. fp32: always fp32.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@offline_tiny_option
@workspace_option
@cpdm_command
def score(campaign, all_pairs, semantic, style, backbones, weights_path, device, batch_size, precision, quiet, offline_tiny, workspace):
    """Score pairs with the CM metric (a semantic and a style backbone; `cpdm backbones list`).

    Scores every pair in scope that has no score yet for these backbones;
    re-running scores only what is new. Each image's features are computed
    once per backbone and cached in the workspace, so an anchor is embedded
    once however many generations it has. Also stores, per anchor, distances
    to generations of other anchors: their median is CM's reference scale.

    \b
    Examples:
      cpdm score --all --device cuda
      cpdm score --campaign pilot --style cpdm-inception
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
    click.echo("precision: " + ", ".join(f"{key} {chosen}" for key, chosen in report.precision.items()))
    for semantic_key, style_key in combinations:
        frame = load_scores(ws, semantic_key, style_key, campaign_id)
        if len(combinations) > 1:
            click.echo(f"\n== semantic={semantic_key} style={style_key}")
        applies = weights if weights is not None and (weights.semantic, weights.style) == (semantic_key, style_key) else None
        click.echo(_add_cm(frame, ws, semantic_key, style_key, applies))
        _print_variant_summary(frame)


def _print_variant_summary(frame) -> None:
    """Mean distances and CM per variant (attention checks listed by kind)."""
    if frame.empty:
        return
    label = frame["variant"].where(frame["variant"].notna(), "(" + frame["kind"] + ")")
    summary = frame.assign(group=label).groupby("group", sort=True).agg(
        pairs=("pair", "size"), m_sem=("m_sem", "mean"), m_style=("m_style", "mean"), cm=("cm", "mean")
    )
    click.echo(f"{'variant':<24} {'pairs':>6} {'m_sem':>10} {'m_style':>12} {'mean CM':>8}")
    for group, row in summary.iterrows():
        click.echo(f"{group:<24} {int(row.pairs):>6d} {row.m_sem:>10.4f} {row.m_style:>12.6g} {_fmt(row.cm):>8}")


def _fmt(value: float) -> str:
    return "-" if value != value else f"{value:.4f}"


@cli.group()
def scores():
    """Read stored scores.

    \b
    Example:
      cpdm scores list --campaign pilot
    """


@scores.command("list")
@click.option("--campaign", default=None, help="Only the pairs of this campaign.")
@click.option("--semantic", default=None, help="Semantic backbone (default: the only one scored).")
@click.option("--style", default=None, help="Style backbone (default: the only one scored).")
@click.option("--weights", "weights_path", type=click.Path(dir_okay=False), default=None, help="Weights JSON: show CM_w at its w and x_ref.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Also write the table to this CSV file.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Rows to print (0: all).")
@offline_tiny_option
@workspace_option
@cpdm_command
def scores_list(campaign, semantic, style, weights_path, csv_path, limit, offline_tiny, workspace):
    """List scores: M_sem, M_style and CM per pair.

    Without --weights, CM is the paper form with x_ref, the median of
    M_sem*M_style over the stored mismatched pairs (printed first).

    \b
    Examples:
      cpdm scores list
      cpdm scores list --style cpdm-inception --csv exports/scores.csv
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
    click.echo(_add_cm(frame, ws, semantic_key, style_key, weights))
    if csv_path:
        frame.to_csv(csv_path, index=False)
        click.echo(f"wrote {csv_path}")
    shown = frame if limit == 0 else frame.head(limit)
    click.echo(f"{'pair':>6} {'anchor':>6} {'artist':<18} {'variant':<14} {'kind':<16} {'m_sem':>8} {'m_style':>12} {'cm':>7}")
    for row in shown.itertuples():
        click.echo(
            f"{row.pair:>6} {row.anchor:>6} {str(row.artist or '-')[:18]:<18} {str(row.variant or '-')[:14]:<14} "
            f"{row.kind:<16} {row.m_sem:>8.4f} {row.m_style:>12.6g} {_fmt(row.cm):>7}"
        )
    if len(shown) < len(frame):
        click.echo(f"... {len(frame) - len(shown)} more (--limit 0 shows all, --csv writes all)")


def _choose_backbones(available, semantic, style, offline_tiny) -> tuple[str, str]:
    """The stored backbone names to list: as given, or the only pair that has scores."""
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
    if len(candidates) > 1:
        names = "; ".join(f"--semantic {s} --style {t}" for s, t in candidates)
        raise CpdmError(f"scores exist for several backbones, choose one: {names}")
    return candidates[0]


@cli.group()
def backbones():
    """The metric's backbones.

    \b
    Example:
      cpdm backbones list
    """


@backbones.command("list")
@workspace_option
@cpdm_command
def backbones_list(workspace):
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
