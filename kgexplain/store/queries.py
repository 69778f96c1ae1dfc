"""Named queries: the questions the CLI asks, written once in Cypher that both backends accept.

They use only the common subset of the two dialects (no ``type()``, no map projections, no ``shortestPath``);
filters are added as fixed text with their values always passed as parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kgexplain.errors import StoreError, UsageError
from kgexplain.store.base import GraphStore


def _where(filters: list[tuple[str, str, Any]]) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    for i, (expr, op, value) in enumerate(filters):
        if value is None:
            continue
        params[f"v{i}"] = value
        clauses.append(f"{expr} {op} $v{i}")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def patterns(
    store: GraphStore,
    *,
    run: str | None = None,
    model: str | None = None,
    layer: str | None = None,
    filter: int | None = None,
    top: int = 20,
) -> list[dict[str, Any]]:
    """The highest-scoring patterns, with positions and their best patch."""
    where, params = _where([("p.run", "=", run), ("p.layer", "=", layer), ("p.filter", "=", filter)])
    if model:
        key = "vm"
        params[key] = model if "@" in model else model + "@"
        where += (" AND " if where else " WHERE ") + (
            f"p.model = ${key}" if "@" in model else f"p.model STARTS WITH ${key}"
        )
    params["top"] = int(top)
    rows = store.query(
        f"MATCH (p:Pattern){where} WITH p ORDER BY p.score DESC LIMIT $top "
        "OPTIONAL MATCH (p)-[f:FIRES_ON]->(i:Image) WHERE f.rank = 0 "
        "RETURN p.id AS pattern, p.layer AS layer, p.filter AS filter, p.k AS k, p.score AS score, "
        "p.mu_x AS mu_x, p.mu_y AS mu_y, p.sigma AS sigma, p.fires AS fires, f.patch AS patch "
        "ORDER BY score DESC",
        params,
    ).records()
    if not rows:
        _check_names(store, run, layer, model)
    return rows


def _check_names(store: GraphStore, run: str | None, layer: str | None, model: str | None) -> None:
    """No pattern matched: say so when the run, layer or model asked for holds no pattern at all."""
    if model is not None:
        known = [str(r[0]) for r in store.query("MATCH (p:Pattern) RETURN DISTINCT p.model ORDER BY p.model").rows]
        if not any(m == model or m.startswith(model + "@") for m in known):
            hint = f"models with patterns: {', '.join(known) or 'none'}"
            raise UsageError(f"no patterns of model {model!r}", hint=hint)
    if run is not None and not store.query("MATCH (p:Pattern) WHERE p.run = $r RETURN count(p)", {"r": run}).scalar():
        raise UsageError(f"no run {run!r} with patterns in the store", hint="`kgexplain runs` lists them")
    if layer is not None:
        known = [r[0] for r in store.query("MATCH (p:Pattern) RETURN DISTINCT p.layer ORDER BY p.layer").rows]
        if layer not in known:
            raise UsageError(
                f"no patterns of layer {layer!r}", hint=f"layers with patterns: {', '.join(known) or 'none'}"
            )


def pattern(store: GraphStore, pattern_id: str, limit: int = 10, sizes: bool = False) -> dict[str, Any]:
    """One pattern with its parents, children and top images (with ``sizes``, each image's w and h too)."""
    found = store.query(
        "MATCH (p:Pattern) WHERE p.id = $id RETURN p.id AS pattern, p.run AS run, p.model AS model, p.layer AS layer, "
        "p.filter AS filter, p.k AS k, p.mu_x AS mu_x, p.mu_y AS mu_y, p.sigma AS sigma, p.score AS score, "
        "p.fires AS fires",
        {"id": pattern_id},
    ).records()
    if not found:
        raise StoreError(
            f"no pattern {pattern_id!r} in the store", hint="`kgexplain patterns` lists pattern ids (run/layer/fC/pK)"
        )
    out = found[0]
    out["parents"] = store.query(
        "MATCH (p:Pattern)-[e:PARENT]->(q:Pattern) WHERE p.id = $id RETURN q.id AS pattern, q.layer AS layer, "
        "e.dx AS dx, e.dy AS dy, e.sigma AS sigma, e.weight AS weight ORDER BY weight DESC LIMIT $n",
        {"id": pattern_id, "n": int(limit)},
    ).records()
    out["children"] = store.query(
        "MATCH (c:Pattern)-[e:PARENT]->(p:Pattern) WHERE p.id = $id RETURN c.id AS pattern, c.layer AS layer, "
        "e.dx AS dx, e.dy AS dy, e.sigma AS sigma, e.weight AS weight ORDER BY weight DESC LIMIT $n",
        {"id": pattern_id, "n": int(limit)},
    ).records()
    out["images"] = store.query(
        "MATCH (p:Pattern)-[f:FIRES_ON]->(i:Image) WHERE p.id = $id RETURN i.id AS image, i.path AS path, "
        + ("i.w AS w, i.h AS h, " if sizes else "")
        + "f.x AS x, f.y AS y, f.score AS score, f.rank AS rank, f.patch AS patch ORDER BY rank LIMIT $n",
        {"id": pattern_id, "n": int(limit)},
    ).records()
    for row in out["images"]:
        row["path"] = image_path(store, row["path"])
    return out


def image_path(store: GraphStore, stored: str | None) -> str | None:
    """An Image node's path as a file path here: paths relative to the store's artifacts folder (the data sets the
    store generated) are resolved against it, wherever the store now is."""
    if not stored or Path(stored).is_absolute():
        return stored
    here = store.artifacts.root / stored
    return str(here) if here.exists() else stored  # not a file of the store: an id (in-memory images) as it was


def complete_runs(store: GraphStore, kind: str) -> list[dict[str, Any]]:
    """The complete runs of one kind, newest first: id, config (JSON text), finished."""
    if not store.has_label("Run"):
        return []
    return store.query(
        "MATCH (r:Run) WHERE r.kind = $kind AND r.status = 'complete' "
        "RETURN r.id AS id, r.config AS config, r.finished AS finished ORDER BY finished DESC",
        {"kind": kind},
    ).records()


def latest_build(store: GraphStore) -> str:
    """The newest complete explanatory-graph build's id (what `aog learn`, `localize` and `graph` take without
    ``--run``), or one error line when the store has none."""
    latest = complete_runs(store, "eg")
    if not latest:
        raise UsageError(f"no explanatory graph in {store.url}", hint="run `kgexplain build` first")
    return str(latest[0]["id"])


def run(store: GraphStore, run_id: str) -> dict[str, Any] | None:
    """One run's row (kind, model, status, config and stats as JSON text), or None."""
    if not store.has_label("Run"):
        return None
    rows = store.query(
        "MATCH (r:Run) WHERE r.id = $id RETURN r.kind AS kind, r.model AS model, r.status AS status, "
        "r.config AS config, r.stats AS stats",
        {"id": run_id},
    ).records()
    return rows[0] if rows else None


def part(store: GraphStore, aog_run: str) -> dict[str, Any] | None:
    """The Part node an AOG run wrote: id, category and box size (w, h)."""
    rows = store.query(
        "MATCH (p:Part) WHERE p.run = $run RETURN p.id AS id, p.category AS category, p.box_w AS w, p.box_h AS h",
        {"run": aog_run},
    ).records()
    return rows[0] if rows else None


def part_owner(store: GraphStore, part_id: str) -> str | None:
    """The run that holds the Part node ``part_id`` (None when there is none)."""
    if not store.has_label("Part"):
        return None
    rows = store.query("MATCH (p:Part) WHERE p.id = $id RETURN p.run", {"id": part_id}).rows
    return str(rows[0][0]) if rows else None


def template_uses(store: GraphStore, aog_run: str) -> list[dict[str, Any]]:
    """Every USES edge of an AOG run's templates with its template and pattern (id, layer, filter, k), by template
    then weight."""
    return store.query(
        "MATCH (t:Template)-[u:USES]->(q:Pattern) WHERE t.run = $run "
        "RETURN t.k AS k, t.example AS example, t.flipped AS flipped, q.id AS pattern, q.layer AS layer, "
        "q.filter AS filter, q.k AS pk, u.dx AS dx, u.dy AS dy, u.weight AS weight ORDER BY k, weight DESC",
        {"run": aog_run},
    ).records()


def runs(store: GraphStore, *, with_stats: bool = False, newest_first: bool = False) -> list[dict[str, Any]]:
    """Every run (oldest first unless ``newest_first``), with its stats as JSON text when ``with_stats``."""
    if not store.has_label("Run"):
        return []
    stats = ", r.stats AS stats" if with_stats else ""
    order = " DESC" if newest_first else ""
    return store.query(
        "MATCH (r:Run) RETURN r.id AS run, r.kind AS kind, r.model AS model, r.data AS data, r.status AS status, "
        f"r.started AS started, r.finished AS finished{stats} ORDER BY started{order}"
    ).records()


def dependent_runs(store: GraphStore, run: str) -> list[str]:
    """The runs made on build ``run`` (part graphs learnt on it, localisations with them: their config names it as
    ``build``), oldest first; a part graph's templates use the build's patterns, so deleting it alone damages them."""
    if not store.has_label("Run"):
        return []
    rows = store.query("MATCH (r:Run) RETURN r.id AS run, r.config AS config ORDER BY r.started").records()
    out = []
    for row in rows:
        try:
            config = json.loads(row["config"] or "{}")
        except (TypeError, ValueError):
            continue
        if isinstance(config, dict) and config.get("build") == run:
            out.append(str(row["run"]))
    return out


def stats(store: GraphStore) -> dict[str, Any]:
    """Counts per label and relationship type, and patterns per run and layer."""
    per_layer = []
    if store.has_label("Pattern"):
        per_layer = store.query(
            "MATCH (p:Pattern) RETURN p.run AS run, p.layer AS layer, count(p) AS patterns, "
            "avg(p.sigma) AS mean_sigma ORDER BY run, layer"
        ).records()
    return {"counts": store.counts(), "patterns_per_layer": per_layer}
