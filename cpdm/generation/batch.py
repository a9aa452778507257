"""Batched, resumable generation for a variant: images stored, generations recorded, pairs made as they land.

For each prompt, image k uses seed ``seed + k``, so any single image can be
made again alone. In the release's seed mode (``seed_mode`` "release") a
prompt's images are drawn as the CPDM release drew them: one generator seeded
with the seed, the prompt's ``per_prompt`` latents drawn from it in one batch;
each image records the seed, ``seed_mode`` "release" and its index k in its
params. Such an image cannot be made alone, so resuming a partly made prompt
draws the prompt's whole batch again and stores only the missing images (the
others come out the same). A generation is identified by (prompt, variant, seed,
steps, guidance, params); what is already in the workspace is skipped, so a
rerun after a crash (even SIGKILL) makes only what is missing, and so does
any other caller of :func:`run_generation` with the same settings (the
unlearning report finds the images a generate job made). Images of the tiny
random pipeline carry :data:`~cpdm.diffusion.settings.TINY_MARK` in their
params, so a run with real weights never takes one for its own. Each batch is
written in this order: image files (atomically), then the generation rows in
one transaction, then their pairs; a run killed in between leaves at most
image files without rows (harmless, reused by the rerun) or generations
without pairs (made at the start of the rerun).

Attention-check pairs (an anchor against itself, and against another anchor)
are added as generations land, so that they make up the protocol's share
(``attention_checks.rate``) of the pairs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from cpdm.curation.prompts import prompt_rows
from cpdm.store.rows import (
    GenerationRow,
    add_generations,
    add_variant,
    find_generation,
    get_variant,
    list_variants,
    make_check_pairs,
    make_pairs,
)
from cpdm.errors import CpdmError
from cpdm.executor import LocalExecutor
from cpdm.progress import progress_bar
from cpdm.store.workspace import BASELINE_METHOD
from cpdm.diffusion.settings import (  # noqa: F401  (GenerationSettings and the defaults are used from here too)
    BASELINE_VARIANT,
    PAPER_PER_PROMPT,
    PAPER_SD_MODEL,
    RELEASE_SEEDS,
    TINY_BASE,
    TINY_MARK,
    TOKENIZER_MAX_LENGTH,
    GenerationSettings,
    uses_tiny_model,
)
from cpdm.diffusion.pipeline import (
    ImageRequest,
    check_image_size,
    encoded_images,
    resolve_dtype,
    variant_tokenizer,
    prompt_token_count,
)

CPU_BATCH = 4


@dataclass(frozen=True)
class _Item:
    """One image to make: its prompt, seed, index among the prompt's images and the params that identify it."""

    prompt_id: int
    text: str
    seed: int
    params: dict
    index: int = 0

    @property
    def key(self) -> tuple[int, ...]:
        """How a report names the image: (prompt, seed); (prompt, seed, k) when the prompt's images share a seed."""
        if self.params.get("seed_mode") == RELEASE_SEEDS:
            return (self.prompt_id, self.seed, self.index)
        return (self.prompt_id, self.seed)


@dataclass
class GenerationReport:
    generated: list[int] = field(default_factory=list)  # ids of generations made by this run
    # (prompt, seed), or (prompt, seed, k) in release seed mode -> generation, made now or before
    ids: dict[tuple[int, ...], int] = field(default_factory=dict)
    skipped: int = 0  # images already in the workspace
    pairs: int = 0  # normal pairs this run added
    check_pairs: int = 0  # attention-check pairs this run added
    notes: list[str] = field(default_factory=list)  # warnings for the user (truncations, anchors without prompts)

    def summary(self) -> str:
        return (f"generated {len(self.generated)} images, skipped {self.skipped} already made; "
                f"added {self.pairs} pairs and {self.check_pairs} attention-check pairs")


@dataclass(frozen=True)
class _NewBaseline:
    """The baseline variant before it is recorded (recorded only once its model has loaded)."""

    name: str
    base_model: str
    method: str = BASELINE_METHOD


