"""The packages the GPU suite needs beyond what the lent GPU machine has, carried there as wheels.

The machine has Python 3.12 with torch, torchvision, transformers,
accelerate, safetensors, timm, huggingface_hub, pandas, scipy, pillow, click
and tqdm, and reaches no package registry. :data:`WHEELS` lists the rest of
what the suite's code paths import. They are downloaded as pure-Python
wheels (every one has such a wheel), which any CPython 3 takes and which
need no compiler:

    python -m benchmarks.gpu.wheels download --dest .gpu-wheels    # here, with PyPI reachable (make gpu-wheels)
    python -m benchmarks.gpu.wheels install --wheels .gpu-wheels --target .gpu-site   # there (make bench-gpu)

``install`` skips a package the machine already has at the pinned version
or newer, installs the others with ``pip install --no-index --no-deps
--target`` (unpacking the wheels itself where the interpreter has no pip),
and the suite then runs with the target folder first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

# (distribution, pinned version, why the suite needs it).
WHEELS = (
    ("diffusers", "0.42.1", "Stable Diffusion: generation and unlearning"),
    ("open_clip_torch", "3.3.0", "the CLIP backbones"),
    ("ftfy", "6.3.1", "open_clip's tokenizer imports it"),
    ("wcwidth", "0.9.4", "ftfy's dependency"),
    ("pytorch-fid", "0.3.0", "cpdm-inception, the release's InceptionV3"),
    ("sqlite-utils", "4.2.1", "the workspace database"),
    ("sqlite-fts4", "1.0.3", "sqlite-utils imports it"),
    ("click-default-group", "1.2.4", "sqlite-utils imports it"),
    ("tabulate", "0.10.0", "sqlite-utils imports it"),
    ("pluggy", "1.7.0", "sqlite-utils imports it"),
    # diffusers checks for requests when imported; huggingface_hub 1.x no longer brings it.
    ("requests", "2.34.2", "diffusers requires it"),
    ("urllib3", "2.8.0", "requests imports it"),
    ("idna", "3.20", "requests imports it"),
    ("certifi", "2026.10.19.post1", "requests imports it"),
    ("charset-normalizer", "3.5.3", "requests' character detection"),
    # diffusers 0.42 needs huggingface_hub >= 1.32 and transformers 5 needs < 2: installed only over an older one.
    ("huggingface_hub", "1.33.0", "diffusers' minimum of the hub client"),
)
PYTHON_VERSION = "3.12"  # the lent machine's
CARRY_LIMIT_BYTES = 64 * 2**20  # all that travels with the tree


class WheelError(Exception):
    """A wheel the suite needs is missing or unusable; the message says what to do."""


def normalized(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427): ``pytorch-fid`` -> ``pytorch_fid``."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_file(folder: Path, name: str, version: str) -> Path | None:
    """The wheel of ``name`` at ``version`` in ``folder``, or None."""
    prefix = f"{normalized(name)}-{version}-"
    return next((path for path in sorted(Path(folder).glob("*.whl")) if path.name.lower().startswith(prefix)), None)


def download(dest: Path) -> list[Path]:
    """Download every pinned wheel (pure Python, for 3.12) into ``dest``; refuse a total above the carry limit."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
               "--python-version", PYTHON_VERSION, "--implementation", "py", "--abi", "none", "--platform", "any",
               "--dest", str(dest),
               *(f"{name}=={version}" for name, version, _ in WHEELS)]
    subprocess.run(command, check=True)
    paths = [wheel_file(dest, name, version) for name, version, _ in WHEELS]
    missing = [name for (name, _, _), path in zip(WHEELS, paths) if path is None]
    if missing:
        raise WheelError(f"pip download left no wheel for {', '.join(missing)} in {dest}")
    total = sum(path.stat().st_size for path in paths)
    if total > CARRY_LIMIT_BYTES:
        raise WheelError(f"the wheels take {total / 2**20:.1f} MiB, more than the {CARRY_LIMIT_BYTES / 2**20:.0f} MiB "
                         "that travel with the tree")
    print(f"{len(paths)} wheels, {total / 2**20:.1f} MiB, in {dest}")
    return paths


def installed_version(name: str) -> str | None:
    """The version of ``name`` this interpreter already has, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def needed(wheels: Path) -> list[Path]:
    """The wheels to install: every pinned package this interpreter lacks or has at an older version."""
    from packaging.version import Version

    chosen, missing = [], []
    for name, version, why in WHEELS:
        present = installed_version(name)
        if present is not None and Version(present) >= Version(version):
            continue
        path = wheel_file(wheels, name, version)
        if path is None:
            missing.append(f"{name}=={version} ({why})")
        else:
            chosen.append(path)
    if missing:
        raise WheelError(f"no wheel in {wheels} for {'; '.join(missing)}: run `make gpu-wheels` where PyPI is "
                         f"reachable and bring the {wheels} folder along")
    return chosen


def install(wheels: Path, target: Path) -> list[Path]:
    """Install the needed wheels into ``target`` (pip when this interpreter has it); the wheels installed."""
    chosen = needed(wheels)
    target.mkdir(parents=True, exist_ok=True)
    if chosen and importlib.util.find_spec("pip") is not None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade",
                        "--target", str(target), *map(str, chosen)], check=True)
    else:
        for path in chosen:
            unpack(path, target)
    names = ", ".join(path.name.split("-")[0] for path in chosen) or "nothing (all present)"
    print(f"installed into {target}: {names}")
    return chosen


def unpack(wheel: Path, target: Path) -> None:
    """Install a wheel by unpacking it: for a wheel without scripts or data files that is all pip does."""
    with zipfile.ZipFile(wheel) as archive:
        if any(".data/" in member for member in archive.namelist()):
            raise WheelError(f"{wheel.name} has files outside site-packages; install it with pip")
        archive.extractall(target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("download", help="download the pinned wheels (needs a package registry)")
    fetch.add_argument("--dest", type=Path, default=Path(".gpu-wheels"))
    put = commands.add_parser("install", help="install the wheels this interpreter needs into a folder (offline)")
    put.add_argument("--wheels", type=Path, default=Path(".gpu-wheels"))
    put.add_argument("--target", type=Path, default=Path(".gpu-site"))
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            download(args.dest)
        else:
            install(args.wheels, args.target)
    except (WheelError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
