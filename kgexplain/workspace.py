"""Where a store lives (a folder, or a Bolt URL for Neo4j) and its workspace: the folder of artifacts beside it
(generated data, feature caches, patches, maps, plots).

For the embedded store (a folder, ``./kgexplain-store`` by default or ``$KGEXPLAIN_STORE``) the artifacts are in
``<folder>/artifacts`` next to ``<folder>/graph.lbdb``; for a Neo4j store they are in ``--artifacts`` (or
``$KGEXPLAIN_ARTIFACTS``, default ``./kgexplain-artifacts``)::

    artifacts/data/       generated data sets (the synthetic reference workload)
    artifacts/cache/      feature caches (float16 shards, see kgexplain.features.cache), decoders, the kappa table
    artifacts/patches/... content-addressed files referenced from the graph
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kgexplain.errors import StoreError, UsageError

BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
DEFAULT_STORE = "kgexplain-store"


def resolve_location(location: str | os.PathLike[str] | None = None) -> str:
    """``--store`` value -> a folder path or a Bolt URL (``neo4j`` alone means ``$NEO4J_URI``)."""
    loc = str(location) if location not in (None, "") else os.environ.get("KGEXPLAIN_STORE") or DEFAULT_STORE
    if loc.strip().lower() == "neo4j":
        uri = os.environ.get("NEO4J_URI")
        if not uri:
            raise StoreError("--store neo4j needs NEO4J_URI", hint="export NEO4J_URI=bolt://localhost:7687")
        loc = uri
    if "://" in loc:
        scheme = loc.split("://", 1)[0].lower()
        if scheme not in BOLT_SCHEMES:
            raise StoreError(
                f"unsupported store URL scheme {scheme!r} in {loc!r}",
                hint="use a folder for the embedded store, or bolt://HOST:7687 / neo4j://HOST:7687",
            )
    return loc


def is_bolt_url(location: str) -> bool:
    return "://" in location and location.split("://", 1)[0].lower() in BOLT_SCHEMES


@dataclass(frozen=True)
class Workspace:
    location: str  # a folder or a Bolt URL
    artifacts: Path

    @classmethod
    def resolve(cls, location: str | Path | None = None, artifacts: str | Path | None = None) -> Workspace:
        loc = resolve_location(location)
        if artifacts:
            art = Path(artifacts).expanduser()
        elif is_bolt_url(loc):
            art = Path(os.environ.get("KGEXPLAIN_ARTIFACTS") or "kgexplain-artifacts").expanduser()
        else:
            art = Path(loc).expanduser() / "artifacts"
        return cls(loc, art)

    @property
    def cache(self) -> Path:
        return self.artifacts / "cache"

    @property
    def data(self) -> Path:
        return self.artifacts / "data"

    def ensure(self) -> Workspace:
        """Create the artifacts folder; fail clearly when it cannot be written."""
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the artifacts folder {self.artifacts}: {e.strerror}",
                hint="pass --store (or --artifacts) with a writable location",
            ) from e
        if not os.access(self.artifacts, os.W_OK):
            raise StoreError(
                f"the artifacts folder {self.artifacts} is not writable",
                hint="pass --store (or --artifacts) with a writable location",
            )
        return self


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


@contextlib.contextmanager
def job_output_folder(path: str | os.PathLike[str], make: bool = True) -> Iterator[Path]:
    """Around a job that writes its files into ``path`` (``--out``): the folder, made now by ``output_folder`` where
    ``make`` (the other ranks of a distributed job only name it). When the job fails and the folder is one it made
    and left empty, it is removed (a failed `kgexplain info` left an empty `kgexplain-info/` where it ran)."""
    folder = Path(path)
    made = make and not folder.exists()
    if make:
        output_folder(folder)
    try:
        yield folder
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only an empty folder goes
        raise


def output_folder(path: str | os.PathLike[str]) -> Path:
    """The folder a command writes its files to (``--out``), made now: one error line where it cannot be (a file
    in its path, no permission), before the work whose results it would hold."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"cannot make the folder {folder}: {e.strerror or e}", hint="pass --out a writable folder"
        ) from e
    return folder


def process_tag() -> str:
    """``HOST.PID``: what the names of temporary files and folders carry, so that those of a process killed hard
    can be told from those of a live one (also of another machine sharing the folder)."""
    return f"{socket.gethostname()}.{os.getpid()}"


def left_by_gone_process(name: str) -> bool:
    """Whether a file or folder whose name carries ``.HOST.PID.`` (``process_tag``) was made by a process of this
    machine that is gone."""
    tag = f".{socket.gethostname()}."
    at = name.find(tag)
    pid = name[at + len(tag) :].split(".")[0] if at >= 0 else ""
    if os.name != "posix" or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    return False


def _left_by_gone_processes(target: Path, pattern: str) -> list[str]:
    """The files or folders beside ``target`` named ``.TARGET.HOST.PID`` + ``pattern`` that a process of this
    machine that is gone made (the name is matched after the target's own, which may hold anything)."""
    prefix = os.path.join(target.parent, f".{target.name}")
    return [old for old in glob.glob(glob.escape(prefix) + ".*" + pattern) if left_by_gone_process(old[len(prefix) :])]


def temporary_beside(path: Path, suffix: str = "") -> Path:
    """The name to write ``path`` under before renaming it into place (``.NAME.HOST.PID.tmp`` + ``suffix``), so
    that processes writing the same file at once (ranks sharing a cache) never write into each other's; one that a
    process of this machine left when it was killed hard is removed now."""
    for old in _left_by_gone_processes(path, ".tmp*"):
        with contextlib.suppress(OSError):
            os.unlink(old)
    return path.with_name(f".{path.name}.{process_tag()}.tmp{suffix}")


def staging_folder(out: Path) -> Path:
    """A new hidden folder beside ``out`` to write a result into, then rename over ``out`` when it is complete.

    Its name says which machine and process made it (``.site.HOST.PID.xxxx.staging``), so one that a process of
    this machine left when it was killed hard (``kill -9``, the out-of-memory killer) is removed here, the next
    time the same ``out`` is written; those of live processes and of other machines sharing the folder are kept."""
    for old in _left_by_gone_processes(out, ".staging"):
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{process_tag()}.", suffix=".staging", dir=out.parent))
