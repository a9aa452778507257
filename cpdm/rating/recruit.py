"""Open recruitment links: lay (or artist) raters who join a campaign in numbers through one study link.

Artists are invited one by one (:mod:`cpdm.rating.auth`); crowd platforms
(Prolific, MTurk, a university participant pool) send every participant to
one study address with their platform id in a query parameter, and expect a
completion code or a redirect at the end. A recruitment link is that address::

    http://HOST:8501/?join=SECRET&PROLIFIC_PID=5f3c…

What it guarantees, and its limits:

- The link's secret (32 random bytes, 43 characters; only its sha256 is stored, and it
  is shown once, like an invite token) plus the participant's platform id is
  the credential. The rater's own token is derived from both (an HMAC keyed
  by the secret), and only that token's hash is stored, so a leaked
  database still signs nobody in. The same id coming back, on any device,
  resumes the same rater; someone who knows only a participant's id, or only
  a link of another study, cannot. Someone who has both the study link and a
  participant's platform id *can* continue as that participant: the crowd
  platform hands the link to every participant, so the platform id is the
  only thing that tells two of them apart. Platform ids are not secret from
  the platform; this is the usual trust model of crowd studies.
- A rater is created only after consent, on the first visit, in one write
  transaction (BEGIN IMMEDIATE) that also counts the link's quota: however
  many arrive at once, at most ``quota`` raters are admitted, and a platform
  id is admitted at most once per campaign (a UNIQUE constraint).
- After the quota, after ``closes_at`` or once the link is closed, new
  visitors see "this study is full/closed"; admitted raters can finish.
- Visits that carry no valid platform id (or no valid link), and new raters,
  are rate-limited per client address. Addresses are kept only as a keyed
  hash, for a day. Behind a reverse proxy every visitor has the proxy's
  address unless the app is told to trust ``X-Forwarded-For``
  (see :func:`client_address`).
- Each rater gets ``per_rater`` pairs (attention checks included), claimed
  by the campaign's usual overlap rules (:mod:`cpdm.rating.assignment`),
  from the link's campaign only. When they are done (or the campaign has
  nothing left for them, or it was closed) they reach the end page with the
  completion code and/or the redirect, whether or not they passed the
  attention checks: platforms require it, and failed checks flag the rater
  as usual (the exports say so).

Why one file of this length: it is one job, a recruitment link from its
creation to its end page. Admission counts the quota, applies the rate
limits and adds the rater in one transaction, so the link, visit, admission
and end-page code share their queries and private helpers; split, each part
would import the others' internals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from urllib.parse import urlencode, urlsplit

from cpdm.errors import CpdmError
from cpdm.rating.auth import TOKEN_PATTERN, Rater, get_rater, hash_token, insert_rater, new_token
from cpdm.store.time import format_time, utc_now
from cpdm.store.workspace import RATING_ROLES

# The query parameter that carries a recruitment link's secret.
JOIN_PARAM = "join"
# A crowd platform's participant id: Prolific's 24 hex digits, MTurk's worker ids, a pool's numbers.
PLATFORM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A query parameter's name as platforms spell them (PROLIFIC_PID, workerId, SONA_ID, …).
ID_PARAM_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
COMPLETION_CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Parameters the app itself reads; a platform id may not hide behind one of them.
RESERVED_PARAMS = (JOIN_PARAM, "token")
DEFAULT_SIGNUPS_PER_ADDRESS = 10  # new raters per client address per hour
SIGNUP_WINDOW = timedelta(hours=1)
BAD_VISITS_PER_WINDOW = 20  # visits without a valid link or platform id, per client address
BAD_VISIT_WINDOW = timedelta(minutes=10)
EVENTS_KEPT = timedelta(days=1)
_CLIENT_SALT_KEY = "client_address_salt"
_LOCAL_CLIENT = "local"  # the app's own machine (Streamlit reports no address for loopback)


@dataclass(frozen=True)
class RecruitLink:
    """A recruitment link as stored, with how many raters it admitted and how many finished."""

    id: int
    campaign: int
    campaign_name: str
    role: str
    quota: int | None
    per_rater: int | None
    id_param: str | None
    completion_code: str | None
    completion_url: str | None
    closes_at: str | None
    closed_at: str | None
    signups_per_address: int
    created_at: str
    admitted: int
    finished: int

    def state(self, now: datetime) -> str:
        """``open``, ``closed`` (by hand or by ``closes_at``) or ``full`` (the quota is reached)."""
        if self.closed_at is not None or (self.closes_at is not None and self.closes_at <= format_time(now)):
            return "closed"
        if self.quota is not None and self.admitted >= self.quota:
            return "full"
        return "open"


@dataclass(frozen=True)
class Recruitment:
    """What a rater who joined through a link is held to: the link's campaign, pairs and end page."""

    rater: int
    link: int
    campaign: int
    per_rater: int | None
    platform_id: str
    admitted_at: str
    finished_at: str | None
    completion_code: str | None
    completion_url: str | None


