"""The variant functions of the store's write path, as unlearning uses them.

``cpdm.store.rows`` is the one write path for variants; until a workspace
has it, :mod:`cpdm.unlearning.rows_standin` provides the same functions.
"""

from __future__ import annotations

try:  # pragma: no cover - which branch runs depends on the store
    from cpdm.store.rows import Variant, add_variant, get_variant, list_variants, set_variant_status
except ImportError:  # pragma: no cover
    from cpdm.unlearning.rows_standin import Variant, add_variant, get_variant, list_variants, set_variant_status

__all__ = ["Variant", "add_variant", "get_variant", "list_variants", "set_variant_status"]
