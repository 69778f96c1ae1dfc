"""The questions the report and the browser ask, one page at a time (``SKIP`` / ``LIMIT``, never a whole run).

Same dialect rules as :mod:`kgexplain.store.queries`: the common subset of LadybugDB's and Neo4j's Cypher, values
always passed as parameters.
"""

from __future__ import annotations

from typing import Any

from kgexplain.store.base import GraphStore


def _page(offset: int, limit: int) -> dict[str, int]:
    return {"skip": max(0, int(offset)), "limit": max(1, int(limit))}


def input_size(store: GraphStore, model: str) -> int | None:
    rows = store.query("MATCH (m:Model) WHERE m.id = $id RETURN m.input_size AS s", {"id": model}).records()
    return int(rows[0]["s"]) if rows and rows[0]["s"] else None


def run_layers(store: GraphStore, run: str) -> list[dict[str, Any]]:
    """Patterns per layer of a build run, with their mean sigma, in layer order of the model."""
    if not store.has_label("Pattern"):
        return []
    rows = store.query(
        "MATCH (p:Pattern) WHERE p.run = $run RETURN p.layer AS layer, count(p) AS patterns, "
        "avg(p.sigma) AS mean_sigma, sum(p.fires) AS fires",
        {"run": run},
    ).records()
    order = {
        str(r["name"]): int(r["idx"] or 0)
        for r in store.query(
            "MATCH (r:Run)-[:USED_MODEL]->(m:Model), (l:Layer)-[:OF_MODEL]->(m) WHERE r.id = $run "
            "RETURN l.name AS name, l.idx AS idx",
            {"run": run},
        ).records()
    }
    return sorted(rows, key=lambda r: (order.get(str(r["layer"]), 1 << 30), str(r["layer"])))


def top_patterns(store: GraphStore, run: str, layer: str, offset: int = 0, limit: int = 24) -> list[dict[str, Any]]:
    """One page of a layer's patterns by score, each with its best patch."""
    return store.query(
        "MATCH (p:Pattern) WHERE p.run = $run AND p.layer = $layer WITH p ORDER BY p.score DESC, p.id "
        "SKIP $skip LIMIT $limit OPTIONAL MATCH (p)-[f:FIRES_ON]->(i:Image) WHERE f.rank = 0 "
        "RETURN p.id AS pattern, p.filter AS filter, p.k AS k, p.score AS score, p.sigma AS sigma, "
        "p.fires AS fires, f.patch AS patch ORDER BY score DESC, pattern",
        {"run": run, "layer": layer, **_page(offset, limit)},
    ).records()


def filter_patterns(store: GraphStore, run: str, layer: str, channel: int) -> list[dict[str, Any]]:
    """The patterns one filter was split into (a handful)."""
    return store.query(
        "MATCH (p:Pattern) WHERE p.run = $run AND p.layer = $layer AND p.filter = $f "
        "RETURN p.id AS pattern, p.k AS k, p.score AS score, p.mu_x AS mu_x, p.mu_y AS mu_y ORDER BY k",
        {"run": run, "layer": layer, "f": int(channel)},
    ).records()


def run_metrics(store: GraphStore, run: str, offset: int = 0, limit: int = 200) -> list[dict[str, Any]]:
    """A run's figures that are not per image (per-image maps are on the image pages)."""
    if not store.has_label("Metric"):
        return []
    return store.query(
        "MATCH (m:Metric) WHERE m.run = $run AND m.image IS NULL RETURN m.kind AS kind, m.name AS name, "
        "m.value AS value, m.layer AS layer, m.checkpoint AS checkpoint, m.artifact AS artifact "
        "ORDER BY m.kind, m.checkpoint, m.layer, m.name SKIP $skip LIMIT $limit",
        {"run": run, **_page(offset, limit)},
    ).records()


def run_images(store: GraphStore, run: str, offset: int = 0, limit: int = 48) -> list[dict[str, Any]]:
    """One page of the images a run measured or fired on."""
    found = (
        store.query(
            "MATCH (p:Pattern)-[f:FIRES_ON]->(i:Image) WHERE p.run = $run AND f.rank = 0 "
            "RETURN DISTINCT i.id AS image, i.path AS path, i.label AS label ORDER BY image SKIP $skip LIMIT $limit",
            {"run": run, **_page(offset, limit)},
        ).records()
        if store.has_label("Pattern")
        else []
    )
    if found or not store.has_label("Metric"):
        return found
    return store.query(
        "MATCH (m:Metric)-[:MEASURED_ON]->(i:Image) WHERE m.run = $run "
        "RETURN DISTINCT i.id AS image, i.path AS path, i.label AS label ORDER BY image SKIP $skip LIMIT $limit",
        {"run": run, **_page(offset, limit)},
    ).records()


def image(store: GraphStore, image_id: str) -> dict[str, Any] | None:
    rows = store.query(
        "MATCH (i:Image) WHERE i.id = $id RETURN i.id AS image, i.path AS path, i.w AS w, i.h AS h, "
        "i.label AS label, i.dataset AS dataset",
        {"id": image_id},
    ).records()
    return rows[0] if rows else None


