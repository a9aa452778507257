r"""UCE: Unified Concept Editing (Gandikota et al., WACV 2024), erasure in closed form.

Objective. For every cross-attention projection W₀ ∈ {``attn2.to_k``,
``attn2.to_v``} the edited W minimises

    λ‖W − W₀‖²_F + s_e Σ_i ‖W c_i − W₀ g_i‖² + s_p Σ_j ‖W c_j − W₀ c_j‖²,

where the c_i are text-encoder rows (token embeddings) of the concepts to
erase, g_i the aligned rows of their guide (W₀ g_i is the value a row
should now produce: the authors' "replace" technique) and c_j the rows of
the preserved prompts. Setting the gradient to zero gives

    W (λI + s_e Σ c_i c_iᵀ + s_p Σ c_j c_jᵀ) = W₀ (λI + s_e Σ g_i c_iᵀ + s_p Σ c_j c_jᵀ).

The targets are W₀'s own outputs and SD's K/V projections have no bias, so
the authors' per-layer solve ``mat1 @ inverse(mat2)`` factors into one
d×d matrix shared by every projection:

    W = W₀ M,    M = (λI + s_e Σ g_i c_iᵀ + s_p C_p)(λI + s_e Σ c_i c_iᵀ + s_p C_p)⁻¹,    C_p = Σ c_j c_jᵀ.

Which parameters change: the weight of every ``attn2.to_k`` and
``attn2.to_v`` (the release collects the same layers from the down, mid
and up blocks).

Two author releases (rohitgandikota/unified-concept-editing) differ in
which rows stand for a prompt, and give weights that differ by more than
the edit itself; ``release`` picks one, and the variant records it.

* ``2023`` (default): ``train-scripts/train_erase.py`` at commit f7222e6,
  the paper's release and the one the CPDM benchmark could have run.
  An erased concept's rows are its last real token through EOS and the
  padding; the guide's rows start at its own last real token, and both
  spans are cut to the same length, 77 − max(last_c, last_g). CLIP's text
  encoder is causal, so EOS and the padding carry a summary of the whole
  prompt, and SD's cross-attention reads them heavily. Preserved prompts
  contribute all 77 rows, and the empty prompt is always preserved first
  (it protects the unconditional branch of classifier-free guidance).
  s_p = max(0.1, 1/N) for N preserved prompts, the empty one included.
  Guides: "art" for styles (the README's command, ``--guided_concept
  'art'``, and its ``towards_art`` runs), the empty prompt for objects
  (its default, "towards_uncond"; it encodes " ", which CLIP's tokenizer
  reads as "").
* ``2024``: ``trainscripts/uce_sd_erase.py`` at commit ea9644f (its last
  change). Every prompt is one row, its last real token (BOS for the empty
  prompt), for erased, guide and preserved prompts alike; only the
  preserve set given is preserved (no empty prompt); s_p = 1. Guides "art"
  for styles and "" for objects, as in 2023.

Both: λ = 0.5, s_e = 1, no prompt expansion (the releases' ``add_prompts``
and ``expand_prompts`` are off by default). ``guide`` overrides the guide;
``preserve_scale`` a number instead of ``auto`` overrides s_p.

The preserve set. For a style the 2023 release preserves every other
artist of ``data/artists1734_prompts.csv`` (1,733 names). cpdm preserves,
for a style erasure, the study's other artists (the anchors' artist names
in the workspace, except those that name an erased concept by the exact
rule the unlearning report uses, :mod:`cpdm.unlearning.concepts`;
``preserve_artists=false`` turns that off) together with
the concepts given (``--preserve``, and ``--preserve-file`` for a longer
list such as the release's). The run's record lists the set it used.

Departures from the authors' code: the solve runs in float64 (the releases
use float32 and ``torch.inverse``), through a Cholesky factor, once for all
projections (the factorisation above, algebraically identical); the text
encoder reads the preserved prompts in batches and their rows are summed
into C_p as they come, so 1,733 × 77 rows never sit in memory at once.
"""

from __future__ import annotations

import torch

from cpdm.errors import CpdmError
from cpdm.unlearning import AUTO
from cpdm.unlearning.base import Method, TrainingOptions, UnlearnRequest, encode_text, replaced_tensors, unique_texts

GUIDE_OF_TYPE = {"style": "art", "object": ""}
# Prompts the text encoder reads at once while summing the preserved rows.
ENCODE_BATCH = 64


# --- which rows stand for a prompt -----------------------------------------------------------------

def last_token_index(mask: torch.Tensor) -> int:
    """The position of a prompt's last real token in its padded encoding (0, BOS, for the empty prompt).

    ``mask`` is the tokenizer's attention mask: BOS, the prompt's tokens, EOS.
    """
    return int(mask.sum()) - 2


def aligned_spans(hidden_a, mask_a, hidden_b, mask_b) -> tuple[torch.Tensor, torch.Tensor]:
    """Release 2023: each prompt's last real token through the padding, both cut to the same length."""
    last_a, last_b = last_token_index(mask_a), last_token_index(mask_b)
    length = hidden_a.shape[0] - max(last_a, last_b)
    return hidden_a[last_a : last_a + length], hidden_b[last_b : last_b + length]


