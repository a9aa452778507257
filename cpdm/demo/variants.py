"""The demo's variants: the baseline and three stand-ins for what unlearning methods do.

The stand-ins are not unlearning runs: they are drawn by the painter
(:mod:`cpdm.demo.painter`), keeping or replacing the anchor's content and
style. They are recorded with method ``demo`` and names that say what they
do, and their params say which real method each one imitates, so they cannot
be mistaken for a real ESD, UCE or SLD variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpdm.store.workspace import BASELINE_METHOD

DEMO_METHOD = "demo"
ORIGINAL = "original"
STYLE_ERASED = "demo-style-erased"
CONTENT_CHANGED = "demo-content-changed"
UNRELATED = "demo-unrelated"


@dataclass(frozen=True)
class VariantRelation:
    """How a demo variant's generations relate to their anchor."""

    name: str
    method: str
    content: str  # "same" or "other"
    style: str  # "same" or "other"
    stands_for: str
    imitates: str  # the real method whose effect it stands in for ("" for the baseline)

    def params(self) -> dict:
        """What the variants row records about it."""
        params = {"content": self.content, "style": self.style, "stands_for": self.stands_for}
        if self.imitates:
            params["imitates"] = self.imitates
        return params


VARIANTS: tuple[VariantRelation, ...] = (
    VariantRelation(ORIGINAL, BASELINE_METHOD, "same", "same", "the model before unlearning: a near-copy", ""),
    VariantRelation(STYLE_ERASED, DEMO_METHOD, "same", "other", "style erased, subject kept",
                    "a style-erasing method such as ESD: the subject is drawn in another demo artist's style"),
    VariantRelation(CONTENT_CHANGED, DEMO_METHOD, "other", "same", "content changed, style kept",
                    "a concept-editing method such as UCE: other content in the anchor artist's style"),
    VariantRelation(UNRELATED, DEMO_METHOD, "other", "other", "unrelated output: nothing left to copy",
                    "an inference-time guard such as SLD at full strength: other content in another style"),
)
RELATIONS = {variant.name: variant for variant in VARIANTS}
