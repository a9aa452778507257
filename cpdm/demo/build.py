"""The offline demo workspace: synthetic artists, "unlearned" variants, a campaign.

``build_demo(path, seed)`` makes a complete workspace without a network and
without any model. Anchors are drawn procedurally (numpy + PIL, 256x256 PNG)
by four synthetic artists, each with a recognisable style: a palette, a
stroke texture and a composition.

========================  ==========================================  =====================================
artist                    texture                                     composition
========================  ==========================================  =====================================
Mira Dotwell              pointillism: jittered dots on cream canvas  soft fade to the canvas at the edges
Hal Crossley              ink hatching, angle per region, on paper    wide paper margin
Bea Blockmann             flat colour blocks with heavy outlines      thick dark frame
Wen Ripple                wavy brush strokes, warped contours         dark vignette
========================  ==========================================  =====================================

The painter (:mod:`cpdm.demo.painter`) keeps style and content apart, so it
can draw an anchor's content in another artist's style, or other content in
the same style. That is how the demo's variants are made, each one
standing for what an unlearning method would do to the model:

====================  ========================  ========================  ======================================
variant               content vs the anchor     style vs the anchor       stands for
====================  ========================  ========================  ======================================
original              same                      same (shift, noise)       the model before unlearning: a near-copy
demo-style-erased     same                      another artist's          style erased, subject kept (as ESD)
demo-content-changed  other                     same                      content changed, style kept (as UCE)
demo-unrelated        other                     another artist's          unrelated output (as SLD at full strength)
====================  ========================  ========================  ======================================

The three stand-ins are recorded with method ``demo`` (see
:mod:`cpdm.demo.variants`); the original is the baseline (method
``original``).

Every variant generates ``GENERATION_SEEDS`` (two seeds) per anchor from one
template prompt per anchor ("a landscape in the style of Mira Dotwell").
Pairs: one ``normal`` pair per generation, and per anchor two attention
checks: ``check_identical`` (the anchor against itself) and
``check_unrelated`` (against a work by another artist with other content).
A campaign named ``demo`` covers every pair (two ratings per pair per role),
a comparative (2AFC) campaign ``demo-2afc`` asks "which is more of a copy?"
on balanced triplets of the same pairs (two of an anchor's generations
beside it, about two triplets per generation), and invite links are made
for one researcher, two artists and two lay raters.
Every pair is scored with the tiny random-initialised twins of the paper's
backbones, and a second, closed campaign ``demo-simulated`` over the same
pairs is rated by simulated raters (``raters.simulated = 1``), and a
closed ``demo-2afc-simulated`` over the same pairs is judged by the same
raters, so the analysis pages and ``cpdm analyze`` / ``cpdm calibrate
--campaign demo-simulated`` (or ``demo-2afc-simulated``) have data on a
fresh clone.

The simulated raters judge from those scores, not from the variant table:
random-initialised backbones do not see the painter's content/style split
(the tiny CLIP finds ``demo-content-changed`` closer to its anchor than
``demo-style-erased``, and so does the style term), so judgements drawn from
the variants could not be matched by any weighting of these distances, and
calibration could not find the weights the raters were given. Instead each
rater's "copy" answer weighs the two log distances standardised by their
spread over the reference pairs, artists 0.35 on content and lay raters 0.65
(:data:`cpdm.demo.simulate.COPY_CONTENT_WEIGHT`): planted w_std values,
which the demo's calibration recovers.

Everything is deterministic for a given seed: the same seed gives
byte-identical images and the same rows (with the same numpy and Pillow;
another build of them may round a few pixels differently). Invite tokens are derived from the
seed and the rater's name (so documented links stay valid) and, as for any
rater, only their hashes are stored. That makes demo links guessable by
anyone who knows the seed: a demo workspace is for trying cpdm on your own
machine, never for a real study. For convenience the links are also written,
in clear, to ``WORKSPACE/demo_links.txt`` (demo workspaces only).

The build is a sequence of small steps (``add_anchors``, ``add_generations``,
``add_pairs``, ``add_campaign``, ``add_2afc_campaign``, ``add_raters``,
``add_tiny_scores``, ``add_simulated_campaign``,
``add_simulated_2afc_campaign``) run on a workspace being built in a hidden
sibling folder, which replaces the target only once every step has
succeeded.

Why one file of this length: it is the build's steps in order, one function
each, so a reader follows the demo from an empty folder to a finished
workspace in one place.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cpdm.demo.painter import (
    ARTISTS,
    ArtistStyle,
    derive_int,
    make_content,
    perturb,
    render,
    render_content,
    seeded_rng,
    subject_for,
)
from cpdm.demo.variants import RELATIONS, VARIANTS, VariantRelation
from cpdm.errors import CpdmError
from cpdm.store.rows import GenerationRow, add_anchor_in, add_prompt, add_variant, make_check_pairs, make_pairs
from cpdm.store.rows import add_generations as add_generation_rows
from cpdm.store.workspace import DB_NAME, open_workspace
from cpdm.store.writer import close_writer_connection

BASE_MODEL = "demo/procedural"
GENERATION_SEEDS = (23, 24)  # 23 is the paper's seed; a second one shows seed-to-seed spread
WORKS_PER_ARTIST = 5
CAMPAIGN_NAME = "demo"
CAMPAIGN_OVERLAP = {"artist": 2, "lay": 2}
SIMULATED_CAMPAIGN_NAME = "demo-simulated"
# Eight ratings per pair and group: the tiny backbones' two log distances are strongly correlated, so fewer
# leave the planted weights hard to tell apart on the demo's 20 anchors.
SIMULATED_OVERLAP = {"artist": 8, "lay": 8}
# Comparative (2AFC) campaigns over the same pairs: an open one for the demo raters, and a closed one judged by
# the same simulated raters (balanced triplets, about two per generation).
TWO_AFC_CAMPAIGN_NAME = "demo-2afc"
SIMULATED_2AFC_CAMPAIGN_NAME = "demo-2afc-simulated"
SIMULATED_2AFC_OVERLAP = {"artist": 4, "lay": 4}
LINKS_FILE = "demo_links.txt"
DEFAULT_BASE_URL = "http://127.0.0.1:8501"

# --------------------------------------------------------------------------
# What a build returns
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoLink:
    """One invite link of the demo: who it is for, and the URL to open."""

    role: str
    name: str
    url: str
    token: str


@dataclass
class DemoInfo:
    """A summary of a built demo workspace."""

    workspace: Path
    seed: int
    artists: list[str]
    anchors: int
    generations: int
    pairs: dict[str, int]  # kind -> count
    campaign_id: int
    campaign_name: str
    relations: dict[str, VariantRelation]
    links: list[DemoLink] = field(default_factory=list)

    @property
    def researcher_link(self) -> DemoLink:
        return next(link for link in self.links if link.role == "researcher")

    @property
    def rater_links(self) -> list[DemoLink]:
        return [link for link in self.links if link.role != "researcher"]


# The people the demo invites: (role, name), in the order links are listed.
DEMO_PEOPLE: tuple[tuple[str, str], ...] = (
    ("researcher", "Demo researcher"),
    ("artist", "Demo artist 1"),
    ("artist", "Demo artist 2"),
    ("lay", "Demo lay rater 1"),
    ("lay", "Demo lay rater 2"),
)


def demo_token(seed: int, name: str) -> str:
    """The invite token of a demo rater: derived from the seed and name, so links stay the same across rebuilds."""
    digest = hashlib.sha256(f"cpdm-demo-token\x1f{seed}\x1f{name}".encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def demo_links(seed: int, base_url: str = DEFAULT_BASE_URL) -> list[DemoLink]:
    """The demo's invite links for a server at ``base_url`` (recomputed from the seed, nothing read)."""
    from cpdm.rating.auth import invite_url

    links = []
    for role, name in DEMO_PEOPLE:
        token = demo_token(seed, name)
        links.append(DemoLink(role, name, invite_url(token, base_url), token))
    return links


