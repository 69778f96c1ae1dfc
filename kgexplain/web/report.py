"""``kgexplain report``: the site as static files that open from the file system (no server, no network).

Files are copied into ``assets/`` under their content hash (a patch shared by two pages is stored once). Every run
page, pattern page (up to ``max_patterns`` per run, best first) and image page they link to is written with its
JSON twin; links to pages beyond those caps show as plain text, and the run page says how many patterns exist. The
folder is written next to ``out`` and moved into place at the end, so a failed report never leaves half a site.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgexplain.errors import UsageError
from kgexplain.progress import Progress, say, task
from kgexplain.store import browse
from kgexplain.store import queries as Q
from kgexplain.store.base import GraphStore
from kgexplain.web.render import STATIC, render, to_json
from kgexplain.web.site import Files, Site, artifact_content, href, sendable_image
from kgexplain.workspace import staging_folder


@dataclass
class ReportResult:
    out: str
    pages: int
    assets: int
    runs: list[str]
    seconds: float
    skipped: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"out": self.out, "pages": self.pages, "assets": self.assets, "runs": self.runs,
                "seconds": round(self.seconds, 2), "skipped": self.skipped}  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:
        return [self.to_json()]


class _Assets:
    def __init__(self, root: Path, store: GraphStore) -> None:
        self.root, self.store = root, store
        (root / "assets").mkdir(parents=True, exist_ok=True)
        self.count = 0
        self._done: dict[str, str | None] = {}

    def _put(self, data: bytes, ext: str) -> str:
        name = f"assets/{hashlib.sha256(data).hexdigest()[:20]}{ext}"
        target = self.root / name
        if not target.exists():
            target.write_bytes(data)
            self.count += 1
        return name

    def artifact(self, rel: str) -> str | None:
        if rel not in self._done:
            found = artifact_content(self.store.artifacts.root, rel)
            if found is None:
                self._done[rel] = None
            elif isinstance(found, bytes):  # a map drawn as PNG
                self._done[rel] = self._put(found, ".png")
            else:
                self._done[rel] = self._put(found.read_bytes(), found.suffix)
        return self._done[rel]

    def image(self, image_id: str, stored: str | None) -> str | None:
        key = "img:" + image_id
        if key not in self._done:
            path = Q.image_path(self.store, stored)
            p = Path(path) if path else None
            self._done[key] = self._put(*sendable_image(p)) if p is not None and p.is_file() else None
        return self._done[key]


def _unwritable(out: Path, e: OSError) -> UsageError:
    return UsageError(f"cannot write the report to {out}: {e.strerror or e}", hint="pass --out with a writable place")


def write_report(
    store: GraphStore,
    out: str | Path,
    runs: list[str] | None = None,
    max_patterns: int = 200,
    max_run_pages: int = 20,
    progress: Progress | None = None,
) -> ReportResult:
    t0 = time.perf_counter()
    out = Path(out)
    known = {str(r["run"]): r for r in Q.runs(store, newest_first=True)}
    if runs:
        missing = [r for r in runs if r not in known]
        if missing:
            raise UsageError(f"no run {missing[0]!r} in the store", hint="`kgexplain runs` lists them")
    chosen = list(runs) if runs else [r for r, row in known.items() if row["status"] == "complete"]
    if out.exists() and any(out.iterdir()) and not (out / "index.html").is_file():
        raise UsageError(f"{out} exists and is not a kgexplain report", hint="give an empty or new folder")
    if out.exists() and Path.cwd().resolve().is_relative_to(out.resolve()):
        raise UsageError(
            f"--out {out} is the folder you are in, which the report replaces as a whole",
            hint="pass a folder beside or below it, e.g. --out report",
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = staging_folder(out)
    except OSError as e:  # a folder that cannot be made or written to
        raise _unwritable(out, e) from e
    try:
        assets = _Assets(tmp, store)
        patterns: set[str] = set()
        top: set[str] = set()
        skipped = {"patterns": 0}
        for run in chosen:
            for lay in browse.run_layers(store, run):
                pats = browse.top_patterns(store, run, str(lay["layer"]), 0, max_patterns)
                patterns.update(str(p["pattern"]) for p in pats)
                top.update(str(p["pattern"]) for p in pats[:24])
                skipped["patterns"] += max(0, int(lay["patterns"]) - len(pats))
        images: set[str] = set()

        def allow(kind: str, node_id: str) -> bool:
            if kind == "patterns":
                return node_id in patterns
            if kind == "paths":
                return node_id in top
            if kind == "runs":
                return node_id in chosen
            return kind == "images"

        site = Site(store, Files(assets.artifact, assets.image), chosen or None, allow)
        site.max_pages = max_run_pages
        site.static = True
        written = 0

        def write(path: str, data: dict[str, Any]) -> None:
            nonlocal written
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render(data, path, store.url), encoding="utf-8")
            target.with_suffix(".json").write_text(to_json(data), encoding="utf-8")
            written += 1
            for key in ("images", "fires"):
                rows = data.get(key)
                for row in rows if isinstance(rows, list) else []:
                    if isinstance(row, dict) and row.get("image"):
                        images.add(str(row["image"]))

        write("index.html", site.index())
        write("metrics.html", site.metrics())
        for run in chosen:
            first = site.run(run)
            write(href("runs", run), first)
            for page in range(1, first["pager"]["pages"]):
                write(href("runs", run, page), site.run(run, page))
            for m in browse.image_maps_of_run(store, run):
                images.add(str(m))
        with task(progress, "pattern pages", len(patterns), "page") as advance:
            for pid in sorted(patterns):
                write(href("patterns", pid), site.pattern(pid))
                if pid in top:
                    write(href("paths", pid), site.paths(pid))
                advance(1)
        with task(progress, "image pages", len(images), "page") as advance:
            for iid in sorted(images):
                write(href("images", iid), site.image(iid))
                advance(1)
        (tmp / "static").mkdir(exist_ok=True)
        for f in STATIC.iterdir():
            shutil.copyfile(f, tmp / "static" / f.name)
        old = None
        if out.exists():  # moved aside and removed after, so a report is at `out` all but an instant
            old = staging_folder(out)
            try:
                out.replace(old)
            except OSError:
                old.rmdir()
                raise
        tmp.replace(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and str(e.filename or "").startswith((str(tmp), str(out))):  # disk full, ...
            raise _unwritable(out, e) from e
        raise
    say(progress, f"report: {written} pages, {assets.count} files in {out}/ (open {out}/index.html)")
    return ReportResult(str(out), written, assets.count, chosen, time.perf_counter() - t0, skipped)