# What a visitor of a recruitment link is shown, by the state of the visit: a title and a line.
REFUSALS = {
    "invalid": ("This link is not valid",
                "The study link you opened is not known here. It may have been mistyped or cut short; "
                "please open it again from the study's page on your platform."),
    "missing_id": ("Your participant id is missing",
                   "This study link needs the participant id your platform adds to it. Please open the "
                   "study again from your platform's study page (do not copy the address by hand)."),
    "bad_id": ("Your participant id cannot be read",
               "The participant id in this link is not one we can accept. Please open the study again "
               "from your platform's study page."),
    "full": ("This study is full",
             "Thank you for your interest: the study has all the participants it needs. Please return "
             "the study on your platform."),
    "closed": ("This study is closed",
               "Thank you for your interest: the study no longer takes new participants. Please return "
               "the study on your platform."),
    "elsewhere": ("You have taken part already",
                  "Your participant id joined this study through another link. Please continue through the "
                  "link you used first."),
    "revoked": ("This link is not valid",
                "Your participation has been stopped by the study team. Please contact them through "
                "your platform."),
    "too_many": ("Too many attempts",
                 "This study link was opened too often from your network in a short time. Please wait a "
                 "few minutes and try again."),
}


@dataclass(frozen=True)
class Visit:
    """A visit of a recruitment link: its state, and what signs the visitor in once admitted.

    ``state`` is ``admitted`` (``token`` signs the rater in), ``may_join``
    (show the consent page; :func:`admit` creates the rater) or one of
    :data:`REFUSALS`.
    """

    state: str
    link: RecruitLink | None = None
    platform_id: str | None = None
    token: str | None = None

    @property
    def refusal(self) -> tuple[str, str] | None:
        """(title, line) of the page a refused visitor sees; None when the visitor may go on."""
        return REFUSALS.get(self.state)


@dataclass(frozen=True)
class Admission:
    """The outcome of :func:`admit`: ``admitted`` or ``resumed`` with the rater and token, else a refusal state."""

    state: str
    rater: Rater | None = None
    token: str | None = None


# --- Links: create, list, close ------------------------------------------------------------------------------