def resolve_variant(ws, name: str, base_model: str | None, offline_tiny: bool):
    """The variant to generate for, or a :class:`_NewBaseline` when the workspace has no ``original`` yet."""
    if name == BASELINE_VARIANT and all(v.name != name for v in list_variants(ws)):
        model = TINY_BASE if offline_tiny and base_model is None else (base_model or PAPER_SD_MODEL)
        return _NewBaseline(name, model)
    if base_model is not None:
        raise CpdmError("--base-model applies only when the baseline variant 'original' is first created")
    variant = get_variant(ws, name)
    if variant.status != "ready":
        raise CpdmError(f"variant {variant.name!r} is {variant.status}, not ready; generate when it is ready")
    return variant


def leaf_prompts(ws, prompt_ids: list[int] | None = None):
    """The prompts to generate from: the given ones, else each anchor's prompts that nothing was refined from."""
    rows = prompt_rows(ws, prompt_ids=prompt_ids)
    if prompt_ids:
        return rows
    parents = {row.parent for row in rows if row.parent is not None}
    return [row for row in rows if row.id not in parents]


def generation_params(settings: GenerationSettings, dtype: str, tiny: bool) -> dict:
    """The params recorded with each image of a run (with the prompt, variant, seed, steps and guidance, its key).

    ``dtype`` is the weights' precision by name (``float32``); ``tiny``
    marks images of the tiny random pipeline, never mixed with real ones.
    Release seed mode is recorded as ``seed_mode`` "release" (each image adds
    its index k); per-image seeds, the default, record nothing more, so
    images made before seed modes existed keep their identity.
    """
    params = {"scheduler": settings.scheduler, "negative": settings.negative, "height": settings.height,
              "width": settings.width, "dtype": dtype}
    if settings.seed_mode == RELEASE_SEEDS:
        params["seed_mode"] = RELEASE_SEEDS
    return {**params, **TINY_MARK} if tiny else params


def _plan(tokenizer, prompts, settings: GenerationSettings, base_params: dict, report: GenerationReport) -> list[_Item]:
    """Every image the run should end with; prompts the model's ``tokenizer`` truncates are warned about and recorded."""
    items = []
    limit = getattr(tokenizer, "model_max_length", TOKENIZER_MAX_LENGTH)
    for prompt in prompts:
        params = dict(base_params)
        tokens = prompt_token_count(tokenizer, prompt.text)
        if tokens > limit:
            params["truncated"] = {"tokens": tokens, "kept": limit}
            report.notes.append(
                f"prompt {prompt.id} has {tokens} tokens; the text encoder reads the first {limit}, "
                "the rest is cut (recorded with its images)"
            )
        items += [_Item(prompt.id, prompt.text, settings.image_seed(k), _image_params(params, settings, k), k)
                  for k in range(settings.per_prompt)]
    return items


def _image_params(params: dict, settings: GenerationSettings, k: int) -> dict:
    """Image k's params: the run's, plus k itself in release seed mode (where it, not the seed, tells images apart)."""
    return {**params, "index": k} if settings.seed_mode == RELEASE_SEEDS else params


def _made_before(ws, variant_id: int, items: list[_Item], settings: GenerationSettings) -> dict[tuple[int, ...], int]:
    """Item key -> generation id of the planned images the workspace already holds."""
    made = {}
    for item in items:
        key = (item.prompt_id, variant_id, item.seed, settings.steps, settings.guidance, item.params)
        found = find_generation(ws, *key)
        if found is not None:
            made[item.key] = found
    return made


def ensure_check_rate(ws, rate: float) -> int:
    """Add attention-check pairs until they are ``rate`` of all pairs (anchors in id order); returns how many this
    call inserted."""
    if rate <= 0:
        return 0
    normal = ws.conn.execute("SELECT COUNT(*) FROM pairs WHERE kind = 'normal'").fetchone()[0]
    checks = ws.conn.execute("SELECT COUNT(*) FROM pairs WHERE kind != 'normal'").fetchone()[0]
    needed = math.ceil(rate / (1 - rate) * normal - 1e-9)
    if checks >= needed:
        return 0
    candidates = [row[0] for row in ws.conn.execute(
        "SELECT DISTINCT anchor FROM pairs WHERE kind = 'normal' AND anchor NOT IN "
        "(SELECT anchor FROM pairs WHERE kind = 'check_identical') ORDER BY anchor"
    ).fetchall()]
    chosen = candidates[: math.ceil((needed - checks) / 2)]
    created: list[int] = []
    if chosen:
        make_check_pairs(ws, chosen, created=created)
    return len(created)