def image_patterns(
    store: GraphStore, image_id: str, layer: str | None = None, offset: int = 0, limit: int = 60
) -> list[dict[str, Any]]:
    """The patterns that fire on an image (their top-ranked inferences), strongest first; one layer or all."""
    if not store.has_label("Pattern"):
        return []
    where = " AND p.layer = $layer" if layer else ""
    params: dict[str, Any] = {"id": image_id, **_page(offset, limit)}
    if layer:
        params["layer"] = layer
    return store.query(
        f"MATCH (p:Pattern)-[f:FIRES_ON]->(i:Image) WHERE i.id = $id{where} RETURN p.id AS pattern, "
        "p.run AS run, p.layer AS layer, f.x AS x, f.y AS y, f.score AS score, f.rank AS rank, f.patch AS patch "
        "ORDER BY score DESC, pattern SKIP $skip LIMIT $limit",
        params,
    ).records()


def image_layers(store: GraphStore, image_id: str) -> list[str]:
    if not store.has_label("Pattern"):
        return []
    rows = store.query(
        "MATCH (p:Pattern)-[:FIRES_ON]->(i:Image) WHERE i.id = $id RETURN DISTINCT p.layer AS layer ORDER BY layer",
        {"id": image_id},
    ).records()
    return [str(r["layer"]) for r in rows]


def image_maps(store: GraphStore, image_id: str) -> list[dict[str, Any]]:
    """Per-image figures (SID / RU maps as artifacts, concentrations) of every run."""
    if not store.has_label("Metric"):
        return []
    return store.query(
        "MATCH (m:Metric) WHERE m.image = $id AND m.kind <> 'localization' RETURN m.run AS run, m.kind AS kind, "
        "m.layer AS layer, m.checkpoint AS checkpoint, m.value AS value, m.artifact AS artifact "
        "ORDER BY run, layer, kind",
        {"id": image_id},
    ).records()


def image_localizations(store: GraphStore, image_id: str) -> list[dict[str, Any]]:
    """Parts found on an image by recorded ``localize`` runs (position, facing and confidence in ``extra``)."""
    if not store.has_label("Metric"):
        return []
    return store.query(
        "MATCH (m:Metric) WHERE m.image = $id AND m.kind = 'localization' RETURN m.run AS run, m.name AS part, "
        "m.value AS confidence, m.extra AS extra ORDER BY run, part",
        {"id": image_id},
    ).records()


def image_knowledge_points(store: GraphStore, image_id: str, limit: int = 400) -> list[dict[str, Any]]:
    if not store.has_label("KnowledgePoint"):
        return []
    return store.query(
        "MATCH (k:KnowledgePoint) WHERE k.image = $id RETURN k.run AS run, k.checkpoint AS checkpoint, "
        "k.layer AS layer, k.x AS x, k.y AS y, k.cls AS cls, k.prob AS prob, k.reliable AS reliable "
        "ORDER BY prob DESC LIMIT $limit",
        {"id": image_id, "limit": int(limit)},
    ).records()


def pattern_paths(
    store: GraphStore, pattern_id: str, direction: str, depth: int, limit: int = 8
) -> list[dict[str, Any]]:
    """Edges reachable from a pattern up (to parents) or down (to children), breadth first, ``limit`` strongest
    per pattern and level."""
    out: list[dict[str, Any]] = []
    frontier = [pattern_id]
    seen = {pattern_id}
    for level in range(1, depth + 1):
        nxt: list[str] = []
        for pid in frontier:
            if direction == "up":
                q = (
                    "MATCH (c:Pattern)-[e:PARENT]->(p:Pattern) WHERE c.id = $id RETURN c.id AS src, p.id AS dst, "
                    "p.layer AS layer, e.dx AS dx, e.dy AS dy, e.weight AS weight ORDER BY weight DESC LIMIT $n"
                )
            else:
                q = (
                    "MATCH (c:Pattern)-[e:PARENT]->(p:Pattern) WHERE p.id = $id RETURN p.id AS src, c.id AS dst, "
                    "c.layer AS layer, e.dx AS dx, e.dy AS dy, e.weight AS weight ORDER BY weight DESC LIMIT $n"
                )
            for row in store.query(q, {"id": pid, "n": int(limit)}).records():
                out.append(row | {"level": level})
                if row["dst"] not in seen:
                    seen.add(row["dst"])
                    nxt.append(str(row["dst"]))
        frontier = nxt
    return out


def image_maps_of_run(store: GraphStore, run: str, limit: int = 500) -> list[str]:
    """The images a run measured per image (SID / RU maps, knowledge points), up to ``limit``."""
    out: list[str] = []
    if store.has_label("Metric"):
        out += [str(r["image"]) for r in store.query(
            "MATCH (m:Metric) WHERE m.run = $run AND m.image IS NOT NULL RETURN DISTINCT m.image AS image "
            "ORDER BY image LIMIT $n", {"run": run, "n": int(limit)}).records()]  # fmt: skip
    if store.has_label("KnowledgePoint") and not out:
        out += [str(r["image"]) for r in store.query(
            "MATCH (k:KnowledgePoint) WHERE k.run = $run RETURN DISTINCT k.image AS image ORDER BY image LIMIT $n",
            {"run": run, "n": int(limit)}).records()]  # fmt: skip
    return out


def layer_curves(store: GraphStore, kinds: tuple[str, ...] = ("info_layer", "kp_layer")) -> list[dict[str, Any]]:
    """Per-layer figures of every run (SID, RU, concentration; knowledge-point counts), for curves across layers
    and checkpoints."""
    if not store.has_label("Metric"):
        return []
    return store.query(
        "MATCH (m:Metric)-[:MEASURES]->(l:Layer) WHERE m.kind IN $kinds RETURN m.run AS run, m.kind AS kind, "
        "m.name AS name, m.checkpoint AS checkpoint, l.name AS layer, l.idx AS idx, m.value AS value "
        "ORDER BY run, kind, name, idx",
        {"kinds": list(kinds)},
    ).records()