def base_url_for(host: str, port: int) -> str:
    """The URL a browser on this machine uses for a server bound to ``host:port``."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


# --------------------------------------------------------------------------
# Build steps
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoAnchor:
    """An anchor as the build knows it: its row id, artist, content and image."""

    id: int
    artist: ArtistStyle
    content_seed: int
    subject: str
    image: str


def add_anchors(ws, seed: int) -> list[DemoAnchor]:
    """Step 1: draw WORKS_PER_ARTIST works for each artist and store them as anchors."""
    anchors = []
    with ws.transaction() as conn:
        for artist_index, artist in enumerate(ARTISTS):
            for work in range(1, WORKS_PER_ARTIST + 1):
                content_seed = derive_int("anchor-content", seed, artist.name, work)
                content = make_content(content_seed)
                image = render_content(content, artist, texture_seed=derive_int("anchor-texture", seed, artist.name, work))
                info = _store(ws, image, f"{artist.name} work {work}")
                anchor_id = add_anchor_in(
                    conn, info.sha256, artist=artist.name, title=f"{content.subject.capitalize()} no. {work}",
                    category="style", source=f"{BASE_MODEL} seed {seed}", license="CC0 (synthetic demo image)",
                )
                anchors.append(DemoAnchor(anchor_id, artist, content_seed, content.subject, info.sha256))
    return anchors


def _store(ws, image: Image.Image, name: str):
    """Store a demo image as PNG; zlib level 1 because the textured images barely compress further."""
    import io

    from cpdm.store.images import store_image_bytes

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return store_image_bytes(ws, buffer.getvalue(), name)


def _other_artist(artist: ArtistStyle, rng: np.random.Generator) -> ArtistStyle:
    others = [a for a in ARTISTS if a.name != artist.name]
    return others[int(rng.integers(len(others)))]


def _other_content_seed(subject: str, *parts) -> int:
    """A content seed whose subject differs from ``subject`` (so "other content" is plainly other)."""
    for attempt in range(100):
        candidate = derive_int("other-content", attempt, *parts)
        if subject_for(candidate) != subject:
            return candidate
    raise AssertionError("no content seed with another subject found in 100 tries")  # 4 subjects: unreachable


def generate_variant_image(
    anchor: DemoAnchor, anchor_image: Image.Image, variant: VariantRelation, demo_seed: int, gen_seed: int
) -> tuple[Image.Image, dict]:
    """What ``variant`` "generates" for ``anchor`` at ``gen_seed``: the image and the params that made it."""
    rng = seeded_rng("generation", demo_seed, anchor.id, variant.name, gen_seed)
    if variant.content == "same" and variant.style == "same":
        # The near-copy perturbs the anchor's own pixels, as a memorising model would reproduce them.
        image, params = perturb(anchor_image, rng)
        return image, {"content_seed": anchor.content_seed, "style": anchor.artist.name, "perturbation": params}
    style = anchor.artist if variant.style == "same" else _other_artist(anchor.artist, rng)
    if variant.content == "same":
        content_seed = anchor.content_seed
    else:
        content_seed = _other_content_seed(anchor.subject, demo_seed, anchor.id, variant.name, gen_seed)
    texture_seed = derive_int("generation-texture", demo_seed, anchor.id, variant.name, gen_seed)
    image = render(content_seed, style, texture_seed)
    return image, {"content_seed": content_seed, "style": style.name, "texture_seed": texture_seed}


def prompt_text(anchor: DemoAnchor) -> str:
    """The template prompt of an anchor: its subject in its artist's style."""
    return f"a {anchor.subject} in the style of {anchor.artist.name}"