def parse_closes(text: str) -> datetime:
    """When a link stops admitting: an ISO date (the end of that day, UTC) or date and time (UTC unless given)."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = datetime.fromisoformat(text).date()
            return datetime.combine(day, time.max, tzinfo=timezone.utc)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise CpdmError(f"--closes must be a date (2026-12-31) or a date and time (2026-12-31T18:00), "
                        f"got {text!r}") from exc
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _checked_link_settings(role, quota, per_rater, id_param, completion_code, completion_url, signups_per_address):
    """Refuse settings a link cannot work with, each with a message naming the option."""
    if role not in RATING_ROLES:
        raise CpdmError(f"a recruitment link is for raters of role {' or '.join(RATING_ROLES)}, not {role!r}")
    for name, value in (("quota", quota), ("per-rater", per_rater), ("per-address", signups_per_address)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise CpdmError(f"--{name} must be a whole number of at least 1, got {value!r}")
    if id_param is not None and (not ID_PARAM_PATTERN.match(id_param) or id_param in RESERVED_PARAMS):
        raise CpdmError(f"--id-param must be a query parameter name such as PROLIFIC_PID (letters, digits, _; "
                        f"not {' or '.join(RESERVED_PARAMS)}), got {id_param!r}")
    if completion_code is not None and not COMPLETION_CODE_PATTERN.match(completion_code):
        raise CpdmError(f"--completion-code must be 1 to 64 letters, digits, _ or -, got {completion_code!r}")
    if completion_url is not None:
        parts = urlsplit(completion_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CpdmError(f"--completion-url must be an http(s) address, got {completion_url!r}")


def create_link(
    ws, campaign_id: int, role: str = "lay", *, quota: int | None = None, per_rater: int | None = None,
    id_param: str | None = None, completion_code: str | None = None, completion_url: str | None = None,
    closes_at: datetime | None = None, signups_per_address: int = DEFAULT_SIGNUPS_PER_ADDRESS,
    now: datetime | None = None,
) -> tuple[RecruitLink, str]:
    """Create a recruitment link for a campaign and role; return it with its secret (the only time it exists).

    The campaign must ask ratings of the role (its overlap), and has at most
    one link per role that is not closed: a second is refused until the first
    is closed (:func:`close_link`). A link that closes in the past is refused.
    """
    _checked_link_settings(role, quota, per_rater, id_param, completion_code, completion_url, signups_per_address)
    now = now or utc_now()
    if closes_at is not None and closes_at <= now:
        raise CpdmError(f"--closes {format_time(closes_at)} is already past")
    secret = new_token()
    with ws.transaction() as conn:
        row = conn.execute("SELECT name, json_extract(overlap, '$.' || ?) FROM campaigns WHERE id = ?",
                           (role, campaign_id)).fetchone()
        if row is None:
            raise CpdmError(f"no campaign with id {campaign_id}")
        if not row[1]:
            raise CpdmError(f"campaign {row[0]!r} asks no ratings from {role} raters (its overlap); "
                            "set one first on the Campaigns page")
        unclosed = conn.execute(
            "SELECT id FROM recruit_links WHERE campaign = ? AND role = ? AND closed_at IS NULL "
            "AND (closes_at IS NULL OR closes_at > ?)", (campaign_id, role, format_time(now)),
        ).fetchone()
        if unclosed is not None:
            raise CpdmError(f"campaign {row[0]!r} already has a {role} recruitment link (id {unclosed[0]}) that is "
                            "not closed; close it first (cpdm campaign recruit NAME --close)")
        _client_salt(ws)  # made now (in this transaction), so visits only read it
        link_id = conn.execute(
            "INSERT INTO recruit_links (campaign, role, secret_hash, quota, per_rater, id_param, completion_code, "
            "completion_url, closes_at, signups_per_address, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (campaign_id, role, hash_token(secret), quota, per_rater, id_param, completion_code, completion_url,
             None if closes_at is None else format_time(closes_at), signups_per_address, format_time(now)),
        ).lastrowid
    return get_link(ws, link_id), secret


_LINK_SELECT = (
    "SELECT l.id, l.campaign, c.name, l.role, l.quota, l.per_rater, l.id_param, l.completion_code, "
    "l.completion_url, l.closes_at, l.closed_at, l.signups_per_address, l.created_at, "
    "(SELECT COUNT(*) FROM recruited_raters r WHERE r.link = l.id), "
    "(SELECT COUNT(*) FROM recruited_raters r WHERE r.link = l.id AND r.finished_at IS NOT NULL) "
    "FROM recruit_links l JOIN campaigns c ON c.id = l.campaign "
)


def _link_in(conn, where: str, params) -> RecruitLink | None:
    row = conn.execute(_LINK_SELECT + f"WHERE {where}", params).fetchone()
    return None if row is None else RecruitLink(*row)


def get_link(ws, link_id: int) -> RecruitLink:
    link = _link_in(ws.conn, "l.id = ?", (link_id,))
    if link is None:
        raise CpdmError(f"no recruitment link with id {link_id}")
    return link


def list_links(ws, campaign_id: int | None = None) -> list[RecruitLink]:
    """Recruitment links, oldest first; of one campaign when given."""
    where, params = ("WHERE l.campaign = ? ", (campaign_id,)) if campaign_id is not None else ("", ())
    return [RecruitLink(*row) for row in ws.conn.execute(_LINK_SELECT + where + "ORDER BY l.id", params)]


def close_link(ws, link_id: int, now: datetime | None = None) -> RecruitLink:
    """Stop a link admitting new raters, at once; raters it admitted can still finish."""
    with ws.transaction() as conn:
        updated = conn.execute("UPDATE recruit_links SET closed_at = COALESCE(closed_at, ?) WHERE id = ?",
                               (format_time(now or utc_now()), link_id)).rowcount
    if not updated:
        raise CpdmError(f"no recruitment link with id {link_id}")
    return get_link(ws, link_id)


def open_links_of(ws, campaign_id: int, role: str, now: datetime | None = None) -> list[RecruitLink]:
    """The campaign's links for the role that are not closed (full ones included): what ``--close`` closes."""
    return [link for link in list_links(ws, campaign_id)
            if link.role == role and link.state(now or utc_now()) != "closed"]