def _auto_batch_size(device, per_prompt: int) -> int:
    return per_prompt if str(device).startswith("cuda") else min(CPU_BATCH, per_prompt)


def run_generation(
    ws,
    *,
    variant: str = BASELINE_VARIANT,
    prompt_ids: list[int] | None = None,
    settings: GenerationSettings = GenerationSettings(),
    device="cpu",
    dtype: str | None = None,
    batch_size: int | None = None,
    offline_tiny: bool = False,
    base_model: str | None = None,
    check_rate: float = 0.0,
    progress: bool = True,
    pipeline=None,
    executor=None,
) -> GenerationReport:
    """Make every missing image of the chosen prompts for ``variant``, storing and pairing them as they land.

    The model loads only when an image is missing (the prompts are counted
    with its tokenizer alone); the report's ``ids`` give every image of the
    run, made now or before. ``batch_size`` None: as many as fit (on CUDA a
    batch that runs out of memory is split in half and tried again).
    ``pipeline`` lets a caller
    (tests, benchmarks) pass one already built for this variant.
    ``executor`` (:mod:`cpdm.executor`; by default this process, on
    ``device``) builds the pipeline; a remote one (Ray) makes the images on
    its workers, on its own device (``device`` is then unused), several
    batches at once. They are stored and paired here exactly as images made
    in this process.
    """
    from cpdm.curation.prompts import anchors_without_prompts

    settings.check()
    if executor is not None and executor.remote and pipeline is not None:
        raise CpdmError("give a pipeline or an executor, not both")
    executor = executor if executor is not None else LocalExecutor(device)
    if executor.remote and settings.seed_mode == RELEASE_SEEDS:
        raise CpdmError("--seed-mode release generates in this process; run it without Ray")
    torch_device = executor.device
    dtype_name = str(resolve_dtype(dtype, torch_device)).removeprefix("torch.")
    chosen = resolve_variant(ws, variant, base_model, offline_tiny)
    report = GenerationReport()
    missing = anchors_without_prompts(ws)
    if missing:
        report.notes.append(f"anchors without a prompt (nothing generated for them): {', '.join(map(str, missing))}")
    prompts = leaf_prompts(ws, prompt_ids)
    if not prompts:
        raise CpdmError("no prompts to generate from (cpdm prompts interrogate, or cpdm prompts add ANCHOR TEXT)")
    if executor.remote:  # a handle on the pipeline its workers build: they count the tokens too
        pipeline = executor.pipeline(chosen, root=ws.root, dtype=dtype, offline_tiny=offline_tiny,
                                     scheduler=settings.scheduler)
    tokenizer = pipeline.tokenizer if pipeline is not None else variant_tokenizer(chosen, offline_tiny)
    tiny = uses_tiny_model(chosen.base_model, offline_tiny)
    items = _plan(tokenizer, prompts, settings, generation_params(settings, dtype_name, tiny), report)
    if not isinstance(chosen, _NewBaseline):
        report.ids = _made_before(ws, chosen.id, items, settings)
    done = list(report.ids.values())
    todo = [item for item in items if item.key not in report.ids]
    if todo and pipeline is None:  # the model loads only when there is something to make
        pipeline = executor.pipeline(chosen, root=ws.root, dtype=dtype, offline_tiny=offline_tiny,
                                     scheduler=settings.scheduler)
    if todo and not executor.remote:
        check_image_size(pipeline, settings.height, settings.width)  # before anything is recorded
    if isinstance(chosen, _NewBaseline):  # its model loaded: record it
        chosen = get_variant(ws, add_variant(ws, chosen.name, base_model=chosen.base_model, method=BASELINE_METHOD))
    report.skipped = len(done)
    made: list[int] = []  # the normal pairs this run inserted (other runs may be making pairs at the same time)
    if done:  # a run killed after recording generations but before pairing them
        make_pairs(ws, done, created=made)
        report.check_pairs += ensure_check_rate(ws, check_rate)
    size = batch_size or _auto_batch_size(torch_device, settings.per_prompt)
    bar = progress_bar(len(todo), f"generating ({chosen.name})", unit="img", enabled=progress)

    def landed(batch: list[_Item], ids: list[int]) -> None:
        """Record a stored batch in the report and pair it."""
        report.generated += ids
        report.ids.update((item.key, made_id) for item, made_id in zip(batch, ids))
        make_pairs(ws, ids, created=made)
        report.check_pairs += ensure_check_rate(ws, check_rate)
        bar.update(len(batch))  # a cancelled job stops here, once the batch is stored and paired

    try:
        if settings.seed_mode == RELEASE_SEEDS:
            for batch, ids in _release_batches(ws, pipeline, chosen.id, items, todo, settings):
                landed(batch, ids)
            return report
        start = 0
        if executor.remote:  # every batch goes out now; the workers make several at once
            pipeline.submit([_request(todo[first : first + size], settings) for first in range(0, len(todo), size)])
        while start < len(todo):
            batch = todo[start : start + size]
            try:
                ids = _generate_batch(ws, pipeline, chosen.id, batch, settings, remote=executor.remote)
            except _OutOfMemory:
                if size == 1 or batch_size:
                    raise CpdmError(f"out of GPU memory at batch size {size}; try a smaller --batch-size or --height/--width") from None
                size //= 2
                continue
            landed(batch, ids)
            start += len(batch)
    finally:
        bar.close()
        report.pairs = len(made)
    return report


