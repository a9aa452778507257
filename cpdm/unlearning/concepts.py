"""When a text names a concept being erased: one exact rule for the unlearning report and the methods.

A text names a concept when both are the same words: equal once leading and
trailing whitespace is dropped, runs of whitespace are read as one space,
and case is ignored. Nothing is matched by substring: "Ma" names neither
"Manet" nor "Mark Rothko", and "Claude Monet" does not name "Monet".

The unlearning report takes as the concept's (target) anchors those whose
artist or title names a concept; UCE leaves out of its preserve set the
study's artists and the preserve file's entries that name a concept. Both
use :func:`names_concept`, so an artist the report counts as retained is
one the erasure preserved, and the other way round.

Importing this module loads no torch.
"""

from __future__ import annotations


def concept_key(text: str | None) -> str:
    """The form two texts are compared in: words joined by single spaces, case folded ("" for None)."""
    return " ".join(str(text or "").split()).casefold()


def names_concept(text: str | None, concepts) -> bool:
    """True when ``text`` and one of ``concepts`` are the same words (see the module docstring)."""
    key = concept_key(text)
    return bool(key) and any(key == concept_key(concept) for concept in concepts)


def anchor_names_concept(artist: str | None, title: str | None, concepts) -> bool:
    """True when an anchor's artist or its title names one of ``concepts`` (a style, or one work)."""
    return names_concept(artist, concepts) or names_concept(title, concepts)
