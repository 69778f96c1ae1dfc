"""Content-addressed files next to the store: patches, maps, plots, contact sheets.

A file is stored once under ``<kind>/<sha[:2]>/<sha>.<ext>`` (written to a temporary name, then renamed) and
referenced from the graph by that relative path and its sha256, so the graph and the files can be moved together
and any reference can be verified.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kgexplain.errors import StoreError


@dataclass(frozen=True)
class ArtifactRef:
    path: str  # relative to the artifacts folder
    sha256: str


class Artifacts:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self._root = str(self.root)

    def put_bytes(self, data: bytes, ext: str, kind: str = "files") -> ArtifactRef:
        sha = hashlib.sha256(data).hexdigest()
        rel = f"{kind}/{sha[:2]}/{sha}.{ext.lstrip('.')}"
        # Plain strings, and the folder made only when the file cannot be: a build stores tens of thousands of
        # small patches, on which pathlib's parsing and a mkdir per file cost as much as the writes.
        target = os.path.join(self._root, rel)
        if not os.path.exists(target):
            folder = os.path.dirname(target)
            try:
                try:
                    fd, tmp = tempfile.mkstemp(prefix=f".{sha}.", suffix=".tmp", dir=folder)
                except FileNotFoundError:
                    os.makedirs(folder, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(prefix=f".{sha}.", suffix=".tmp", dir=folder)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)  # identical content may be written concurrently: the last rename wins
            except OSError as e:
                raise StoreError(
                    f"cannot write artifact {target}: {e.strerror}",
                    hint="check the artifacts folder is writable (--artifacts)",
                ) from e
        return ArtifactRef(rel, sha)

    def put_file(self, src: str | Path, kind: str = "files") -> ArtifactRef:
        src = Path(src)
        return self.put_bytes(src.read_bytes(), src.suffix or ".bin", kind)

    def path(self, ref: ArtifactRef | str) -> Path:
        rel = ref.path if isinstance(ref, ArtifactRef) else ref
        return self.root / rel

    def verify(self, ref: ArtifactRef) -> bool:
        p = self.path(ref)
        return p.exists() and hashlib.sha256(p.read_bytes()).hexdigest() == ref.sha256
