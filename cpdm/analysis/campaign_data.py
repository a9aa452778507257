"""Loading a campaign for analysis: what to analyse (:class:`AnalysisOptions`) and the campaign's data.

:func:`load_campaign` reads a rating campaign's ratings and pairs, filtered
as the options say (flagged raters out by default), and refuses in one clear
line a campaign with nothing to analyse; :mod:`cpdm.analysis.two_afc_report`
loads comparative (2AFC) campaigns. The analysis is split in four steps:
loading (here), computing (:mod:`cpdm.analysis.campaign_report`), rendering
Markdown (:mod:`cpdm.analysis.report_markdown`) and writing files
(:mod:`cpdm.analysis.report_files`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cpdm.analysis import data as data_module
from cpdm.analysis.data import DEFAULT_TARGET
from cpdm.analysis.agreement import check_level
from cpdm.analysis.resampling import DEFAULT_RESAMPLE, check_resample, describe_intervals
from cpdm.analysis.variants import copy_threshold
from cpdm.errors import CpdmError
from cpdm.rating.protocol import ProtocolError, parse_protocol

DEFAULT_CALIBRATION_GROUP = "artists"


@dataclass
class AnalysisOptions:
    """What to analyse and how; the defaults are the issue's (copy question, artists, flagged raters out)."""

    groups: tuple[str, ...] = ("artists", "lay", "all")
    strict_groups: bool = False          # True when the user named the group(s): a group without ratings is an error
    target: str = DEFAULT_TARGET
    calibration_group: str = DEFAULT_CALIBRATION_GROUP
    include_flagged: bool = False
    include_simulated: bool = True
    zscore: bool = False
    level: str = "ordinal"
    n_boot: int = 1000
    seed: int = 0
    semantic: str | None = None
    style: str | None = None
    folds: int = 5
    step: float = 0.05
    resample: str = DEFAULT_RESAMPLE     # what intervals resample: anchors, or pairs (for comparison only)

    def intervals(self) -> str:
        """How every interval of the analysis is made, in words."""
        return describe_intervals(self.resample, self.n_boot)


@dataclass
class CampaignData:
    """The ratings and pairs of one campaign, filtered as the options say."""

    kind = "rating"  # a class constant: :class:`cpdm.analysis.two_afc_report.TwoAfcData` says "2afc"

    campaign: str
    campaign_id: int
    all_ratings: pd.DataFrame
    ratings: pd.DataFrame
    pairs: pd.DataFrame
    backbones: tuple[str, str] | None
    reference: pd.DataFrame | None
    questions: list[str]
    counts: dict
    scales: dict[str, tuple[int, int]] = field(default_factory=dict)   # question -> (low, high)

    def scale(self, question: str) -> tuple[int, int]:
        """The question's scale from the protocol; for a question it lacks, the lowest and highest answers given."""
        if question in self.scales:
            return self.scales[question]
        values = self.all_ratings.loc[self.all_ratings["question"] == question, "value"].dropna()
        return (int(values.min()), int(values.max())) if len(values) else (1, 5)

    def copy_threshold(self, question: str) -> float:
        """The mean rating from which a pair counts as judged a copy on ``question`` (see variants.copy_threshold)."""
        return copy_threshold(self.scale(question))


def protocol_questions(protocol_text: str) -> dict[str, tuple[int, int]]:
    """The protocol's questions in order, each with its scale (none when the text does not parse)."""
    try:
        return {question.id: question.scale for question in parse_protocol(protocol_text, frozen=True).questions}
    except ProtocolError:
        return {}


def questions_of(all_ratings: pd.DataFrame, protocol_ids: list[str]) -> list[str]:
    """Question ids in protocol order (falling back to the order they appear in the ratings)."""
    seen = list(dict.fromkeys(all_ratings["question"]))
    return [q for q in protocol_ids if q in seen] + [q for q in seen if q not in protocol_ids]


def load_campaign(ws, campaign: str, options: AnalysisOptions) -> CampaignData:
    """Ratings and pairs of a campaign by name, with clear errors for an unknown or unrated campaign."""
    from cpdm.rating.campaigns import campaign_id_by_name

    campaign_id = campaign_id_by_name(ws, campaign)
    check_level(options.level)
    check_resample(options.resample)
    for group in (*options.groups, options.calibration_group):
        data_module.check_group(group)
    all_ratings = data_module.load_ratings(ws, campaign_id)
    if all_ratings["value"].notna().sum() == 0:
        raise CpdmError(f"campaign {campaign!r} has no ratings yet (invite raters, or add simulated ones for a demo)")
    ratings = data_module.analysis_ratings(all_ratings, options.include_flagged, options.include_simulated)
    normal = all_ratings[all_ratings["kind"] == "normal"]
    counts = {
        "ratings": int(len(all_ratings)),
        "answered_normal": int(normal["value"].notna().sum()),
        "skipped": int(all_ratings["value"].isna().sum()),
        "flagged_raters": int(all_ratings.loc[all_ratings["flagged"], "rater"].nunique()),
        "excluded_flagged": 0 if options.include_flagged else int((normal["flagged"] & normal["value"].notna()).sum()),
        "simulated_raters": int(all_ratings.loc[all_ratings["simulated"], "rater"].nunique()),
        "used": int(len(ratings)),
        "raters_used": int(ratings["rater"].nunique()),
    }
    if len(ratings) == 0:
        raise CpdmError(
            f"campaign {campaign!r} has no usable ratings of normal pairs "
            f"({counts['excluded_flagged']} excluded from flagged raters; --include-flagged keeps them)"
        )
    backbones = data_module.choose_backbones(ws, campaign_id, options.semantic, options.style)
    pairs = data_module.pair_table(ws, campaign_id, backbones)
    reference = data_module.reference_distances(ws, backbones)
    protocol_text = ws.conn.execute("SELECT protocol FROM campaigns WHERE id = ?", (campaign_id,)).fetchone()[0]
    scales = protocol_questions(protocol_text)
    return CampaignData(campaign, campaign_id, all_ratings, ratings, pairs, backbones, reference,
                        questions_of(all_ratings, list(scales)), counts, scales)


def groups_with_answers(answers: pd.DataFrame, noun: str, campaign: str, options: AnalysisOptions,
                        notes: list[str]) -> list[str]:
    """The asked-for rater groups that gave ``answers`` (ratings or judgments); a group without any is noted."""
    groups = []
    for group in options.groups:
        if len(data_module.select_group(answers, group)) == 0:
            message = f"no usable {noun} from the {group} group in campaign {campaign!r}"
            if options.strict_groups:
                raise CpdmError(message)
            notes.append(message + "; left out")
        else:
            groups.append(group)
    if not groups:
        raise CpdmError(f"no rater group has usable {noun} in campaign {campaign!r}")
    return groups


def check_target(data: CampaignData, target: str) -> None:
    if target not in data.questions:
        raise CpdmError(f"no ratings for question {target!r} in campaign {data.campaign!r} "
                        f"(questions: {', '.join(data.questions)})")


def paper_scale(pairs: pd.DataFrame, reference: pd.DataFrame | None) -> tuple[float | None, str | None]:
    """x_ref for the paper's CM: the reference pairs' median product, else the campaign's own pairs'."""
    from cpdm.metric import reference_scale

    if reference is not None and len(reference):
        return reference_scale(reference["m_sem"], reference["m_style"]), "reference pairs"
    scored = pairs.dropna(subset=["m_sem", "m_style"])
    if len(scored) == 0:
        return None, None
    product = float(np.median(scored["m_sem"] * scored["m_style"]))
    return (product, "campaign pairs") if product > 0 else (None, None)
