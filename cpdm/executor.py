"""Where batches compute: in this process (:class:`LocalExecutor`) or on a Ray cluster (``RayExecutor``).

The scoring engine (:mod:`cpdm.scoring.engine`) and generation
(:mod:`cpdm.generation.batch`) ask one :class:`Executor` for their models
and their batches' results, and store what comes back themselves; they never
ask which executor it is. :class:`cpdm.jobs.ray_executor.RayExecutor` is
the other implementation: its backbones are stand-ins and its pipelines
handles, its batches run as Ray tasks, several at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from cpdm.backbones import load_backbone
from cpdm.compute_device import resolve_device
from cpdm.scoring.features import feature_rows
from cpdm.store.images import open_stored_image


class Executor(Protocol):
    """What the engine and generation need of an executor."""

    device: object  # where the batches compute (a torch.device, or its name)
    remote: bool  # whether images travel as bytes to other processes (no pipeline of this process is used)

    @property
    def batches_in_flight(self) -> int:
        """How many batches are computed at once (the engine scores that many batches' pairs together)."""

    def backbones(self, wanted: Sequence[tuple[str, str, int | None]], mode: str) -> list:
        """The backbones ``(role, name, image_size)`` (or their stand-ins) that an extractor runs."""

    def feature_rows(self, extractor, batches: list[list[str]], needs: list[dict],
                     image_path: Callable[[str], Path]) -> Iterator[tuple[list, dict]]:
        """For each batch of image shas, in order: its feature cache rows ``(sha, backbone key, blob)`` and the
        precision each backbone chose where the extractor itself did not choose it (``{}`` when it did)."""

    def pipeline(self, variant, *, root=None, dtype: str | None = None, offline_tiny: bool = False,
                 scheduler: str = "ddim"):
        """The variant's pipeline (a handle, for a remote executor)."""


class LocalExecutor:
    """Batches computed one at a time in this process, on ``device``."""

    remote = False
    batches_in_flight = 1

    def __init__(self, device="cpu"):
        self.device = resolve_device(device)

    def backbones(self, wanted: Sequence[tuple[str, str, int | None]], mode: str) -> list:
        return [load_backbone(name, mode=mode, device=str(self.device), image_size=size, role=role)
                for role, name, size in wanted]

    def feature_rows(self, extractor, batches: list[list[str]], needs: list[dict],
                     image_path: Callable[[str], Path]) -> Iterator[tuple[list, dict]]:
        for batch, need in zip(batches, needs):
            paths = {sha: image_path(sha) for sha in batch}  # the database is read from this thread only
            images = extractor.map(lambda sha: open_stored_image(paths[sha], sha), batch)
            yield feature_rows(extractor, batch, images, need), {}

    def pipeline(self, variant, *, root=None, dtype: str | None = None, offline_tiny: bool = False,
                 scheduler: str = "ddim"):
        # Here, not above: scoring uses this executor too and must not load diffusers.
        from cpdm.diffusion.pipeline import variant_pipeline

        return variant_pipeline(variant, root=root, device=self.device, dtype=dtype, offline_tiny=offline_tiny,
                                scheduler=scheduler)
