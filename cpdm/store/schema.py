"""The schema: the value sets its columns admit, and the migrations that build it version by version.

``MIGRATIONS`` is a list of functions, the n-th of which upgrades a database
at schema version n-1 to version n (:mod:`cpdm.store.workspace` runs them
and keeps the version in ``PRAGMA user_version``). Append new functions;
never edit one that has shipped: a migration copies what it needs (the
pair-load recount of version 5, say) rather than calling code that may
change. Version 1's time defaults were milliseconds before ``SQL_NOW``;
``parse_time`` reads both.

Why one file of this length: it is the whole history of the tables, one
function per version, each with the docstring that says what that version
changed.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Callable

import sqlite_utils

from cpdm.errors import CpdmError
from cpdm.store.time import SQL_NOW, format_time, utc_now

ANCHOR_CATEGORIES = ("style", "portrait", "character", "illustration")
PROMPT_ORIGINS = ("interrogator", "llm", "template", "manual")
PAIR_KINDS = ("normal", "check_identical", "check_unrelated")
VARIANT_STATUSES = ("pending", "training", "ready", "failed")
BASELINE_METHOD = "original"  # the variant method of a model nothing was unlearned from
ROLES = ("artist", "lay", "researcher")
RATING_ROLES = ("artist", "lay")  # the roles that rate pairs


def canonical_json(value) -> str:
    """The one text form of stored params: keys sorted, so equal params compare equal as text."""
    return json.dumps(value, sort_keys=True)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


SCHEMA_V1 = f"""
CREATE TABLE images (
    sha256 TEXT PRIMARY KEY,
    path TEXT NOT NULL,              -- relative to the workspace
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    format TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE anchors (
    id INTEGER PRIMARY KEY,
    image TEXT NOT NULL REFERENCES images(sha256),
    artist TEXT,
    title TEXT,
    category TEXT NOT NULL DEFAULT 'style' CHECK (category IN {_in(ANCHOR_CATEGORIES)}),
    source TEXT,
    license TEXT,
    UNIQUE (image)
);
CREATE TABLE variants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,       -- short label: original, esd, uce, ...
    base_model TEXT NOT NULL,
    method TEXT NOT NULL,            -- 'original' when nothing was unlearned
    concept TEXT,
    params TEXT NOT NULL DEFAULT '{{}}',
    weights_path TEXT
);
CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    anchor INTEGER NOT NULL REFERENCES anchors(id),
    text TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN {_in(PROMPT_ORIGINS)}),
    params TEXT NOT NULL DEFAULT '{{}}'
);
CREATE TABLE generations (
    id INTEGER PRIMARY KEY,
    prompt INTEGER NOT NULL REFERENCES prompts(id),
    variant INTEGER NOT NULL REFERENCES variants(id),
    seed INTEGER,
    steps INTEGER,
    guidance REAL,
    image TEXT NOT NULL REFERENCES images(sha256),
    params TEXT NOT NULL DEFAULT '{{}}'
);
-- A pair is what a rater judges and what the metric scores: the anchor
-- ("original") against a second image. For normal pairs that image is a
-- generation's. Attention checks show the anchor itself (check_identical) or
-- an unrelated image (check_unrelated) and have no generation.
CREATE TABLE pairs (
    id INTEGER PRIMARY KEY,
    anchor INTEGER NOT NULL REFERENCES anchors(id),
    generation INTEGER REFERENCES generations(id),
    image TEXT NOT NULL REFERENCES images(sha256),
    kind TEXT NOT NULL DEFAULT 'normal' CHECK (kind IN {_in(PAIR_KINDS)}),
    UNIQUE (anchor, image, kind)
);
CREATE TABLE features (
    image TEXT NOT NULL REFERENCES images(sha256),
    backbone TEXT NOT NULL,
    blob BLOB NOT NULL,
    PRIMARY KEY (image, backbone)
);
CREATE TABLE scores (
    pair INTEGER NOT NULL REFERENCES pairs(id),
    semantic TEXT NOT NULL,          -- e.g. ViT-L-14/openai
    style TEXT NOT NULL,             -- e.g. vgg19
    m_sem REAL NOT NULL,
    m_style REAL NOT NULL,
    scored_at TEXT NOT NULL DEFAULT ({SQL_NOW}),
    PRIMARY KEY (pair, semantic, style)
);
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    protocol TEXT NOT NULL,          -- the protocol's TOML text, frozen at creation
    overlap TEXT NOT NULL DEFAULT '{{"artist": 3, "lay": 3}}',  -- JSON: ratings per pair per role
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at TEXT NOT NULL DEFAULT ({SQL_NOW})
);
CREATE TABLE campaign_pairs (
    campaign INTEGER NOT NULL REFERENCES campaigns(id),
    pair INTEGER NOT NULL REFERENCES pairs(id),
    PRIMARY KEY (campaign, pair)
);
CREATE TABLE raters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN {_in(ROLES)}),
    token_hash TEXT NOT NULL UNIQUE, -- sha256 of the invite token (the token itself is never stored)
    disabled INTEGER NOT NULL DEFAULT 0,
    simulated INTEGER NOT NULL DEFAULT 0,
    consented_at TEXT,
    flagged INTEGER NOT NULL DEFAULT 0,
    flag_reason TEXT,
    created_at TEXT NOT NULL DEFAULT ({SQL_NOW})
);
CREATE TABLE assignments (
    campaign INTEGER NOT NULL REFERENCES campaigns(id),
    pair INTEGER NOT NULL REFERENCES pairs(id),
    rater INTEGER NOT NULL REFERENCES raters(id),
    status TEXT NOT NULL DEFAULT 'assigned' CHECK (status IN ('assigned', 'done', 'skipped', 'expired')),
    assigned_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (campaign, pair, rater)
);
CREATE INDEX assignments_by_rater ON assignments (campaign, rater, status);
CREATE TABLE ratings (
    id INTEGER PRIMARY KEY,
    campaign INTEGER NOT NULL REFERENCES campaigns(id),
    pair INTEGER NOT NULL REFERENCES pairs(id),
    rater INTEGER NOT NULL REFERENCES raters(id),
    question TEXT NOT NULL,
    value INTEGER,                   -- NULL when the rater skipped the pair
    skip_reason TEXT,
    shown_at TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    seconds REAL,                    -- submitted_at - shown_at
    too_fast INTEGER NOT NULL DEFAULT 0,
    nonce TEXT NOT NULL,             -- one per submit: a resent submit is a no-op
    UNIQUE (nonce, question),
    UNIQUE (campaign, pair, rater, question)
);
CREATE INDEX ratings_by_pair ON ratings (campaign, pair);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{{}}',
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    progress REAL NOT NULL DEFAULT 0,
    message TEXT,
    worker TEXT,
    heartbeat_at TEXT,
    error TEXT,
    created_at TEXT NOT NULL DEFAULT ({SQL_NOW}),
    started_at TEXT,
    finished_at TEXT
);
CREATE TABLE calibrations (
    id INTEGER PRIMARY KEY,
    campaign INTEGER NOT NULL REFERENCES campaigns(id),
    target TEXT NOT NULL,            -- the protocol question fitted, e.g. copy
    rater_group TEXT NOT NULL,       -- artists, lay or all
    w REAL NOT NULL,
    ref_scale REAL NOT NULL,
    stats TEXT NOT NULL DEFAULT '{{}}',
    created_at TEXT NOT NULL DEFAULT ({SQL_NOW})
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
"""


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    for statement in _split_sql(SCHEMA_V1):
        conn.execute(statement)


def _split_sql(script: str) -> list[str]:
    """Split a schema script into statements (it has no semicolons inside them).

    ``executescript`` would commit the open migration transaction, so each
    statement is run on its own.
    """
    return [statement for statement in script.split(";") if statement.strip()]


# MIGRATIONS[n-1] upgrades a database from version n-1 to version n. Append
# new functions; never edit one that has shipped. (Version 1's time defaults
# were milliseconds before SQL_NOW; parse_time reads both.)
def _migrate_to_2(conn: sqlite3.Connection) -> None:
    """Rating assignment at scale: a per-pair load counter and an index on open assignments.

    ``pair_load`` holds, for each normal pair of a campaign and each rater
    role, how many raters of that role hold the pair (rated it, or were
    assigned it and have not timed out). Choosing a rater's next pair is then
    an index range scan instead of an aggregate over every assignment.
    """
    conn.execute(
        "CREATE TABLE pair_load ("
        " campaign INTEGER NOT NULL REFERENCES campaigns(id),"
        " role TEXT NOT NULL,"
        " pair INTEGER NOT NULL REFERENCES pairs(id),"
        " load INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (campaign, role, pair)) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX pair_load_by_load ON pair_load (campaign, role, load, pair)")
    conn.execute("CREATE INDEX assignments_open ON assignments (campaign, status, expires_at)")


def _migrate_to_3(conn: sqlite3.Connection) -> None:
    """Reference distances for the metric's scale: anchors against other anchors' generations.

    ``cpdm score`` stores, per backbone pair, the distances of each anchor to
    a bounded sample of generations of OTHER anchors; their median is the
    reference scale x_ref of CM's Norm (see cpdm.metric).
    """
    conn.execute(
        "CREATE TABLE reference_distances ("
        " anchor INTEGER NOT NULL REFERENCES anchors(id),"
        " image TEXT NOT NULL REFERENCES images(sha256),"
        " semantic TEXT NOT NULL,"
        " style TEXT NOT NULL,"
        " m_sem REAL NOT NULL,"
        " m_style REAL NOT NULL,"
        " PRIMARY KEY (anchor, image, semantic, style))"
    )


def _migrate_to_4(conn: sqlite3.Connection) -> None:
    """An index on pair kind, so a rater's next attention check is found without scanning every pair."""
    conn.execute("CREATE INDEX pairs_by_kind ON pairs (kind, id)")


def _migrate_to_5(conn: sqlite3.Connection) -> None:
    """Curation, unlearning and jobs: lineage and status of variants and prompts, a key for generations.

    * variants: ``parent`` (the variant it was derived from), ``concepts``
      (a JSON list; the old single ``concept`` moves into it), ``status``
      (existing variants are ``ready``), ``status_message``,
      ``artifact_path`` (the old ``weights_path``) and ``artifact_sha256``,
      ``job`` (the job that made it) and ``created_at`` (unknown, NULL, for
      variants made before this version).
    * prompts: ``parent`` (the prompt it was refined from) and ``author``
      (the interrogator or LLM model, ``template`` or ``manual``; taken from
      the origin, or the params' ``model``, where that says it).
    * generations: one row per (prompt, variant, seed, steps, guidance,
      params), params as canonical JSON. Duplicates that no pair uses are
      removed (the lowest id stays); duplicates that pairs use stop the
      upgrade with a message naming them, since merging them would merge
      their ratings.
    * jobs: ``attempts``, ``lease_expires_at``, ``result`` (JSON) and
      ``device`` (what the job needs; NULL for any).
    * pair_load: recounted for every campaign. Claims now trust the
      counters, and earlier simulated ratings were written around them.
    * features, scores and reference distances of ``cpdm-inception`` are
      deleted: the backbone of that name became the CPDM release's own
      network (pytorch-fid's InceptionV3 at 299×299, mean over blocks), so
      values cached under it by earlier versions would mix with new ones.
      ``cpdm score`` computes them again.
    """
    _upgrade_variants_to_5(conn)
    conn.execute("ALTER TABLE prompts ADD COLUMN parent INTEGER REFERENCES prompts(id)")
    conn.execute("ALTER TABLE prompts ADD COLUMN author TEXT")
    conn.execute(
        "UPDATE prompts SET author = CASE WHEN origin IN ('template', 'manual') THEN origin "
        "WHEN json_valid(params) THEN json_extract(params, '$.model') END"
    )
    _upgrade_generations_to_5(conn)
    conn.execute("ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE jobs ADD COLUMN lease_expires_at TEXT")
    conn.execute("ALTER TABLE jobs ADD COLUMN result TEXT")
    conn.execute("ALTER TABLE jobs ADD COLUMN device TEXT")
    conn.execute("UPDATE jobs SET attempts = 1 WHERE status != 'queued' OR started_at IS NOT NULL")
    now_text = format_time(utc_now())
    for (campaign_id,) in conn.execute("SELECT id FROM campaigns").fetchall():
        _recount_pair_load_5(conn, campaign_id, now_text)
    _forget_old_inception(conn)


# Keys of the cpdm-inception backbone in any mode or forced size ("tiny:cpdm-inception@512", say).
_OLD_INCEPTION_KEYS = "(backbone_column = 'cpdm-inception' OR backbone_column LIKE '%:cpdm-inception%' " \
                      "OR backbone_column LIKE 'cpdm-inception@%')"


def _forget_old_inception(conn: sqlite3.Connection) -> None:
    """Delete what earlier versions cached for ``cpdm-inception`` (see :func:`_migrate_to_5`)."""
    conn.execute(f"DELETE FROM features WHERE {_OLD_INCEPTION_KEYS.replace('backbone_column', 'backbone')}")
    for table in ("scores", "reference_distances"):
        conn.execute(f"DELETE FROM {table} WHERE {_OLD_INCEPTION_KEYS.replace('backbone_column', 'style')}")


def _upgrade_variants_to_5(conn: sqlite3.Connection) -> None:
    """The variants columns of version 5 (see :func:`_migrate_to_5`)."""
    conn.execute("ALTER TABLE variants ADD COLUMN parent INTEGER REFERENCES variants(id)")
    conn.execute("ALTER TABLE variants ADD COLUMN concepts TEXT NOT NULL DEFAULT '[]'")
    conn.execute(
        "ALTER TABLE variants ADD COLUMN status TEXT NOT NULL DEFAULT 'ready' "
        f"CHECK (status IN {_in(VARIANT_STATUSES)})"
    )
    conn.execute("ALTER TABLE variants ADD COLUMN status_message TEXT")
    conn.execute("ALTER TABLE variants ADD COLUMN artifact_path TEXT")
    conn.execute("ALTER TABLE variants ADD COLUMN artifact_sha256 TEXT")
    conn.execute("ALTER TABLE variants ADD COLUMN job INTEGER REFERENCES jobs(id)")
    conn.execute("ALTER TABLE variants ADD COLUMN created_at TEXT")
    conn.execute(
        "UPDATE variants SET artifact_path = weights_path, "
        "concepts = CASE WHEN TRIM(IFNULL(concept, '')) = '' THEN '[]' ELSE json_array(concept) END"
    )
    conn.execute("ALTER TABLE variants DROP COLUMN concept")
    conn.execute("ALTER TABLE variants DROP COLUMN weights_path")


def _upgrade_generations_to_5(conn: sqlite3.Connection) -> None:
    """Canonical params, duplicates removed or refused, and the unique key (see :func:`_migrate_to_5`)."""
    for generation_id, params in conn.execute("SELECT id, params FROM generations").fetchall():
        try:
            canonical = canonical_json(json.loads(params))
        except ValueError:
            continue  # not JSON: kept as written, compared as text
        if canonical != params:
            conn.execute("UPDATE generations SET params = ? WHERE id = ?", (canonical, generation_id))
    duplicates = conn.execute(
        f"SELECT g.id, EXISTS (SELECT 1 FROM pairs p WHERE p.generation = g.id), "
        f"(SELECT MIN(k.id) FROM generations k WHERE {_SAME_GENERATION_KEY}) "
        f"FROM generations g WHERE EXISTS (SELECT 1 FROM generations k WHERE k.id < g.id AND {_SAME_GENERATION_KEY})"
    ).fetchall()
    in_use = [(duplicate, kept) for duplicate, used, kept in duplicates if used]
    if in_use:
        listed = ", ".join(f"{duplicate} (same as {kept})" for duplicate, kept in in_use[:10])
        raise CpdmError(
            f"generations {listed} repeat another generation's prompt, variant, seed, steps, guidance and params "
            "and have pairs; delete the repeated generations' pairs (and their ratings and scores) with the "
            "cpdm that made them, then open the workspace again"
        )
    conn.executemany("DELETE FROM generations WHERE id = ?", [(duplicate,) for duplicate, _, _ in duplicates])
    conn.execute(f"CREATE UNIQUE INDEX generations_key ON generations ({GENERATION_KEY})")


# The columns that identify a generation; NULL steps or guidance (no sampler) compare equal.
GENERATION_KEY = "prompt, variant, IFNULL(seed, -1), IFNULL(steps, -1), IFNULL(guidance, -1), params"
_SAME_GENERATION_KEY = (
    "k.prompt = g.prompt AND k.variant = g.variant AND k.seed IS g.seed AND k.steps IS g.steps "
    "AND k.guidance IS g.guidance AND k.params = g.params"
)


def _recount_pair_load_5(conn: sqlite3.Connection, campaign_id: int, now_text: str) -> None:
    """Rebuild a campaign's ``pair_load`` rows from its assignments and ratings, as version 5 counted them.

    A frozen copy of :func:`cpdm.rating.rules.recount_pair_load` as it was when version 5 shipped:
    a migration never changes, whatever the live recount becomes.

    A rater holds a pair who rated it, or holds an assignment to it that has
    not timed out at ``now_text``.
    """
    conn.execute("DELETE FROM pair_load WHERE campaign = ?", (campaign_id,))
    roles = " UNION ALL ".join(f"SELECT '{role}' AS role" for role in RATING_ROLES)
    conn.execute(
        f"""
        WITH holders AS (
            SELECT pair, rater FROM assignments WHERE campaign = :campaign
              AND (status = 'done' OR (status = 'assigned' AND expires_at > :now))
            UNION
            SELECT pair, rater FROM ratings WHERE campaign = :campaign AND value IS NOT NULL
        ), counts AS (
            SELECT h.pair, r.role, COUNT(*) AS n FROM holders h JOIN raters r ON r.id = h.rater
            GROUP BY h.pair, r.role
        )
        INSERT INTO pair_load (campaign, role, pair, load)
        SELECT cp.campaign, roles.role, cp.pair, COALESCE(c.n, 0)
        FROM campaign_pairs cp JOIN pairs p ON p.id = cp.pair AND p.kind = 'normal'
        CROSS JOIN ({roles}) AS roles
        LEFT JOIN counts c ON c.pair = cp.pair AND c.role = roles.role
        WHERE cp.campaign = :campaign
        """,
        {"campaign": campaign_id, "now": now_text},
    )



def _migrate_to_6(conn: sqlite3.Connection) -> None:
    """The job queue: retry caps, cancel requests, ETA, the device a job ran on, and dependencies.

    * jobs: ``title`` (a short human label), ``max_attempts`` (how many
      claims a job may have before a failure is final), ``cancel_requested``
      (set by ``cpdm jobs cancel``; the running job stops at its next step),
      ``eta_seconds`` (the running job's estimate) and ``ran_on`` (the device
      the worker ran it on; ``device`` stays what the job asked for).
    * job_dependencies: one row per (job, parent): a queued job is claimed
      only once every parent is done; a parent that fails or is cancelled
      fails its waiting children.
    """
    conn.execute("ALTER TABLE jobs ADD COLUMN title TEXT")
    conn.execute("ALTER TABLE jobs ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3")
    conn.execute("ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE jobs ADD COLUMN eta_seconds REAL")
    conn.execute("ALTER TABLE jobs ADD COLUMN ran_on TEXT")
    conn.execute(
        "CREATE TABLE job_dependencies ("
        " job INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        " parent INTEGER NOT NULL REFERENCES jobs(id),"
        " PRIMARY KEY (job, parent), CHECK (job != parent))"
    )
    conn.execute("CREATE INDEX job_dependencies_parent ON job_dependencies(parent)")
    conn.execute("CREATE INDEX jobs_status ON jobs(status, id)")


def _migrate_to_7(conn: sqlite3.Connection) -> None:
    """Open recruitment links: crowd raters who join a campaign through one study link (cpdm.rating.recruit).

    * recruit_links: one link per campaign and role, known by the sha256 of
      its secret (the secret itself is shown once, like an invite token);
      ``quota`` (raters it admits, NULL for no limit), ``per_rater`` (pairs
      each rater gets, NULL for as many as the campaign has for them),
      ``id_param`` (the query parameter carrying the crowd platform's
      participant id; NULL: the app makes an id per visitor), the completion
      code and/or URL of the study's end page, ``closes_at`` (no new raters
      from then on), ``closed_at`` (closed by hand) and
      ``signups_per_address`` (new raters per client address per hour).
    * recruited_raters: the rater each platform id became, once per campaign
      (UNIQUE: nobody is admitted twice), with admission and finish times.
    * recruit_events: bad visits and sign-ups per client address (a keyed
      hash, never the address itself), for rate limits; rows older than a
      day are dropped as new ones arrive.
    """
    conn.execute(
        "CREATE TABLE recruit_links ("
        " id INTEGER PRIMARY KEY,"
        " campaign INTEGER NOT NULL REFERENCES campaigns(id),"
        f" role TEXT NOT NULL CHECK (role IN {_in(RATING_ROLES)}),"
        " secret_hash TEXT NOT NULL UNIQUE,"
        " quota INTEGER CHECK (quota > 0),"
        " per_rater INTEGER CHECK (per_rater > 0),"
        " id_param TEXT,"
        " completion_code TEXT,"
        " completion_url TEXT,"
        " closes_at TEXT,"
        " closed_at TEXT,"
        " signups_per_address INTEGER NOT NULL CHECK (signups_per_address > 0),"
        f" created_at TEXT NOT NULL DEFAULT ({SQL_NOW}))"
    )
    conn.execute(
        "CREATE TABLE recruited_raters ("
        " rater INTEGER PRIMARY KEY REFERENCES raters(id),"
        " link INTEGER NOT NULL REFERENCES recruit_links(id),"
        " campaign INTEGER NOT NULL REFERENCES campaigns(id),"
        " platform_id TEXT NOT NULL,"
        " admitted_at TEXT NOT NULL,"
        " finished_at TEXT,"
        " UNIQUE (campaign, platform_id))"
    )
    conn.execute("CREATE INDEX recruited_raters_by_link ON recruited_raters (link, admitted_at)")
    conn.execute(
        "CREATE TABLE recruit_events ("
        " client TEXT NOT NULL,"
        " kind TEXT NOT NULL CHECK (kind IN ('bad_visit', 'signup')),"
        " at TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX recruit_events_by_client ON recruit_events (client, kind, at)")
    conn.execute("CREATE INDEX recruit_events_by_time ON recruit_events (at)")


def _migrate_to_8(conn: sqlite3.Connection) -> None:
    """Raters' background: their answers to a protocol's questionnaire, per campaign (cpdm.rating.background).

    One row per rater, campaign, question and subject (the artist, for a
    question asked once per artist of the campaign; '' otherwise); the value
    is JSON (null for "prefer not to answer").
    """
    conn.execute(
        "CREATE TABLE background_answers ("
        " campaign INTEGER NOT NULL REFERENCES campaigns(id),"
        " rater INTEGER NOT NULL REFERENCES raters(id),"
        " question TEXT NOT NULL,"
        " subject TEXT NOT NULL DEFAULT '',"
        " value TEXT NOT NULL,"
        " answered_at TEXT NOT NULL,"
        " PRIMARY KEY (campaign, rater, question, subject))"
    )


CAMPAIGN_KINDS = ("rating", "2afc")
TRIPLET_DESIGNS = ("random", "balanced", "active")
TRIPLET_KINDS = ("normal", "check")
JUDGMENT_ANSWERS = ("left", "right", "cant_tell")


def _migrate_to_9(conn: sqlite3.Connection) -> None:
    """Comparative (2AFC) judgments: triplets, their assignment counters, and one row per answer.

    A *triplet* is an anchor with two of its pairs: two generations (a
    ``normal`` triplet), or, for an attention check, its ``check_identical``
    pair (first) against its ``check_unrelated`` pair (second). A 2AFC
    campaign (``campaigns.kind = '2afc'``) offers triplets instead of pairs;
    ``design`` says how they were chosen. ``campaign_triplets.priority``
    orders equally judged triplets (active designs raise it where a triplet
    can move w; 0 keeps a triplet out of an active queue until it is
    raised). ``triplet_assignments.left_pair`` is the side drawn at random
    when the triplet was assigned; ``judgments`` records it again with the
    answer, which is ``left``, ``right`` or ``cant_tell`` (NULL when the
    rater skipped), and ``chosen_pair`` the pair on the chosen side (NULL
    unless a side was chosen).
    """
    db = sqlite_utils.Database(conn)
    db["campaigns"].add_column("kind", str, not_null_default="rating")
    db["campaigns"].add_column("design", str)
    conn.execute(
        "CREATE TABLE triplets ("
        " id INTEGER PRIMARY KEY,"
        " anchor INTEGER NOT NULL REFERENCES anchors(id),"
        " first_pair INTEGER NOT NULL REFERENCES pairs(id),"
        " second_pair INTEGER NOT NULL REFERENCES pairs(id),"
        f" kind TEXT NOT NULL DEFAULT 'normal' CHECK (kind IN {_in(TRIPLET_KINDS)}),"
        " CHECK (first_pair != second_pair),"
        " UNIQUE (first_pair, second_pair))"
    )
    conn.execute("CREATE INDEX triplets_by_kind ON triplets (kind, id)")
    conn.execute(
        "CREATE TABLE campaign_triplets ("
        " campaign INTEGER NOT NULL REFERENCES campaigns(id),"
        " triplet INTEGER NOT NULL REFERENCES triplets(id),"
        " priority REAL NOT NULL DEFAULT 1,"
        " PRIMARY KEY (campaign, triplet))"
    )
    conn.execute(
        "CREATE TABLE triplet_load ("
        " campaign INTEGER NOT NULL REFERENCES campaigns(id),"
        " role TEXT NOT NULL,"
        " triplet INTEGER NOT NULL REFERENCES triplets(id),"
        " load INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (campaign, role, triplet))"
    )
    conn.execute("CREATE INDEX triplet_load_by_load ON triplet_load (campaign, role, load, triplet)")
    conn.execute(
        "CREATE TABLE triplet_assignments ("
        " campaign INTEGER NOT NULL REFERENCES campaigns(id),"
        " triplet INTEGER NOT NULL REFERENCES triplets(id),"
        " rater INTEGER NOT NULL REFERENCES raters(id),"
        " status TEXT NOT NULL DEFAULT 'assigned' CHECK (status IN ('assigned', 'done', 'skipped', 'expired')),"
        " left_pair INTEGER NOT NULL REFERENCES pairs(id),"
        " assigned_at TEXT NOT NULL,"
        " expires_at TEXT NOT NULL,"
        " PRIMARY KEY (campaign, triplet, rater))"
    )
    conn.execute("CREATE INDEX triplet_assignments_by_rater ON triplet_assignments (campaign, rater, status)")
    conn.execute("CREATE INDEX triplet_assignments_open ON triplet_assignments (campaign, status, expires_at)")
    conn.execute(
        "CREATE TABLE judgments ("
        " id INTEGER PRIMARY KEY,"
        " campaign INTEGER NOT NULL REFERENCES campaigns(id),"
        " triplet INTEGER NOT NULL REFERENCES triplets(id),"
        " rater INTEGER NOT NULL REFERENCES raters(id),"
        " question TEXT NOT NULL,"
        " left_pair INTEGER NOT NULL REFERENCES pairs(id),"
        " right_pair INTEGER NOT NULL REFERENCES pairs(id),"
        f" answer TEXT CHECK (answer IN {_in(JUDGMENT_ANSWERS)}),"
        " chosen_pair INTEGER REFERENCES pairs(id),"
        " skip_reason TEXT,"
        " shown_at TEXT NOT NULL,"
        " submitted_at TEXT NOT NULL,"
        " seconds REAL,"
        " too_fast INTEGER NOT NULL DEFAULT 0,"
        " nonce TEXT NOT NULL,"
        " UNIQUE (nonce, question),"
        " UNIQUE (campaign, triplet, rater, question))"
    )
    conn.execute("CREATE INDEX judgments_by_triplet ON judgments (campaign, triplet)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _migrate_to_1, _migrate_to_2, _migrate_to_3, _migrate_to_4, _migrate_to_5, _migrate_to_6, _migrate_to_7,
    _migrate_to_8, _migrate_to_9,
]