def add_variants(ws) -> dict[str, int]:
    """Step 2a: one variants row per demo variant; returns name -> id."""
    return {
        variant.name: add_variant(ws, variant.name, base_model=BASE_MODEL, method=variant.method,
                                  params=variant.params())
        for variant in VARIANTS
    }


def add_generations(ws, seed: int, anchors: list[DemoAnchor], variant_ids: dict[str, int]) -> list[int]:
    """Step 2b: a template prompt per anchor, and GENERATION_SEEDS generations of it per variant."""
    from cpdm.store.images import load_image

    generation_ids = []
    for anchor in anchors:
        prompt_id = add_prompt(ws, anchor.id, prompt_text(anchor), origin="template",
                               params={"template": "a {subject} in the style of {artist}"})
        anchor_image = load_image(ws, anchor.image)
        rows = []
        for variant in VARIANTS:
            for gen_seed in GENERATION_SEEDS:
                image, params = generate_variant_image(anchor, anchor_image, variant, seed, gen_seed)
                info = _store(ws, image, f"{variant.name} generation of anchor {anchor.id}")
                # Drawn, not sampled: no steps or guidance.
                rows.append(GenerationRow(prompt_id, variant_ids[variant.name], gen_seed, None, None, info.sha256,
                                          params))
        generation_ids += add_generation_rows(ws, rows)
    return generation_ids


def add_pairs(ws, anchors: list[DemoAnchor], generation_ids: list[int]) -> list[int]:
    """Step 3: a normal pair per generation, and an identical and an unrelated check per anchor."""
    unrelated = {anchor.id: _unrelated_anchor(anchor, anchors).id for anchor in anchors}
    return make_pairs(ws, generation_ids) + make_check_pairs(ws, [a.id for a in anchors], unrelated=unrelated)


def _unrelated_anchor(anchor: DemoAnchor, anchors: list[DemoAnchor]) -> DemoAnchor:
    """A work by another artist, preferably of another subject, chosen deterministically."""
    others = [a for a in anchors if a.artist.name != anchor.artist.name]
    other_subject = [a for a in others if a.subject != anchor.subject]
    candidates = other_subject or others
    return candidates[derive_int("unrelated", anchor.id) % len(candidates)]