def edit_rows(pipe, concepts, guides, release: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows c_i of the concepts to erase and the aligned rows g_i of their guides, stacked (n, d).

    Release 2023 takes each concept's span through the padding; release
    2024 each prompt's last real token.
    """
    if release == "2023":
        # The release encodes an empty guide as " " (the same tokens: none).
        guides = [guide if guide != "" else " " for guide in guides]
    hidden_c, mask_c = encode_text(pipe, list(concepts))
    hidden_g, mask_g = encode_text(pipe, list(guides))
    concept_rows, guide_rows = [], []
    for i in range(len(concepts)):
        if release == "2023":
            rows_c, rows_g = aligned_spans(hidden_c[i], mask_c[i], hidden_g[i], mask_g[i])
        else:
            rows_c = hidden_c[i, last_token_index(mask_c[i])].unsqueeze(0)
            rows_g = hidden_g[i, last_token_index(mask_g[i])].unsqueeze(0)
        concept_rows.append(rows_c)
        guide_rows.append(rows_g)
    return torch.cat(concept_rows), torch.cat(guide_rows)


def preserved_prompts(preserve, release: str) -> list[str]:
    """The prompts whose projections are kept: release 2023 always adds the empty prompt first."""
    preserve = [text for text in preserve if text != ""]
    return [""] + preserve if release == "2023" else preserve


def preserve_gram(pipe, prompts, release: str, batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """C_p = Σ c_j c_jᵀ over the preserved prompts' rows (d × d, float64).

    Release 2023 sums all 77 rows of each prompt, release 2024 its last
    real token. Prompts are encoded ``batch_size`` at a time.
    """
    dim = pipe.text_encoder.config.hidden_size
    gram = torch.zeros(dim, dim, dtype=torch.float64, device=pipe.text_encoder.device)
    for start in range(0, len(prompts), batch_size):
        hidden, mask = encode_text(pipe, list(prompts[start : start + batch_size]))
        if release == "2023":
            rows = hidden.reshape(-1, dim)
        else:
            rows = torch.stack([hidden[i, last_token_index(mask[i])] for i in range(hidden.shape[0])])
        rows = rows.to(torch.float64)
        gram += rows.T @ rows
    return gram


def auto_preserve_scale(release: str, preserved_count: int) -> float:
    """s_p when ``preserve_scale`` is auto: max(0.1, 1/N) in release 2023, 1 in release 2024."""
    if release == "2023":
        return max(0.1, 1.0 / preserved_count)
    return 1.0


# --- the closed form ---------------------------------------------------------------------------------

def uce_edit_matrix(edit_keys, guide_keys, preserve_gram_, lamb: float, erase_scale: float,
                    preserve_scale: float) -> torch.Tensor:
    """M = (λI + s_e Σ g_i c_iᵀ + s_p C_p)(λI + s_e Σ c_i c_iᵀ + s_p C_p)⁻¹ (d × d, float64); W = W₀ M.

    ``edit_keys`` and ``guide_keys`` hold the rows c_i and g_i (n, d);
    ``preserve_gram_`` is C_p.
    """
    edits = edit_keys.detach().to(torch.float64)
    guides = guide_keys.detach().to(edits)
    keep = preserve_gram_.detach().to(edits)
    identity = torch.eye(edits.shape[1], dtype=torch.float64, device=edits.device)
    gram = lamb * identity + erase_scale * edits.T @ edits + preserve_scale * keep  # symmetric positive definite
    target = lamb * identity + erase_scale * guides.T @ edits + preserve_scale * keep
    # M = target · gram⁻¹, so Mᵀ = gram⁻¹ · targetᵀ (gram is symmetric).
    factor = torch.linalg.cholesky(gram)
    return torch.cholesky_solve(target.T, factor).T


def projection_names(unet) -> list[str]:
    """The weights UCE edits: every cross-attention key and value projection."""
    return [name for name, _ in unet.named_parameters()
            if name.endswith((".attn2.to_k.weight", ".attn2.to_v.weight"))]


class UCE(Method):
    """UCE: closed-form erasure in the cross-attention keys and values."""

    name = "uce"

    def guide_of(self, params: dict) -> str:
        """The concept erased concepts are mapped to: "art" for styles, "" for objects, unless given."""
        return GUIDE_OF_TYPE[params["concept_type"]] if params["guide"] == AUTO else params["guide"]

    def trainable_names(self, unet, params):
        return projection_names(unet)

    def preserve_set(self, params: dict, concepts, given, study_artists) -> tuple[str, ...]:
        """The concepts given, then, for a style erasure, the study's other artists (unless preserve_artists is off)."""
        if params["concept_type"] == "style" and params["preserve_artists"]:
            return unique_texts([*given, *study_artists])
        return unique_texts(given)

    @torch.no_grad()
    def run(self, pipe, request: UnlearnRequest, params: dict, options: TrainingOptions) -> dict[str, torch.Tensor]:
        release = params["release"]
        guide = self.guide_of(params)
        edit_keys, guide_keys = edit_rows(pipe, request.concepts, [guide] * len(request.concepts), release)
        prompts = preserved_prompts(request.preserve, release)
        preserve_scale = params["preserve_scale"]
        if preserve_scale == AUTO:
            preserve_scale = auto_preserve_scale(release, len(prompts))
        matrix = uce_edit_matrix(edit_keys, guide_keys, preserve_gram(pipe, prompts, release),
                                 params["lamb"], params["erase_scale"], preserve_scale)
        request.record.update({"release": release, "guide": guide, "preserve_scale": preserve_scale,
                               "preserved_prompts": len(prompts)})

        names = self.trainable_names(pipe.unet, params)
        parameters = dict(pipe.unet.named_parameters())
        modules = dict(pipe.unet.named_modules())
        for name in names:
            if modules[name.removesuffix(".weight")].bias is not None:
                raise CpdmError(f"{name}: UCE's closed form assumes cross-attention K/V without a bias")
            weight = parameters[name]
            weight.copy_((weight.to(torch.float64) @ matrix.to(weight.device)).to(weight.dtype))
        return replaced_tensors(pipe.unet, names)
