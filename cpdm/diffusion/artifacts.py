"""Unlearning artifacts: a safetensors file of the replaced UNet parameters and a JSON beside it.

The safetensors file holds only the parameters a method replaced, under
diffusers' names (``down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight``),
values replacing the originals, as the ESD and UCE authors' current releases
ship them. The JSON (same stem, ``.json``) records how the artifact was made:
method, base model and revision, concepts, preserve set, hyperparameters,
seed, steps, wall time, peak memory and the library versions.

The JSON lists every parameter with its shape, dtype and the sha256 of its
bytes, and names the base model by id and by a fingerprint of its UNet's
architecture (the config keys that decide its parameters' names and
shapes). The variant's row stores :func:`artifact_digest`, one sha256 over
both files, so neither can change unnoticed.

Loading refuses, with one line naming the file: a file or JSON changed since
the variant was registered; a JSON without the parameter list (an older
cpdm's: re-run, or ``cpdm variants rerecord``); a tensor the JSON does not
list or a listed one the file lacks; a shape, dtype or hash other than
recorded; a tensor that is not float32 (the methods' master weights; a
float16 tensor is not cast up silently); NaN or Inf values; and, before
anything is applied, a base model other than the artifact's (another id,
or a UNet of another architecture). Every tensor must then name a
parameter of the UNet with the same shape: ``load_state_dict(strict=False)``
would skip a misnamed key silently. Only once every check has passed is
anything copied, cast to the pipeline's own dtype (float16 generation on
CUDA).

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
# The JSON's "format": what this code writes and reads. Older JSONs have none.
ARTIFACT_FORMAT = "cpdm-artifact/2"
# Methods train and solve in float32 master weights; artifacts hold them as they are.
ARTIFACT_DTYPE = torch.float32
# The UNet config keys that decide its parameters' names and shapes (and how cross-attention reads text):
# constructor arguments that diffusers has kept for years, so the fingerprint outlives a diffusers upgrade.
UNET_ARCHITECTURE_KEYS = (
    "sample_size", "in_channels", "out_channels", "down_block_types", "mid_block_type", "up_block_types",
    "block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim", "num_attention_heads",
    "transformer_layers_per_block", "use_linear_projection", "upcast_attention", "only_cross_attention",
    "norm_num_groups", "class_embed_type", "addition_embed_type", "time_cond_proj_dim",
)
RERECORD_HINT = "re-run the unlearning under a new variant name, or re-record it with `cpdm variants rerecord VARIANT`"


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


def artifact_digest(weights_path: str | os.PathLike) -> str:
    """One sha256 over both files: of the line "<safetensors sha256> <JSON sha256>" (hex)."""
    pair = f"{file_sha256(weights_path)} {file_sha256(json_path_of(weights_path))}"
    return hashlib.sha256(pair.encode("ascii")).hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """The sha256 of a tensor's bytes in memory order (CPU, contiguous, any dtype)."""
    data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``float32``."""
    return str(dtype).removeprefix("torch.")


def parameter_record(name: str, tensor: torch.Tensor) -> dict:
    """What the JSON says of one parameter: its name, shape, dtype and the sha256 of its bytes."""
    return {"name": name, "shape": list(tensor.shape), "dtype": dtype_name(tensor.dtype),
            "sha256": tensor_sha256(tensor)}


def unet_architecture(unet: torch.nn.Module) -> dict:
    """The UNet's architecture: the values of :data:`UNET_ARCHITECTURE_KEYS` in its config, as JSON has them."""
    config = unet.config
    return {key: json.loads(json.dumps(config.get(key))) for key in UNET_ARCHITECTURE_KEYS}


def architecture_fingerprint(architecture: dict) -> str:
    """The sha256 of an architecture's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(architecture, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def base_unet_record(unet: torch.nn.Module) -> dict:
    """What an artifact's JSON says of its base model's UNet: the architecture and its fingerprint."""
    architecture = unet_architecture(unet)
    return {"architecture": architecture, "fingerprint": architecture_fingerprint(architecture)}


def _some(names: list[str], shown: int = 5) -> str:
    """The first few names, and how many more."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _refuse_bad_tensors(source, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse tensors that are not float32 or hold NaN or Inf (each check names the first tensor that fails)."""
    for name, tensor in sorted(tensors.items()):
        if tensor.dtype != ARTIFACT_DTYPE:
            raise ArtifactError(f"{source}: {name} is {dtype_name(tensor.dtype)}; artifacts hold "
                                f"{dtype_name(ARTIFACT_DTYPE)} weights (nothing is cast silently)")
        if not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(f"{source}: {name} holds NaN or Inf values")


def _partial_json(weights_path: Path, meta: dict) -> Path:
    """Write an artifact's JSON under a temporary name beside its final one; return that name."""
    final = json_path_of(weights_path)
    partial = final.with_name(final.name + ".partial")
    partial.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return partial