def add_campaign(ws, pair_ids: list[int]) -> int:
    """Step 4: the campaign ``demo`` over every pair, default protocol, two ratings per pair per role."""
    from cpdm.rating.campaigns import create_campaign

    return create_campaign(ws, CAMPAIGN_NAME, pair_ids, overlap=dict(CAMPAIGN_OVERLAP))


def add_simulated_campaign(ws, pair_ids: list[int], seed: int) -> int:
    """Step 7: the closed campaign ``demo-simulated``, fully rated by simulated raters.

    It holds the same pairs as ``demo`` but is closed, so the live demo
    raters never get its pairs and still have the whole ``demo`` campaign to
    rate. Simulated answers follow the pairs' scores (step 6), with planted
    weights on the standardised log distances (see the module docstring), so
    the calibration pages can show them recovered.
    """
    from cpdm.rating.campaigns import create_campaign, set_campaign_status
    from cpdm.demo.simulate import add_simulated_ratings

    campaign_id = create_campaign(ws, SIMULATED_CAMPAIGN_NAME, pair_ids, overlap=dict(SIMULATED_OVERLAP))
    set_campaign_status(ws, campaign_id, "closed")
    add_simulated_ratings(ws, campaign_id, seed=seed, n_artists=SIMULATED_OVERLAP["artist"] + 1,
                          n_lay=SIMULATED_OVERLAP["lay"] + 1)
    return campaign_id


def normal_pair_ids(ws) -> list[int]:
    """Every normal pair of the workspace (what triplets are made of)."""
    return [row[0] for row in ws.conn.execute("SELECT id FROM pairs WHERE kind = 'normal' ORDER BY id")]


def add_2afc_campaign(ws, seed: int) -> int:
    """Step 4b: the open comparative campaign ``demo-2afc``: balanced triplets of every anchor's generations.

    Its attention checks use the same check pairs as ``demo``. Demo raters
    get its triplets once they have rated ``demo`` (the older campaign comes
    first).
    """
    from cpdm.rating.triplets import create_2afc_campaign

    return create_2afc_campaign(ws, TWO_AFC_CAMPAIGN_NAME, normal_pair_ids(ws), design="balanced",
                                overlap=dict(CAMPAIGN_OVERLAP), seed=seed)


def add_simulated_2afc_campaign(ws, seed: int) -> int:
    """Step 8: the closed campaign ``demo-2afc-simulated``, judged by the simulated raters of step 7.

    Balanced triplets over the same pairs; each choice follows the
    difference of the two generations' latent copy scores, the ones the
    raters' ratings follow (:func:`cpdm.demo.simulate.add_simulated_judgments`),
    so the 2AFC analysis finds the same weights.
    """
    from cpdm.demo.simulate import add_simulated_judgments
    from cpdm.rating.campaigns import set_campaign_status
    from cpdm.rating.triplets import create_2afc_campaign

    campaign_id = create_2afc_campaign(ws, SIMULATED_2AFC_CAMPAIGN_NAME, normal_pair_ids(ws), design="balanced",
                                       overlap=dict(SIMULATED_2AFC_OVERLAP), seed=seed)
    set_campaign_status(ws, campaign_id, "closed")
    add_simulated_judgments(ws, campaign_id, seed=seed, n_artists=SIMULATED_2AFC_OVERLAP["artist"] + 1,
                            n_lay=SIMULATED_2AFC_OVERLAP["lay"] + 1)
    return campaign_id


def add_tiny_scores(ws) -> None:
    """Step 6: score every pair with the tiny random-initialised twins of the default backbones (``tiny:`` keys).

    The defaults are the CPDM release's metric (CLIP ViT-L-14/openai and the
    release's InceptionV3, ``cpdm-inception``), so the demo shows the paper's
    combination; the Inception twin is the full network with random weights.
    Their numbers only show the pipeline working; real studies score with
    real weights (``cpdm score``). The baseline's generations also define
    CM's reference set here.
    """
    from cpdm.scoring.engine import score_pairs

    score_pairs(ws, offline_tiny=True, progress=False, precision="fp32")  # the same scores on every machine


def add_raters(ws, seed: int, base_url: str = DEFAULT_BASE_URL) -> list[DemoLink]:
    """Step 5: invite the demo people (tokens derived from the seed); returns their links."""
    from cpdm.rating.auth import create_rater

    links = demo_links(seed, base_url)
    for link in links:
        create_rater(ws, link.name, link.role, token=link.token)
    return links


