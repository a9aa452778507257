"""The score kind: ``cpdm score`` as a job (the CM metric's distances for the pairs in scope)."""

from __future__ import annotations

from cpdm.backbones import DEFAULT_SEMANTIC, DEFAULT_STYLE, lookup
from cpdm.errors import CpdmError
from cpdm.jobs.kinds import log_notes
from cpdm.jobs.parameters import OFFLINE_TINY, Parameter
from cpdm.jobs.registry import parameterised_kind
from cpdm.rating.campaigns import campaign_id_by_name
from cpdm.scoring import DEFAULT_BATCH_SIZE, DEFAULT_SCORING_PRECISION, SCORING_PRECISIONS
from cpdm.store.rows import variant_pair_ids


def _score_parameters() -> list[Parameter]:
    return [
        Parameter("variant", "str", None, "score the pairs of this variant's generations"),
        Parameter("campaign", "str", None, "score the pairs of this campaign"),
        Parameter("pair_ids", "ids", None, "score these pairs"),
        # The defaults are the CPDM release's metric (its cpdm_metric.py); see cpdm.backbones.
        Parameter("semantic", "str", DEFAULT_SEMANTIC, "semantic backbone (default: the CPDM release's CLIP)"),
        Parameter("style", "str", DEFAULT_STYLE, "style backbone (default: the CPDM release's InceptionV3; or vgg19)"),
        Parameter("batch_size", "int", DEFAULT_BATCH_SIZE, "images per batch", minimum=1),
        Parameter("precision", "str", DEFAULT_SCORING_PRECISION,
                  "auto: fp16 on CUDA where scores stay within 1e-3 of fp32; reduced: also bf16 on CPUs; fp32: always",
                  choices=SCORING_PRECISIONS),
        OFFLINE_TINY,
    ]


def _check_score(params: dict) -> None:
    scopes = [name for name in ("variant", "campaign", "pair_ids") if params[name]]
    if len(scopes) > 1:
        raise CpdmError(f"score job: give one of variant, campaign or pair_ids, not {' and '.join(scopes)}")
    lookup(params["semantic"], "semantic")
    lookup(params["style"], "style")


def _score_scope(ws, params: dict) -> tuple[list[int] | None, int | None]:
    """(pair ids, campaign id) to score; both None means every pair."""
    if params["variant"]:
        pair_ids = variant_pair_ids(ws, params["variant"])
        if not pair_ids:
            raise CpdmError(f"variant {params['variant']!r} has no pairs yet (generate with it first)")
        return pair_ids, None
    if params["campaign"]:
        return None, campaign_id_by_name(ws, params["campaign"])
    return params["pair_ids"], None


def _run_score(ws, params: dict, context) -> dict:
    """``cpdm score``: score every pair in scope that has no score yet for these backbones."""
    from cpdm.scoring.engine import score_pairs

    pair_ids, campaign_id = _score_scope(ws, params)
    report = score_pairs(ws, pair_ids, campaign_id, semantic=params["semantic"], style=params["style"],
                         device=context.device, batch_size=params["batch_size"], offline_tiny=params["offline_tiny"],
                         precision=params["precision"], executor=context.executor)
    context.log(report.summary())
    log_notes(context, report.notes)
    return {"semantic": report.semantic, "style": report.style, "pairs_scored": report.pairs_scored,
            "pairs_already_scored": report.pairs_already_scored, "scores_written": report.scores_written,
            "reference_distances_added": report.reference_distances_added}


KIND = parameterised_kind(
    "score", "score pairs with the CM metric",
    _score_parameters, _run_score, wants_gpu=True, extra_check=_check_score,
)