def save_artifact(weights_path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> str:
    """Write the tensors (contiguous CPU copies) and the JSON; return :func:`artifact_digest` of the pair.

    ``meta`` must name the base model (``base_model``) and describe its UNet
    (``base_unet``, from :func:`base_unet_record`); the JSON adds the format
    and every parameter's record. Tensors that are not float32 or not finite
    are refused before anything is written. Both files are written under
    temporary names and renamed, so a crash never leaves half an artifact
    under the final name.
    """
    from safetensors.torch import save_file

    weights_path = Path(weights_path)
    if not meta.get("base_model") or not meta.get("base_unet"):
        raise ValueError("an artifact's record needs base_model and base_unet")
    cpu = {name: tensor.detach().to("cpu").contiguous() for name, tensor in sorted(tensors.items())}
    _refuse_bad_tensors(weights_path, cpu)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta, format=ARTIFACT_FORMAT, parameters=[parameter_record(name, t) for name, t in cpu.items()])
    partial = weights_path.with_name(weights_path.name + ".partial")
    save_file(cpu, str(partial), metadata={"format": "pt", "method": str(meta.get("method", ""))})
    json_partial = _partial_json(weights_path, meta)
    os.replace(partial, weights_path)
    os.replace(json_partial, json_path_of(weights_path))
    return artifact_digest(weights_path)


def _read_json(weights_path: Path) -> dict:
    """The artifact's JSON as a dict; a missing, unreadable or malformed one is refused."""
    meta_path = json_path_of(weights_path)
    if not meta_path.is_file():
        raise ArtifactError(f"{weights_path}: its JSON ({meta_path.name}) is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{weights_path}: cannot read its JSON ({meta_path.name}: {exc})") from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{weights_path}: its JSON ({meta_path.name}) is not an object")
    return meta


def _listed_parameters(weights_path: Path, meta: dict) -> dict[str, dict]:
    """The JSON's parameter records by name; a JSON of an older format or without a full list is refused."""
    if meta.get("format") is None:
        raise ArtifactError(f"{weights_path}: written by an older cpdm (its JSON has no format, no per-parameter "
                            f"shapes, dtypes and hashes); {RERECORD_HINT}")
    if meta["format"] != ARTIFACT_FORMAT:
        raise ArtifactError(f"{weights_path}: its JSON is in format {meta['format']!r}; this cpdm reads "
                            f"{ARTIFACT_FORMAT!r}")
    listed = meta.get("parameters")
    fields = {"name", "shape", "dtype", "sha256"}
    if not isinstance(listed, list) or not listed or not all(
            isinstance(record, dict) and fields <= set(record) for record in listed):
        raise ArtifactError(f"{weights_path}: its JSON does not list the parameters (name, shape, dtype and "
                            "sha256 of each); nothing of it is loaded: re-run the unlearning")
    return {record["name"]: record for record in listed}


def _check_against_records(weights_path: Path, tensors: dict[str, torch.Tensor], records: dict[str, dict]) -> None:
    """Refuse a file whose tensors are not exactly those the JSON lists, as it records them."""
    unlisted = sorted(set(tensors) - set(records))
    missing = sorted(set(records) - set(tensors))
    if unlisted or missing:
        parts = []
        if unlisted:
            parts.append(f"tensors its JSON does not list: {_some(unlisted)}")
        if missing:
            parts.append(f"missing keys its JSON lists: {_some(missing)}")
        raise ArtifactError(f"{weights_path}: " + "; ".join(parts))
    _refuse_bad_tensors(weights_path, tensors)
    for name, tensor in sorted(tensors.items()):
        record = records[name]
        if list(tensor.shape) != list(record["shape"]) or dtype_name(tensor.dtype) != record["dtype"]:
            raise ArtifactError(f"{weights_path}: {name} is {dtype_name(tensor.dtype)} {list(tensor.shape)}, its "
                                f"JSON records {record['dtype']} {list(record['shape'])}")
        if tensor_sha256(tensor) != record["sha256"]:
            raise ArtifactError(f"{weights_path}: {name} differs from the tensor its JSON records (sha256)")


def load_artifact(weights_path: str | os.PathLike, expected_sha256: str | None = None) -> tuple[dict, dict]:
    """The tensors and the JSON of an artifact, every tensor checked against the JSON's record of it.

    ``expected_sha256`` is the variant's registered :func:`artifact_digest`:
    a change to either file is refused. Every refusal is one line naming the file.
    """
    from safetensors.torch import load_file

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: artifact not found")
    meta = _read_json(weights_path)
    if expected_sha256 and artifact_digest(weights_path) != expected_sha256:
        if meta.get("format") is None and file_sha256(weights_path) == expected_sha256:
            # An older cpdm registered the weights file's own sha256 and no hash of the JSON.
            raise ArtifactError(f"{weights_path}: registered by an older cpdm, whose hash leaves its JSON "
                                f"unchecked; {RERECORD_HINT}")
        raise ArtifactError(f"{weights_path}: the file or its JSON changed since it was registered (sha256 differs)")
    records = _listed_parameters(weights_path, meta)
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types on a damaged file
        raise ArtifactError(f"{weights_path}: cannot read the artifact ({exc})") from exc
    _check_against_records(weights_path, tensors, records)
    return tensors, meta