def describe_link(link: RecruitLink) -> str:
    """A link's settings in one line."""
    return ", ".join([
        f"quota {link.quota}" if link.quota else "no quota",
        f"{link.per_rater} pairs each" if link.per_rater else "all the pairs the campaign has for each",
        f"participant id from {link.id_param}" if link.id_param else "participant ids made by the app",
        f"completion code {link.completion_code}" if link.completion_code else "no completion code",
        f"redirect to {link.completion_url}" if link.completion_url else "no redirect",
        f"closes {link.closes_at}" if link.closes_at else "no closing date",
    ])


LINK_COLUMNS = ["id", "role", "state", "admitted", "finished", "pairs_each", "id_param", "completion", "closes"]


def link_row(link: RecruitLink, now: datetime | None = None) -> dict:
    """A link as one row of a table (:data:`LINK_COLUMNS`): state, admitted of quota, end page, closing time."""
    completion = [part for part in (link.completion_code and f"code {link.completion_code}",
                                    link.completion_url and "redirect") if part]
    return {
        "id": link.id, "role": link.role, "state": link.state(now or utc_now()),
        "admitted": f"{link.admitted}/{link.quota}" if link.quota else str(link.admitted),
        "finished": link.finished, "pairs_each": link.per_rater or "all",
        "id_param": link.id_param or "(made by the app)",
        "completion": " + ".join(completion) or "-",
        "closes": f"closed {link.closed_at[:16]}" if link.closed_at else (link.closes_at or "-")[:16],
    }


def link_url(secret: str, base_url: str = "http://127.0.0.1:8501") -> str:
    """The study address to give the crowd platform (the platform appends its participant id parameter)."""
    return f"{base_url.rstrip('/')}/?{urlencode({JOIN_PARAM: secret})}"


