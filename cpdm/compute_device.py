"""The one check of a ``--device`` value, for every wing that runs models (scoring, generation, unlearning).

A device this machine cannot use is refused before any model is loaded, with
one clear line instead of torch's traceback.
"""

from __future__ import annotations

from cpdm.errors import CpdmError


class DeviceError(CpdmError):
    """A device this machine cannot use, or one cpdm does not know."""


def resolve_device(device):
    """The ``torch.device`` for ``device`` (cpu, mps, cuda or cuda:N), refusing CUDA on a machine without it."""
    # torch is imported here, not above: the backbones' registry and the CLI import this module and stay torch-free.
    import torch

    text = str(device)
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {text} was asked for, but CUDA is not available on this machine "
                              "(use --device cpu)")
    elif text not in ("cpu", "mps"):
        raise DeviceError(f"unknown device {text!r} (use cpu or cuda)")
    try:
        return torch.device(text)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {text!r}: {exc}") from exc


def check_device(device: str) -> str:
    """``device`` itself, once :func:`resolve_device` accepts it (for callers that pass the text on)."""
    resolve_device(device)
    return device
