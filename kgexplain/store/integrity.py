"""What a run wrote, recorded when it is marked complete, and the check that the store still holds it.

When ``write_run`` finishes it records on the Run (in its stats, under ``written``): per node label the row count
and a digest of the sorted ids, per relationship type the row count, and a digest of the exact rows written.
:func:`check_store` reads every complete run back and compares: the counts, the id digests, and that every id is
found again by its primary key (a damaged index answers a scan but not a lookup: ``patterns`` lists a pattern that
``show`` cannot find). Property values are not compared, so damage confined to them goes unseen. The files a run
refers to (its patches, maps, contact sheets and mined graph, content-addressed under the artifacts folder) must
be there with the content they were written with (``_artifact_problems``).

The content digest lets a re-run that would write the very same rows skip the write (see ``write_run``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kgexplain.errors import StoreError
from kgexplain.store.artifacts import ArtifactRef
from kgexplain.store.base import RUN_SCOPED, GraphStore
from kgexplain.store.digest import WRITTEN, ids_digest


@dataclass
class RunCheck:
    """One run's verdict: ``ok``, ``damaged`` (with what differs), ``unverified`` (written by a kgexplain that kept
    no record; only the lookups were checked) or ``incomplete`` (its write never finished)."""

    run: str
    kind: str
    status: str
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lookups_missing(store: GraphStore, label: str, ids: list[str]) -> int:
    found = 0
    for lo in range(0, len(ids), 20_000):
        chunk = ids[lo : lo + 20_000]
        found += int(
            store.query(f"UNWIND $ids AS i MATCH (n:{label} {{id: i}}) RETURN count(n)", {"ids": chunk}).scalar() or 0
        )
    return len(ids) - found


def check_run(store: GraphStore, run: str, kind: str, stats: Mapping[str, Any]) -> RunCheck:
    """Compare what ``run`` holds now with what it recorded when it was written."""
    record = stats.get(WRITTEN)
    problems: list[str] = []
    try:
        for label in RUN_SCOPED:
            if not store.has_label(label):
                continue
            ids = [str(r[0]) for r in store.query(f"MATCH (n:{label}) WHERE n.run = $r RETURN n.id", {"r": run}).rows]
            missing = _lookups_missing(store, label, ids)
            if missing:
                problems.append(f"{missing} of {len(ids)} {label} nodes are not found by their id")
            want = (record or {}).get("nodes", {}).get(label)
            if record is None:
                continue
            if want is None:
                want = {"count": 0, "ids": ids_digest([])}
            if len(ids) != want["count"]:
                problems.append(f"{label}: {len(ids)} nodes, {want['count']} written")
            elif ids_digest(ids) != want["ids"]:
                problems.append(f"{label}: the ids differ from those written")
        for name, count in (record or {}).get("rels", {}).items():
            rel = store.schema.rel(name)
            got = store.query(
                f"MATCH (a:{rel.source})-[e:{name}]->(:{rel.target}) WHERE a.run = $r RETURN count(e)", {"r": run}
            ).scalar()
            if int(got or 0) != count:
                problems.append(f"{name}: {got} relationships, {count} written")
        problems += _artifact_problems(store, run, stats)
    except StoreError as e:  # the engine cannot read the run back ("the database file may be corrupted")
        problems.append(e.message)
    status = "damaged" if problems else "ok" if record is not None else "unverified"
    return RunCheck(run, kind, status, problems)


SHA = re.compile(r"[0-9a-f]{64}")


def _artifact_problems(store: GraphStore, run: str, stats: Mapping[str, Any]) -> list[str]:
    """The run's files that are missing or differ from what was written: FIRES_ON patches and Metric artifacts
    (checked against their stored sha256), the contact sheets and the mined graph its stats name (against the hash
    in their content-addressed names). A store copied without its artifacts folder answers every query, but its
    pages and ``aog learn`` would find nothing."""
    refs: dict[str, str | None] = {}
    if store.has_label("Pattern") and store.has_label("Image"):
        rows = store.query(
            "MATCH (:Pattern)-[f:FIRES_ON]->(:Image) WHERE f.run = $r AND f.patch IS NOT NULL "
            "RETURN DISTINCT f.patch, f.patch_sha",
            {"r": run},
        ).rows
        refs.update({str(rel): sha for rel, sha in rows})
    if store.has_label("Metric"):
        rows = store.query(
            "MATCH (m:Metric) WHERE m.run = $r AND m.artifact IS NOT NULL RETURN DISTINCT m.artifact, m.artifact_sha",
            {"r": run},
        ).rows
        refs.update({str(rel): sha for rel, sha in rows})
    sheets = stats.get("sheets")
    for rel in sheets.values() if isinstance(sheets, Mapping) else []:
        refs.setdefault(str(rel), None)
    graph = stats.get("graph")
    if isinstance(graph, Mapping) and graph.get("path"):
        refs.setdefault(str(graph["path"]), graph.get("sha256"))
    missing, altered = [], []
    for rel, sha in sorted(refs.items()):
        path = store.artifacts.root / rel
        if not path.is_file():
            missing.append(rel)
            continue
        found = SHA.search(rel.rsplit("/", 1)[-1])
        want = sha or (found.group(0) if found else None)
        if want and not store.artifacts.verify(ArtifactRef(rel, want)):
            altered.append(rel)
    out = []
    if missing:
        out.append(
            f"{len(missing)} of {len(refs)} files it refers to are not in {store.artifacts.root} (e.g. {missing[0]})"
        )
    if altered:
        out.append(f"{len(altered)} of {len(refs)} files it refers to differ from what was written (e.g. {altered[0]})")
    return out


def check_store(store: GraphStore) -> list[RunCheck]:
    """Every run of the store, checked (runs whose write never finished are reported, not checked)."""
    if not store.has_label("Run"):
        return []
    rows = store.query("MATCH (r:Run) RETURN r.id, r.kind, r.status, r.stats ORDER BY r.id").rows
    out = []
    for run, kind, status, stats in rows:
        if status != "complete":
            out.append(RunCheck(run, kind, "incomplete", [f"status {status}: run the command again to finish it"]))
            continue
        out.append(check_run(store, run, kind, json.loads(stats or "{}")))
    return out