def capacity_note(ws, link: RecruitLink) -> str | None:
    """A warning when quota × items per rater (pairs, or 2afc triplets) exceeds what the role still needs."""
    if link.quota is None or link.per_rater is None:
        return None
    open_slots = ws.conn.execute(  # a 2afc campaign's work is its offered triplets
        "SELECT TOTAL(MAX(json_extract(c.overlap, '$.' || :role) - pl.load, 0)) FROM pair_load pl "
        "JOIN campaigns c ON c.id = pl.campaign WHERE pl.campaign = :campaign AND pl.role = :role",
        {"role": link.role, "campaign": link.campaign},
    ).fetchone()[0] + ws.conn.execute(
        "SELECT TOTAL(MAX(json_extract(c.overlap, '$.' || :role) - tl.load, 0)) FROM triplet_load tl "
        "JOIN campaigns c ON c.id = tl.campaign JOIN campaign_triplets ct ON ct.campaign = tl.campaign "
        "AND ct.triplet = tl.triplet AND ct.priority > 0 WHERE tl.campaign = :campaign AND tl.role = :role",
        {"role": link.role, "campaign": link.campaign},
    ).fetchone()[0]
    wanted = link.quota * link.per_rater
    if wanted <= open_slots:
        return None
    comparative = ws.conn.execute("SELECT kind = '2afc' FROM campaigns WHERE id = ?", (link.campaign,)).fetchone()[0]
    items, answers = ("triplets", "judgments") if comparative else ("pairs", "ratings")
    return (f"{link.quota} raters × {link.per_rater} {items} = {wanted} exceeds the {int(open_slots)} {link.role} "
            f"{answers} the campaign still needs: the last raters will get fewer {items} (attention checks aside)")


# --- Who is visiting --------------------------------------------------------------------------------------------


def client_address(ip: str | None, forwarded_for: str | None = None, trust_forwarded: bool = False) -> str:
    """The client address a visit is counted under.

    ``ip`` is the connection's address (None on the app's own machine). Behind
    a reverse proxy that is the proxy's; with ``trust_forwarded`` (only when
    the proxy sets the header itself) the last address of ``X-Forwarded-For``,
    the one the proxy appended, is used instead.
    """
    if trust_forwarded and isinstance(forwarded_for, str):
        last = forwarded_for.split(",")[-1].strip()
        if last:
            return last
    return ip if isinstance(ip, str) and ip else _LOCAL_CLIENT


def _client_salt(ws) -> bytes:
    """The workspace's secret for hashing client addresses, made on first use."""
    salt = ws.get_meta(_CLIENT_SALT_KEY) or ws.ensure_meta(_CLIENT_SALT_KEY, secrets.token_hex(16))
    return bytes.fromhex(salt)


