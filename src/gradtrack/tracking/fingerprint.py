"""A run's fingerprint: one hash of everything that determines its result.

It covers, as one canonical JSON document hashed with sha256:

* ``config``: the resolved config minus the plumbing (:func:`gradtrack.config.result_params`,
  the same single definition the MLflow params use; ``checks.*`` count), every value
  canonicalised (a float by its shortest round-trip repr, so ``1e-6`` and ``0.000001``
  are one value; keys sorted, so override order does not matter);
* ``data``: the dataset's sha256 (``Dataset.digest``: the file's bytes, or the
  generator's settings for ``dataset=synthetic``; none for scalar problems);
* ``code``: the package version and a sha256 of every ``src/gradtrack/**/*.py`` file
  (path and bytes), so an uncommitted edit counts. The conf/ YAMLs are not hashed:
  their effect is the resolved config, which is hashed value by value;
* ``frameworks``: the versions of what computed the result: numpy always, torch or
  tensorflow only when that backend runs (read from the installed distribution's
  metadata, so ``backend=numpy`` never imports either).

``backend.device=auto`` is hashed as the device it picks here (:func:`resolved_device`):
a store shared by a GPU and a CPU machine never answers one with the other's result,
and ``auto`` on a CPU-only machine is the same computation as ``cpu``.

Stored on every run as the tag :data:`TAG` (and its parts as ``fingerprint_code`` and
``fingerprint_data``), so two runs with the same tag computed the same thing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

TAG = "fingerprint"
CODE_TAG = "fingerprint_code"
SWEEP_TAG = "sweep_fingerprint"
# Bump when what goes into the fingerprint changes: old runs then never match.
SCHEME = 1
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/gradtrack
# Distributions that provide each backend's framework, first installed one wins.
_DISTS = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"),
}


def canonical(value: Any) -> Any:
    """A JSON-ready value that is equal for equal meanings (floats by their repr)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        if value == int(value) and abs(value) < 2**53:
            # 1.0 and 1 from a float field are the same number
            return {"float": repr(float(int(value)))}
        return {"float": repr(value)}
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


def source_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The files whose bytes make the code hash: every .py under the package."""
    return sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)


def hash_sources(package_dir: Path = PACKAGE_DIR) -> str:
    h = hashlib.sha256()
    for p in source_files(package_dir):
        h.update(p.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def code_version() -> str:
    """``<package version>+<sha256 of the package source, 16 hex>``; once per process."""
    from gradtrack import __version__

    return f"{__version__}+{hash_sources()[:16]}"


@functools.cache
def framework_version(name: str) -> str:
    for dist in _DISTS.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def frameworks(backend: str) -> dict[str, str]:
    names = ["numpy"] + ([backend] if backend != "numpy" else [])
    return {n: framework_version(n) for n in names}


# Device nodes without which no framework can see a GPU (NVIDIA; AMD ROCm's /dev/kfd).
GPU_NODES = ("/dev/nvidia[0-9]*", "/dev/kfd")


@functools.cache
def resolved_device(backend: str, device: str) -> str:
    """The device ``backend.device`` stands for on this machine: ``auto`` resolved.

    Without a GPU device node no framework can see a GPU, so ``auto`` is ``cpu``
    without importing anything; with one, the backend is asked (it imports its
    framework, as the run itself is about to).
    """
    if device != "auto" or backend == "numpy":
        return device
    import glob

    if not any(glob.glob(pattern) for pattern in GPU_NODES):
        return "cpu"
    from gradtrack.backends import get_backend

    return get_backend(backend).resolve_device("auto")


def parts(plain_cfg: dict[str, Any], data_digest: str | None) -> dict[str, Any]:
    """What the fingerprint hashes (``plain_cfg``: the resolved config as plain dicts)."""
    from gradtrack.config import result_params

    backend = plain_cfg.get("backend", {}).get("name", "numpy")
    params = result_params(plain_cfg)
    if "backend.device" in params:
        params["backend.device"] = resolved_device(backend, params["backend.device"])
    return {
        "scheme": SCHEME,
        "config": canonical(params),
        "data": data_digest,
        "code": code_version(),
        "frameworks": frameworks(backend),
    }


def digest_of(doc: Any) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(plain_cfg: dict[str, Any], data_digest: str | None) -> str:
    """The run's fingerprint (64 hex)."""
    return digest_of(parts(plain_cfg, data_digest))


def of_config(cfg: Any, data_digest: str | None) -> str:
    """:func:`fingerprint` of a typed Config object (a dataclass instance).

    ``dataclasses.asdict``, not OmegaConf: about 100 times cheaper, which matters when
    a sweep fingerprints every job up front; the values, and so the hash, are the same
    as those of the resolved config a run hashes (a test checks it).
    """
    import dataclasses

    return fingerprint(dataclasses.asdict(cfg), data_digest)


def tags(fp: str, data_digest: str | None) -> dict[str, str]:
    out = {TAG: fp, CODE_TAG: code_version()}
    if data_digest:
        out["fingerprint_data"] = data_digest
    return out


def sweep_fingerprint(job_fingerprints: list[str], extra: dict[str, Any]) -> str:
    """A sweep's identity: the sorted fingerprints of its jobs (order-free) and the
    settings that pick and rank them (``extra``: sweeper, metric, experiment)."""
    return digest_of({"jobs": sorted(job_fingerprints), "extra": canonical(extra)})
