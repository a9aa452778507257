"""Who rated a campaign, one row per rater: for the study's records and for paying crowd participants.

Three tables, from the same facts:

- :func:`rater_frame`: pseudonymised (the ratings export's rater ids), for
  sharing with the analysis: role, how the rater joined, admission and
  finish times, active time, pairs done and skipped, attention checks,
  flags.
- :func:`rater_frame` with ``identified=True``: the same plus each recruited
  rater's platform id, link and completion code, and every rater's answers
  to the protocol's background questions (``cpdm.rating.background``). It
  identifies people on the crowd platform: researchers only, kept with the
  study's personal data.
- :func:`approvals_frame`: one row per recruited rater with the decision to
  upload to the crowd platform (approve, reject or review) and why.

Active time is the time from a pair being shown to its submit, summed over
the pairs a rater answered or skipped, each capped at the protocol's
assignment timeout (a tab left open over lunch is not work).
"""

from __future__ import annotations

import pandas as pd

from cpdm.analysis.data import rater_pseudonyms
from cpdm.rating.assignment import campaign_settings
from cpdm.rating.background import answers_table, background_columns
from cpdm.rating.submit import attention_check_failures

RATER_COLUMNS = [
    "rater", "role", "joined", "admitted_at", "finished_at", "active_seconds", "pairs_done", "pairs_skipped",
    "checks_answered", "checks_failed", "too_fast", "flagged", "flag_reason", "revoked", "simulated",
]
IDENTIFIED_COLUMNS = ["platform_id", "link", "completion_code"]
APPROVAL_COLUMNS = [
    "platform_id", "decision", "reason", "completion_code", "link", "admitted_at", "finished_at", "pairs_done",
    "checks_failed",
]
FLAGGED_DECISIONS = ("reject", "review")

_MEMBERS = """
SELECT x.id AS rater_id, x.role, x.flagged, x.flag_reason, x.disabled AS revoked, x.simulated, x.consented_at,
       rr.link, rr.platform_id, rr.admitted_at, rr.finished_at, l.completion_code
FROM raters x
LEFT JOIN recruited_raters rr ON rr.rater = x.id AND rr.campaign = :campaign
LEFT JOIN recruit_links l ON l.id = rr.link
WHERE x.id IN (SELECT rater FROM assignments WHERE campaign = :campaign
               UNION SELECT rater FROM triplet_assignments WHERE campaign = :campaign
               UNION SELECT rater FROM recruited_raters WHERE campaign = :campaign)
ORDER BY x.id
"""

# One row per (rater, pair) the rater answered or skipped: every question's row shares the pair's times.
# A 2afc campaign's items are triplets, judged (or skipped) the same way: "pairs" then count triplets.
_PAIRS_DONE = """
SELECT r.rater AS rater_id, r.pair, MAX(r.value IS NULL) AS skipped, MAX(r.seconds) AS seconds,
       MAX(r.too_fast) AS too_fast
FROM ratings r WHERE r.campaign = :campaign GROUP BY r.rater, r.pair
UNION ALL
SELECT j.rater AS rater_id, j.triplet, MAX(j.answer IS NULL), MAX(j.seconds), MAX(j.too_fast)
FROM judgments j WHERE j.campaign = :campaign GROUP BY j.rater, j.triplet
"""


def _per_rater_work(ws, campaign_id: int, cap_seconds: float) -> pd.DataFrame:
    """Per rater: pairs done and skipped, too-fast pairs and active seconds (each pair capped at ``cap_seconds``)."""
    pairs = pd.read_sql_query(_PAIRS_DONE, ws.conn, params={"campaign": campaign_id})
    pairs["active"] = pairs["seconds"].astype(float).clip(upper=cap_seconds).fillna(0.0)
    pairs["answered"] = pairs["skipped"] == 0
    pairs["fast"] = pairs["answered"] & (pairs["too_fast"] == 1)
    grouped = pairs.groupby("rater_id")
    return pd.DataFrame({
        "pairs_done": grouped["answered"].sum(),
        "pairs_skipped": grouped["skipped"].sum(),
        "too_fast": grouped["fast"].sum(),
        "active_seconds": grouped["active"].sum().round(1),
    }).reset_index()