def _client_key(ws, address: str) -> str:
    """A client address as stored: a keyed hash, so the workspace never holds participants' addresses."""
    return hmac.new(_client_salt(ws), address.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def _recent_events(conn, client: str, kind: str, since: datetime) -> int:
    return conn.execute("SELECT COUNT(*) FROM recruit_events WHERE client = ? AND kind = ? AND at > ?",
                        (client, kind, format_time(since))).fetchone()[0]


def _record_event(conn, client: str, kind: str, now: datetime) -> None:
    """Count one bad visit or sign-up for the client, and drop events older than :data:`EVENTS_KEPT`."""
    conn.execute("DELETE FROM recruit_events WHERE at < ?", (format_time(now - EVENTS_KEPT),))
    conn.execute("INSERT INTO recruit_events (client, kind, at) VALUES (?, ?, ?)", (client, kind, format_time(now)))


def rater_token(secret: str, link_id: int, platform_id: str) -> str:
    """The rater's sign-in token, derived from the link's secret and the platform id (never stored in clear)."""
    message = f"cpdm-recruit\x1f{link_id}\x1f{platform_id}".encode("utf-8")
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def _platform_id(link: RecruitLink, params: dict) -> tuple[str | None, str | None]:
    """(platform id, refusal state) from the visit's query parameters, for a link that names its id parameter."""
    value = params.get(link.id_param)
    if value is None or not str(value).strip():
        return None, "missing_id"
    value = str(value).strip()
    return (value, None) if PLATFORM_ID_PATTERN.match(value) else (None, "bad_id")


def visit(ws, params: dict, address: str, now: datetime | None = None) -> Visit:
    """What a visit of a recruitment link leads to (see :class:`Visit`); ``params`` are the URL's query parameters.

    Read-only, except that a visit without a valid link or platform id is
    counted against the client's address; past :data:`BAD_VISITS_PER_WINDOW`
    such visits, new visitors from that address are refused for a while
    (admitted raters still get in).
    """
    now = now or utc_now()
    secret = str(params.get(JOIN_PARAM) or "")
    link = _link_in(ws.conn, "l.secret_hash = ?", (hash_token(secret),)) if TOKEN_PATTERN.match(secret) else None
    platform_id, refused = (None, "invalid") if link is None else (None, None)
    if link is not None and link.id_param is not None:
        platform_id, refused = _platform_id(link, params)
    if platform_id is not None:
        token = rater_token(secret, link.id, platform_id)
        state = _known_visitor_state(ws.conn, link, platform_id)
        if state is not None:
            return Visit(state, link, platform_id, token if state == "admitted" else None)
    client = _client_key(ws, address)
    if _recent_events(ws.conn, client, "bad_visit", now - BAD_VISIT_WINDOW) >= BAD_VISITS_PER_WINDOW:
        return Visit("too_many", link, platform_id)
    if refused is not None:
        with ws.transaction() as conn:
            _record_event(conn, client, "bad_visit", now)
        return Visit(refused, link, platform_id)
    state = link.state(now)
    return Visit("may_join" if state == "open" else state, link, platform_id)


def _known_visitor_state(conn, link: RecruitLink, platform_id: str) -> str | None:
    """``admitted``, ``revoked`` or ``elsewhere`` for a platform id the campaign already admitted; else None.

    An id admitted through another link of the campaign is not resumed through
    this one: its rater's token derives from the other link's secret.
    """
    row = conn.execute(
        "SELECT r.link, x.disabled FROM recruited_raters r JOIN raters x ON x.id = r.rater "
        "WHERE r.campaign = ? AND r.platform_id = ?", (link.campaign, platform_id),
    ).fetchone()
    if row is None:
        return None
    link_id, disabled = row
    if link_id != link.id:
        return "elsewhere"
    return "revoked" if disabled else "admitted"


def admit(ws, params: dict, address: str, now: datetime | None = None) -> Admission:
    """Admit the visitor of a recruitment link as a new rater (consent given), or resume the one they are.

    The whole decision is one write transaction (BEGIN IMMEDIATE): the quota
    count, the closing time, the client's sign-up limit and the insert, so
    simultaneous first visits never admit more than the quota, and a platform
    id is admitted once. A link without an id parameter gives each new
    visitor an id of its own; the returned token is then their only way back.
    """
    now = now or utc_now()
    seen = visit(ws, params, address, now)
    if seen.state == "admitted":
        return Admission("resumed", _rater_of_token(ws, seen.token), seen.token)
    if seen.state != "may_join":
        return Admission(seen.state)
    secret, link = str(params[JOIN_PARAM]), seen.link
    platform_id = seen.platform_id or f"visitor-{secrets.token_hex(12)}"
    token = rater_token(secret, link.id, platform_id)
    client = _client_key(ws, address)
    with ws.transaction() as conn:
        state = _admission_refusal(conn, link.id, platform_id, client, now)
        if state is None:
            _insert_rater(conn, link, platform_id, token, now)
            _record_event(conn, client, "signup", now)
    if state not in (None, "admitted"):
        return Admission(state)
    return Admission("admitted" if state is None else "resumed", _rater_of_token(ws, token), token)


def _admission_refusal(conn, link_id: int, platform_id: str, client: str, now: datetime) -> str | None:
    """Inside the admitting transaction: why this visitor cannot be admitted now (None: admit them).

    ``admitted`` when the same id was admitted by a request that committed
    first (a double click, a second tab): the visitor is then resumed.
    """
    link = _link_in(conn, "l.id = ?", (link_id,))
    known = _known_visitor_state(conn, link, platform_id)
    if known is not None:
        return known
    state = link.state(now)
    if state != "open":
        return state
    if _recent_events(conn, client, "signup", now - SIGNUP_WINDOW) >= link.signups_per_address:
        return "too_many"
    return None


def _insert_rater(conn, link: RecruitLink, platform_id: str, token: str, now: datetime) -> int:
    """The new rater (consented now) and its recruitment row; the name says only which link and in what order."""
    number = conn.execute("SELECT COUNT(*) FROM recruited_raters WHERE link = ?", (link.id,)).fetchone()[0] + 1
    now_text = format_time(now)
    rater_id = insert_rater(conn, f"{link.role} via link {link.id} #{number}", link.role, token,
                            consented_at=now_text, created_at=now_text)
    conn.execute(
        "INSERT INTO recruited_raters (rater, link, campaign, platform_id, admitted_at) VALUES (?, ?, ?, ?, ?)",
        (rater_id, link.id, link.campaign, platform_id, now_text),
    )
    return rater_id


def _rater_of_token(ws, token: str) -> Rater:
    row = ws.conn.execute("SELECT id FROM raters WHERE token_hash = ?", (hash_token(token),)).fetchone()
    return get_rater(ws, row[0])


# --- A recruited rater's work and end page ---------------------------------------------------------------------

_RECRUITMENT_SELECT = (
    "SELECT r.rater, r.link, r.campaign, l.per_rater, r.platform_id, r.admitted_at, r.finished_at, "
    "l.completion_code, l.completion_url FROM recruited_raters r JOIN recruit_links l ON l.id = r.link "
)


def recruitment_of(conn, rater_id: int) -> Recruitment | None:
    """The recruitment of a rater who joined through a link; None for an invited rater."""
    row = conn.execute(_RECRUITMENT_SELECT + "WHERE r.rater = ?", (rater_id,)).fetchone()
    return None if row is None else Recruitment(*row)


def next_item_for(ws, rater, now: datetime | None = None, device: str | None = None):
    """The rater's item: for a recruited rater, from their link's campaign up to their pairs; else :func:`next_item`.

    A rater holds at most one pair at a time (a claim returns the held one),
    so claiming only while fewer than ``per_rater`` pairs are answered never
    gives anyone more, however many tabs ask at once. When a recruited rater
    has nothing more to do (their pairs are done, the campaign has none left
    for them, or it was closed and they hold none) their finish time is
    recorded and None is returned: the app then shows the end page.
    """
    from cpdm.rating.assignment import claim_next, held_item, next_item

    recruitment = recruitment_of(ws.conn, rater.id)
    if recruitment is None:
        return next_item(ws, rater, now, device)
    if recruitment.finished_at is not None:
        return None
    from cpdm.rating.assignment import campaign_allows_device

    if not campaign_allows_device(ws.conn, recruitment.campaign, device):
        return None  # not finished: the rater comes back on a device the campaign allows
    now = now or utc_now()
    campaign_open = ws.conn.execute("SELECT status = 'open' FROM campaigns WHERE id = ?",
                                    (recruitment.campaign,)).fetchone()[0]
    if campaign_open:  # the per-rater limit is checked inside the claim's transaction
        item = claim_next(ws, recruitment.campaign, rater, now, limit=recruitment.per_rater)
    else:
        item = held_item(ws, recruitment.campaign, rater, now)
    if item is None:
        with ws.transaction() as conn:
            conn.execute("UPDATE recruited_raters SET finished_at = COALESCE(finished_at, ?) WHERE rater = ?",
                         (format_time(now), rater.id))
    return item


def finished_recruitment(ws, rater) -> Recruitment | None:
    """The recruitment of a rater who reached the end of their link's study (the end page's facts); else None."""
    recruitment = recruitment_of(ws.conn, rater.id)
    return recruitment if recruitment is not None and recruitment.finished_at is not None else None


__all__ = [
    "Admission", "JOIN_PARAM", "LINK_COLUMNS", "RecruitLink", "Recruitment", "REFUSALS", "Visit", "admit",
    "capacity_note", "client_address", "close_link", "create_link", "describe_link", "finished_recruitment",
    "get_link", "link_row", "link_url", "list_links", "next_item_for", "open_links_of", "parse_closes",
    "rater_token", "recruitment_of", "visit",
]
