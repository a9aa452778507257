"""Unlearning artifacts: a safetensors file of the replaced UNet parameters and a JSON beside it.

The safetensors file holds only the parameters a method replaced, under
diffusers' names (``down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight``),
values replacing the originals, as the ESD and UCE authors' current releases
ship them. The JSON (same stem, ``.json``) records how the artifact was made:
method, base model and revision, concepts, preserve set, hyperparameters,
seed, steps, wall time, peak memory and the library versions.

Loading is strict: every tensor must name a parameter of the UNet with the
same shape, and every parameter the JSON lists must be in the file.
``load_state_dict(strict=False)`` would skip a misnamed key silently.

Each variant's artifact and checkpoint live in a folder of their own,
``unlearning/NAME-HASH/``: NAME is the variant's name reduced to file-name
characters, HASH the start of the sha256 of the exact name, so two names
that reduce alike ("莫奈", "梵高") never share a folder. An ``owner.json``
there records the variant (id and name) whose folder it is, and cpdm never
writes into a folder another variant owns.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from cpdm.errors import CpdmError


UNLEARNING_DIR = "unlearning"
OWNER_FILE = "owner.json"
NAME_HASH_CHARS = 10  # hex digits of the name's sha256 in its folder's name


class ArtifactError(CpdmError):
    """An artifact that does not fit the model it is applied to, or is unreadable."""


def variant_dir(root: str | os.PathLike, name: str) -> Path:
    """The folder of a variant's artifact and checkpoint inside the workspace ``root``.

    The readable part keeps only ``[A-Za-z0-9._-]``; the hash of the exact
    name keeps apart names that keep the same characters.
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "variant"
    name_hash = hashlib.sha256(name.encode("utf-8")).hexdigest()[:NAME_HASH_CHARS]
    return Path(root) / UNLEARNING_DIR / f"{readable}-{name_hash}"


def _owner(folder: Path) -> dict | None:
    """The variant a folder's ``owner.json`` names ({"id", "name"}), or None when it has none readable."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def check_variant_dir(folder: Path, variant_id: int | None, name: str) -> None:
    """Refuse a folder that holds another variant's files.

    ``variant_id`` is None for a variant not registered yet: then the folder
    must be absent or empty. A registered variant may also use a folder its
    own ``owner.json`` names (a resumed run and its checkpoint).
    """
    if not folder.exists() or not any(folder.iterdir()):
        return
    owner = _owner(folder)
    if variant_id is not None and owner == {"id": variant_id, "name": name}:
        return
    held = (f"the files of variant {owner.get('id')} {owner.get('name')!r}" if owner
            else "files that no variant claims")
    raise CpdmError(f"{folder} holds {held}; cpdm never writes into another variant's folder: "
                    f"move that folder away or choose another variant name")


def claim_variant_dir(folder: Path, variant_id: int, name: str) -> Path:
    """Create the folder (after :func:`check_variant_dir`) and mark it as the variant's own."""
    check_variant_dir(folder, variant_id, name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OWNER_FILE).write_text(json.dumps({"id": variant_id, "name": name}, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    return folder


def json_path_of(weights_path: str | os.PathLike) -> Path:
    """The JSON that sits beside an artifact's safetensors file."""
    return Path(weights_path).with_suffix(".json")


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_artifact(weights_path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> str:
    """Write the tensors (contiguous CPU copies) and the JSON; return the safetensors file's sha256.

    Both files are written under temporary names and renamed, so a crash
    never leaves half an artifact under the final name.
    """
    from safetensors.torch import save_file

    weights_path = Path(weights_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    cpu = {name: tensor.detach().to("cpu").contiguous() for name, tensor in sorted(tensors.items())}
    meta = dict(meta, parameters=sorted(cpu))
    partial = weights_path.with_name(weights_path.name + ".partial")
    save_file(cpu, str(partial), metadata={"format": "pt", "method": str(meta.get("method", ""))})
    json_partial = json_path_of(weights_path).with_name(json_path_of(weights_path).name + ".partial")
    json_partial.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(partial, weights_path)
    os.replace(json_partial, json_path_of(weights_path))
    return file_sha256(weights_path)


def load_artifact(weights_path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[dict, dict]:
    """The tensors and the JSON of an artifact; a changed file (sha256) or missing JSON is refused."""
    from safetensors.torch import load_file

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: artifact not found")
    if expected_sha256 and file_sha256(weights_path) != expected_sha256:
        raise ArtifactError(f"{weights_path}: the file changed since it was registered (sha256 differs)")
    meta_path = json_path_of(weights_path)
    if not meta_path.is_file():
        raise ArtifactError(f"{weights_path}: its JSON ({meta_path.name}) is missing")
    try:
        tensors = load_file(str(weights_path))
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except Exception as exc:  # safetensors raises its own error types on a damaged file
        raise ArtifactError(f"{weights_path}: cannot read the artifact ({exc})") from exc
    return tensors, meta


def apply_tensors(unet: torch.nn.Module, tensors: dict[str, torch.Tensor], listed: list[str] | None = None) -> None:
    """Replace the UNet's parameters named in ``tensors``; refuse any foreign, missing or misshapen key.

    ``listed`` is the parameter list from the artifact's JSON: a name there
    but not in the file is a missing key. Nothing is changed unless every key
    fits.
    """
    state = unet.state_dict()
    unexpected = sorted(name for name in tensors if name not in state)
    missing = sorted(set(listed or ()) - set(tensors))
    if unexpected or missing:
        parts = []
        if unexpected:
            parts.append(f"unexpected keys (not in this UNet): {', '.join(unexpected[:5])}"
                         + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""))
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        raise ArtifactError("the artifact does not fit this model: " + "; ".join(parts))
    misshapen = [f"{name} {tuple(tensor.shape)} vs {tuple(state[name].shape)}"
                 for name, tensor in tensors.items() if tuple(tensor.shape) != tuple(state[name].shape)]
    if misshapen:
        raise ArtifactError("the artifact does not fit this model: shapes differ: " + "; ".join(misshapen[:5]))
    with torch.no_grad():
        for name, tensor in tensors.items():
            state[name].copy_(tensor.to(dtype=state[name].dtype, device=state[name].device))


def apply_artifact(unet: torch.nn.Module, weights_path: str | os.PathLike, expected_sha256: str | None = None) -> dict:
    """Load an artifact onto ``unet`` (strictly) and return its JSON."""
    tensors, meta = load_artifact(weights_path, expected_sha256)
    apply_tensors(unet, tensors, meta.get("parameters"))
    return meta
