r"""UCE: Unified Concept Editing (Gandikota et al., WACV 2024), erasure in closed form.

Objective. For every cross-attention projection W₀ ∈ {``attn2.to_k``,
``attn2.to_v``} the edited W minimises

    λ‖W − W₀‖²_F + s_e Σ_i ‖W c_i − v*_i‖² + s_p Σ_j ‖W c_j − W₀ c_j‖²,

where c_i are the embeddings of the concepts to erase, v*_i = W₀ c_guide,i
their guide's projections and c_j the embeddings to preserve. Setting the
gradient to zero gives

    W = (λW₀ + s_e Σ v*_i c_iᵀ + s_p Σ W₀ c_j c_jᵀ)(λI + s_e Σ c_i c_iᵀ + s_p Σ c_j c_jᵀ)⁻¹.

Which parameters change: the weight of every ``attn2.to_k`` and
``attn2.to_v`` (no biases: SD's K/V projections have none).

Which embeddings stand for a concept. The span from the concept's last real
token through EOS and the padding, aligned with the guide's span by
trimming the tail (the authors' choice). CLIP's text encoder is causal, so
EOS and the padding tokens carry a summary of the whole prompt and Stable
Diffusion's cross-attention reads them heavily; editing the last subject
token alone leaves the concept reachable through them.

Defaults (rohitgandikota/unified-concept-editing): λ = 0.5, s_e = 1,
s_p = 1. The guide is "art" for styles and "" for objects
(``concept_type``); ``guide`` overrides it. The empty prompt is always in
the preserve set, which protects the unconditional branch of
classifier-free guidance.

Departures from the authors' code: the solve runs in float64 (the release
uses float32; the d×d systems, d = 768 or 1024, cost little either way),
through a Cholesky factor instead of an explicit inverse, for accuracy; the
factor is computed once and shared by every projection, since the right-hand
matrix depends only on the embeddings.
"""

from __future__ import annotations

import torch

from cpdm.unlearning.base import Method, TrainingOptions, UnlearnRequest, encode_text, replaced_tensors

GUIDE_OF_TYPE = {"style": "art", "object": ""}


def uce_gram_factor(edit_keys, preserve_keys, lamb: float, erase_scale: float, preserve_scale: float) -> torch.Tensor:
    """The Cholesky factor of λI + s_e Σ c_i c_iᵀ + s_p Σ c_j c_jᵀ (float64).

    It depends only on the embeddings, so one factor serves every projection
    with the same input width (all of SD's cross-attention K/V).
    """
    edits = edit_keys.detach().to(torch.float64)
    keep = preserve_keys.detach().to(torch.float64)
    dim = edits.shape[1]
    gram = lamb * torch.eye(dim, dtype=torch.float64, device=edits.device)
    gram = gram + erase_scale * edits.T @ edits + preserve_scale * keep.T @ keep
    return torch.linalg.cholesky(gram)


def uce_solve(w0, edit_keys, guide_keys, preserve_keys, factor, lamb: float, erase_scale: float,
              preserve_scale: float) -> torch.Tensor:
    """W = (λW₀ + s_e Σ v*_i c_iᵀ + s_p Σ W₀ c_j c_jᵀ) · gram⁻¹ with the gram's Cholesky ``factor``; W₀'s dtype."""
    w0_64 = w0.detach().to(torch.float64)
    edits = edit_keys.detach().to(w0_64)
    guides = guide_keys.detach().to(w0_64)
    keep = preserve_keys.detach().to(w0_64)
    numerator = lamb * w0_64 + erase_scale * (w0_64 @ guides.T) @ edits + preserve_scale * (w0_64 @ keep.T) @ keep
    # gram is symmetric: W = numerator · gram⁻¹ solves gram · Wᵀ = numeratorᵀ.
    return torch.cholesky_solve(numerator.T, factor).T.to(w0.dtype)


def uce_closed_form(
    w0: torch.Tensor,
    edit_keys: torch.Tensor,
    guide_keys: torch.Tensor,
    preserve_keys: torch.Tensor,
    lamb: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> torch.Tensor:
    """The UCE edit of one projection W₀ (out × d): rows of ``edit_keys`` map to W₀ · (rows of ``guide_keys``).

    ``edit_keys`` and ``guide_keys`` are (n, d), ``preserve_keys`` (m, d);
    the result has W₀'s dtype.
    """
    factor = uce_gram_factor(edit_keys.to(w0.device), preserve_keys.to(w0.device), lamb, erase_scale, preserve_scale)
    return uce_solve(w0, edit_keys, guide_keys, preserve_keys, factor, lamb, erase_scale, preserve_scale)


def aligned_spans(hidden_a, mask_a, hidden_b, mask_b) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt's last real token through the padding, both cut to the same length."""
    last_a = int(mask_a.sum()) - 2
    last_b = int(mask_b.sum()) - 2
    length = hidden_a.shape[0] - max(last_a, last_b)
    return hidden_a[last_a : last_a + length], hidden_b[last_b : last_b + length]


def concept_keys(pipe, concepts, guides) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked embeddings of the concepts and of their guides (rows aligned)."""
    hidden_c, mask_c = encode_text(pipe, list(concepts))
    hidden_g, mask_g = encode_text(pipe, list(guides))
    pairs = [aligned_spans(hidden_c[i], mask_c[i], hidden_g[i], mask_g[i]) for i in range(len(concepts))]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def projection_names(unet) -> list[str]:
    """The weights UCE edits: every cross-attention key and value projection."""
    return [name for name, _ in unet.named_parameters()
            if name.endswith((".attn2.to_k.weight", ".attn2.to_v.weight"))]


class UCE(Method):
    """UCE: closed-form erasure in the cross-attention keys and values."""

    name = "uce"

    def guide_of(self, params: dict) -> str:
        """The concept erased concepts are mapped to: "art" for styles, "" for objects, unless given."""
        return GUIDE_OF_TYPE[params["concept_type"]] if params["guide"] == "auto" else params["guide"]

    def trainable_names(self, unet, params):
        return projection_names(unet)

    @torch.no_grad()
    def run(self, pipe, request: UnlearnRequest, params: dict, options: TrainingOptions) -> dict[str, torch.Tensor]:
        guide = self.guide_of(params)
        edit_keys, guide_keys = concept_keys(pipe, request.concepts, [guide] * len(request.concepts))
        preserved = [""] + [text for text in request.preserve if text != ""]
        preserve_keys, _ = concept_keys(pipe, preserved, preserved)
        names = self.trainable_names(pipe.unet, params)
        parameters = dict(pipe.unet.named_parameters())
        scales = (params["lamb"], params["erase_scale"], params["preserve_scale"])
        factor = uce_gram_factor(edit_keys, preserve_keys, *scales)
        for name in names:
            weight = parameters[name]
            weight.copy_(uce_solve(weight, edit_keys, guide_keys, preserve_keys, factor, *scales))
        return replaced_tensors(pipe.unet, names)