def _members(ws, campaign_id: int) -> pd.DataFrame:
    """Every rater who was given pairs in the campaign or joined it through a link, with their facts and work."""
    _overlap, protocol = campaign_settings(ws.conn, campaign_id)
    members = pd.read_sql_query(_MEMBERS, ws.conn, params={"campaign": campaign_id})
    work = _per_rater_work(ws, campaign_id, protocol.timing.assignment_timeout_minutes * 60)
    members = members.merge(work, on="rater_id", how="left")
    for column in ("pairs_done", "pairs_skipped", "too_fast"):
        members[column] = members[column].fillna(0).astype(int)
    members["active_seconds"] = members["active_seconds"].fillna(0.0)
    checks = [attention_check_failures(ws.conn, campaign_id, rater_id, protocol) for rater_id in members["rater_id"]]
    members["checks_failed"] = [failed for failed, _ in checks]
    members["checks_answered"] = [answered for _, answered in checks]
    for column in ("flagged", "revoked", "simulated"):
        members[column] = members[column].astype(bool)
    members["flag_reason"] = members["flag_reason"].fillna("")
    members["joined"] = [f"link {int(link)}" if pd.notna(link) else "invited" for link in members["link"]]
    # An invited rater was "admitted" when they consented; there is no finish for them.
    members["admitted_at"] = members["admitted_at"].fillna(members["consented_at"])
    return members


def rater_frame(ws, campaign_id: int, identified: bool = False) -> pd.DataFrame:
    """One row per rater of the campaign (see the module docstring); ``identified`` adds platform ids and
    background answers (a column per question, ``question[artist]`` for one asked per artist)."""
    members = _members(ws, campaign_id)
    pseudonyms = rater_pseudonyms(ws, members["rater_id"])
    members["rater"] = members["rater_id"].map(pseudonyms)
    if not identified:
        return members[RATER_COLUMNS].reset_index(drop=True)
    members["link"] = members["link"].astype("Int64")
    answers = answers_table(ws.conn, campaign_id)
    columns = background_columns(ws.conn, campaign_id)
    columns += sorted({column for row in answers.values() for column in row} - set(columns))  # since-removed artists
    background = pd.DataFrame([answers.get(rater_id, {}) for rater_id in members["rater_id"]],
                              columns=columns, index=members.index)
    return pd.concat([members[RATER_COLUMNS + IDENTIFIED_COLUMNS], background], axis=1).reset_index(drop=True)


def _decision(member, flagged_decision: str) -> tuple[str, str]:
    """(decision, reason) for one recruited rater's submission on the crowd platform."""
    if member.revoked:
        return "review", "stopped by the study team (link revoked)"
    if member.flagged:
        return flagged_decision, member.flag_reason or "flagged"
    if pd.isna(member.finished_at):
        return "not finished", f"{member.pairs_done + member.pairs_skipped} pairs so far; still working or left"
    return "approve", f"finished: {member.pairs_done} pairs rated, {member.checks_failed} attention checks failed"


def approvals_frame(ws, campaign_id: int, flagged_decision: str = "reject") -> pd.DataFrame:
    """One row per rater recruited into the campaign: platform id, decision and reason (see the module docstring).

    Raters flagged by attention checks get ``flagged_decision`` (``reject``,
    or ``review`` to decide by hand); check the platform's rules on
    rejections for failed attention checks before uploading.
    """
    if flagged_decision not in FLAGGED_DECISIONS:
        raise ValueError(f"flagged_decision must be one of {FLAGGED_DECISIONS}")
    members = _members(ws, campaign_id)
    members = members[members["platform_id"].notna()].reset_index(drop=True)
    decisions = [_decision(member, flagged_decision) for member in members.itertuples()]
    members["decision"] = [decision for decision, _ in decisions]
    members["reason"] = [reason for _, reason in decisions]
    members["link"] = members["link"].astype("Int64")
    return members[APPROVAL_COLUMNS]