def check_base_model(unet: torch.nn.Module, meta: dict, base_model: str, source) -> None:
    """Refuse a base model other than the artifact's: another id, or a UNet of another architecture."""
    if meta.get("base_model") != base_model:
        raise ArtifactError(f"{source}: made from {meta.get('base_model')!r}, not from {base_model!r}; apply it "
                            "to the model it was made from")
    recorded = meta.get("base_unet") or {}
    architecture = unet_architecture(unet)
    if recorded.get("fingerprint") != architecture_fingerprint(architecture):
        then = recorded.get("architecture") or {}
        differing = [key for key in UNET_ARCHITECTURE_KEYS if then.get(key) != architecture.get(key)]
        detail = f" ({_some(differing, 3)} differ)" if differing and then else ""
        raise ArtifactError(f"{source}: this {base_model!r} UNet is not the one the artifact was made from: its "
                            f"architecture fingerprint differs{detail}")


def apply_tensors(unet: torch.nn.Module, tensors: dict[str, torch.Tensor], source) -> None:
    """Replace the UNet's parameters named in ``tensors``; refuse any foreign or misshapen key (naming ``source``).

    Nothing is changed unless every key fits. Values are cast to the UNet's
    own dtype (float16 generation on CUDA).
    """
    state = unet.state_dict()
    unexpected = sorted(name for name in tensors if name not in state)
    if unexpected:
        raise ArtifactError(f"{source}: does not fit this model: unexpected keys (not in this UNet): "
                            f"{_some(unexpected)}")
    misshapen = [f"{name} {tuple(tensor.shape)} vs {tuple(state[name].shape)}"
                 for name, tensor in sorted(tensors.items()) if tuple(tensor.shape) != tuple(state[name].shape)]
    if misshapen:
        raise ArtifactError(f"{source}: does not fit this model: shapes differ: " + "; ".join(misshapen[:5]))
    with torch.no_grad():
        for name, tensor in tensors.items():
            state[name].copy_(tensor.to(dtype=state[name].dtype, device=state[name].device))


def apply_artifact(unet: torch.nn.Module, weights_path: str | os.PathLike, expected_sha256: str | None = None, *,
                   base_model: str) -> dict:
    """Load an artifact onto ``unet``, the UNet of ``base_model`` (checked), strictly; return its JSON."""
    tensors, meta = load_artifact(weights_path, expected_sha256)
    check_base_model(unet, meta, base_model, weights_path)
    apply_tensors(unet, tensors, weights_path)
    return meta


def rerecord_artifact(weights_path: str | os.PathLike, registered_sha256: str, unet: torch.nn.Module,
                      base_model: str) -> str:
    """Rewrite an older cpdm's JSON in this format; return the new :func:`artifact_digest` to register.

    Only an artifact whose weights file is still the one registered
    (``registered_sha256``, the older cpdm's hash of that file alone) and
    whose JSON names ``base_model`` is re-recorded, and only when its
    tensors are float32, finite, and fit ``unet``, that model's UNet, whose
    architecture the new JSON records. The old JSON's other fields are kept.
    """
    from safetensors.torch import load_file

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: artifact not found")
    meta = _read_json(weights_path)
    if meta.get("format") == ARTIFACT_FORMAT:
        raise ArtifactError(f"{weights_path}: already recorded in format {ARTIFACT_FORMAT!r}; nothing to do")
    if not registered_sha256 or file_sha256(weights_path) != registered_sha256:
        raise ArtifactError(f"{weights_path}: not the weights file the variant registered (sha256 differs); "
                            "it cannot be re-recorded: re-run the unlearning")
    if meta.get("base_model") != base_model:
        raise ArtifactError(f"{weights_path}: its JSON names base model {meta.get('base_model')!r}, the variant "
                            f"{base_model!r}; re-run the unlearning")
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types on a damaged file
        raise ArtifactError(f"{weights_path}: cannot read the artifact ({exc})") from exc
    _refuse_bad_tensors(weights_path, tensors)
    listed = meta.get("parameters")
    if isinstance(listed, list) and set(listed) != set(tensors):
        raise ArtifactError(f"{weights_path}: the file's tensors are not those its JSON lists; re-run the unlearning")
    state = unet.state_dict()
    unfit = sorted(name for name, tensor in tensors.items()
                   if name not in state or tuple(tensor.shape) != tuple(state[name].shape))
    if unfit:
        raise ArtifactError(f"{weights_path}: does not fit the UNet of {meta['base_model']!r}: {_some(unfit)}")
    meta = dict(meta, base_unet=base_unet_record(unet), format=ARTIFACT_FORMAT,
                parameters=[parameter_record(name, tensor) for name, tensor in sorted(tensors.items())])
    os.replace(_partial_json(weights_path, meta), json_path_of(weights_path))
    return artifact_digest(weights_path)