class _OutOfMemory(Exception):
    pass


def _release_batches(ws, pipeline, variant_id: int, items: list[_Item], todo: list[_Item],
                     settings: GenerationSettings):
    """Release seed mode: each prompt with a missing image drawn whole, in one batch; yields (stored items, ids).

    The batch is all of the prompt's images, since image k's noise is the
    k-th draw from the prompt's one generator; only the missing ones are
    stored. It is never split: a batch that runs out of memory is an error.
    """
    missing = {item.key for item in todo}
    for prompt_id in dict.fromkeys(item.prompt_id for item in todo):
        whole = [item for item in items if item.prompt_id == prompt_id]
        wanted = [item for item in whole if item.key in missing]
        try:
            ids = _generate_batch(ws, pipeline, variant_id, whole, settings, keep=wanted)
        except _OutOfMemory:
            raise CpdmError(f"out of GPU memory drawing a prompt's {len(whole)} images in one batch, as --seed-mode "
                            "release must; try smaller --height/--width") from None
        yield wanted, ids


def _request(batch: list[_Item], settings: GenerationSettings) -> ImageRequest:
    """What the pipeline is asked to make for a batch."""
    return ImageRequest(tuple(item.text for item in batch), tuple(item.seed for item in batch), settings.steps,
                        settings.guidance, settings.height, settings.width, settings.negative, settings.seed_mode)


def _generate_batch(ws, pipeline, variant_id: int, batch: list[_Item], settings: GenerationSettings,
                    remote: bool = False, keep: list[_Item] | None = None) -> list[int]:
    """Make (here, or by the workers behind a ``remote`` pipeline), store and record one batch; returns the ids.

    ``keep``: the items of the batch to store (default: all of them).
    """
    import torch

    from cpdm.store.images import store_image_bytes

    request = _request(batch, settings)
    try:
        images = pipeline.encoded_images(request) if remote else encoded_images(pipeline, request)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        raise _OutOfMemory() from None
    rows = []
    for item, image in zip(batch, images):
        if keep is not None and item not in keep:
            continue
        if hashlib.sha256(image.png).hexdigest() != image.sha256:  # bytes that travelled from another machine
            raise CpdmError(f"the image of prompt {item.prompt_id} seed {item.seed} arrived damaged (sha256 differs)")
        info = store_image_bytes(ws, image.png, f"generation of prompt {item.prompt_id} seed {item.seed}")
        rows.append(GenerationRow(item.prompt_id, variant_id, item.seed, settings.steps, float(settings.guidance),
                                  info.sha256, item.params))
    return add_generations(ws, rows)