def write_links_file(root: Path, seed: int, links: list[DemoLink]) -> Path:
    """Write the demo's links, in clear, to ``root/demo_links.txt`` (tab-separated role, name, URL)."""
    lines = [
        f"# cpdm demo workspace (seed {seed}): invite links. Demo only: these tokens follow from the seed.",
        "# role\tname\turl",
    ]
    lines += [f"{link.role}\t{link.name}\t{link.url}" for link in links]
    path = Path(root) / LINKS_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# Building, refusing, replacing
# --------------------------------------------------------------------------

# What a workspace folder holds; --force removes these and nothing else.
_WORKSPACE_ENTRIES = (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", "images", "exports", LINKS_FILE)


def existing_demo_seed(path: Path) -> str | None:
    """The seed of the demo workspace at ``path``, or None if there is nothing there.

    Raises CpdmError when ``path`` holds something the demo must never
    overwrite: a real (non-demo) workspace, or a non-empty folder that is not
    a workspace.
    """
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        raise CpdmError(f"{path} is a file, not a folder; choose another --workspace for the demo")
    if not (path / DB_NAME).exists():
        if any(path.iterdir()):
            raise CpdmError(f"{path} is not empty and holds no cpdm workspace; choose an empty or new folder for the demo")
        return None
    with open_workspace(path) as ws:
        if not ws.is_demo:
            raise CpdmError(
                f"{path} holds a real workspace, not a demo; the demo never overwrites one (choose another --workspace)"
            )
        return ws.get_meta("demo_seed", "?")


def _remove_workspace_entries(path: Path) -> None:
    for name in _WORKSPACE_ENTRIES:
        entry = path / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def build_demo(
    ws_path, seed: int = 0, *, force: bool = False, base_url: str = DEFAULT_BASE_URL, analysis_data: bool = True
) -> DemoInfo:
    """Build the demo workspace at ``ws_path`` (see the module docstring for what it holds).

    ``analysis_data=False`` leaves out the simulated ratings and the
    tiny-model scores (a faster build when only the rating app is wanted).

    An existing demo there is refused unless ``force`` (then it is replaced);
    a real workspace or a non-empty foreign folder is always refused. The
    workspace is built in a hidden sibling folder and moved into place only
    when complete, so a failed build leaves the target as it was.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise CpdmError(f"demo seed must be a non-negative integer, got {seed!r}")
    target = Path(ws_path).absolute()
    previous_seed = existing_demo_seed(target)
    if previous_seed is not None and not force:
        raise CpdmError(
            f"a demo workspace already exists at {target} (seed {previous_seed}); use --force to rebuild it"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        info = _build_into(staging, seed, base_url, analysis_data)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful move
    info.workspace = target
    return info


def _build_into(root: Path, seed: int, base_url: str, analysis_data: bool = True) -> DemoInfo:
    """Run every build step on a fresh workspace at ``root`` and close it cleanly."""
    ws = open_workspace(root, create=True)
    try:
        ws.set_meta("demo", "1")
        ws.set_meta("demo_seed", str(seed))
        anchors = add_anchors(ws, seed)
        variant_ids = add_variants(ws)
        generation_ids = add_generations(ws, seed, anchors, variant_ids)
        pair_ids = add_pairs(ws, anchors, generation_ids)
        campaign_id = add_campaign(ws, pair_ids)
        add_2afc_campaign(ws, seed)
        links = add_raters(ws, seed, base_url)
        if analysis_data:
            add_tiny_scores(ws)  # first: the simulated raters judge from the scores
            add_simulated_campaign(ws, pair_ids, seed)
            add_simulated_2afc_campaign(ws, seed)
        pair_counts = dict(ws.conn.execute("SELECT kind, COUNT(*) FROM pairs GROUP BY kind ORDER BY kind").fetchall())
        ws.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in cpdm.db before the folder moves
    finally:
        close_writer_connection(ws)  # simulated submits wrote through it; nothing may stay open on the moved files
        ws.close()
    write_links_file(root, seed, links)
    return DemoInfo(
        workspace=root,
        seed=seed,
        artists=[artist.name for artist in ARTISTS],
        anchors=len(anchors),
        generations=len(generation_ids),
        pairs=pair_counts,
        campaign_id=campaign_id,
        campaign_name=CAMPAIGN_NAME,
        relations=dict(RELATIONS),
        links=links,
    )


def _move_into_place(staging: Path, target: Path) -> None:
    """Replace the target's workspace entries with the staged ones (other files in the folder stay)."""
    if not target.exists():
        os.replace(staging, target)
        return
    _remove_workspace_entries(target)
    for entry in sorted(staging.iterdir()):
        os.replace(entry, target / entry.name)
