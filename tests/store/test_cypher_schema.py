from __future__ import annotations

import pytest

from kgexplain.errors import StoreError
from kgexplain.store.cypher import alias_return_items, is_write_query, to_embedded_dialect
from kgexplain.store.schema import load_schema, parse_schema


@pytest.mark.parametrize(
    "q",
    [
        "CREATE (n:Pattern {id: 'x'})",
        "MATCH (n) DETACH DELETE n",
        "MATCH (n) SET n.x = 1",
        "merge (n:A {id: 1})",
        "MATCH (n) WITH n REMOVE n.x",
        "DROP TABLE Pattern",
        "COPY Pattern FROM 'x.csv'",
        "MATCH (n) RETURN n // comment\nCREATE (m)",
    ],
)
def test_write_queries_are_detected(q: str) -> None:
    assert is_write_query(q)


@pytest.mark.parametrize(
    "q",
    [
        "MATCH (n:Pattern) RETURN n.set, n.create",
        "MATCH (n) WHERE n.id = 'CREATE me' RETURN n",
        "MATCH (n) RETURN n /* DELETE */",
        "MATCH (n:Create) RETURN n",
        "MATCH (n) WHERE n.id = $delete RETURN n",
        "MATCH (n)-[r]->(m) RETURN type(r)",
        "MATCH (`SET`) RETURN 1",
        "MATCH (n) RETURN n.c AS checkpoint",
    ],
)
def test_reads_are_not_mistaken_for_writes(q: str) -> None:
    assert not is_write_query(q)


def test_neo4j_forms_are_translated_outside_strings() -> None:
    q = "MATCH (a)-[r]->(b) WHERE a.id = 'type(x)' RETURN type(r), elementId(a), toInteger(a.k), toFloat(a.s)"
    assert to_embedded_dialect(q) == (
        "MATCH (a)-[r]->(b) WHERE a.id = 'type(x)' RETURN label(r) AS `type(r)`, id(a) AS `elementId(a)`,"
        " to_int64(a.k) AS `toInteger(a.k)`, to_double(a.s) AS `toFloat(a.s)`"
    )


@pytest.mark.parametrize(
    ("q", "aliased"),
    [
        ("MATCH (p) RETURN count(p), p.k * 2 AS twice ORDER BY count(p) LIMIT 3",
         "MATCH (p) RETURN count(p) AS `count(p)`, p.k * 2 AS twice ORDER BY count(p) LIMIT 3"),
        ("MATCH (p) RETURN DISTINCT p.layer", "MATCH (p) RETURN DISTINCT p.layer AS `p.layer`"),
        ("MATCH (p) RETURN *", "MATCH (p) RETURN *"),
        ("MATCH (p) RETURN [x IN range(1, 3) | x * 2], {a: 1, b: 2} AS m",
         "MATCH (p) RETURN [x IN range(1, 3) | x * 2] AS `[x IN range(1, 3) | x * 2]`, {a: 1, b: 2} AS m"),
        ("MATCH (p) RETURN p.return, p.limit // a comment",
         "MATCH (p) RETURN p.return AS `p.return`, p.limit AS `p.limit` // a comment"),
        ("MATCH (p) RETURN count(`p`)\n  , 'a,b' SKIP 1",
         "MATCH (p) RETURN count(`p`) AS `count(``p``)`\n  , 'a,b' AS `'a,b'` SKIP 1"),
        ("MATCH (p) CALL { WITH p RETURN p.k AS k } RETURN k UNION RETURN 1",
         "MATCH (p) CALL { WITH p RETURN p.k AS k } RETURN k AS `k` UNION RETURN 1 AS `1`"),
    ],
)  # fmt: skip
def test_return_items_are_named_by_their_text_as_neo4j_names_them(q: str, aliased: str) -> None:
    assert alias_return_items(q) == aliased


def test_the_shipped_schema_and_its_ddl() -> None:
    schema = load_schema()
    assert schema.version >= 1
    assert {"Pattern", "Layer", "Filter", "Image", "Run", "Model"} <= set(schema.nodes)
    assert schema.rels["PARENT"].source == schema.rels["PARENT"].target == "Pattern"
    lb = schema.ladybug_ddl()
    assert any(s.startswith("CREATE NODE TABLE IF NOT EXISTS Pattern(") and "PRIMARY KEY(id)" in s for s in lb)
    assert any(s.startswith("CREATE REL TABLE IF NOT EXISTS PARENT(FROM Pattern TO Pattern") for s in lb)
    neo = schema.neo4j_ddl()
    assert "CREATE CONSTRAINT kgx_pattern_id IF NOT EXISTS FOR (n:Pattern) REQUIRE n.id IS UNIQUE" in neo
    assert "CREATE INDEX kgx_pattern_layer IF NOT EXISTS FOR (n:Pattern) ON (n.layer)" in neo


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"version": 1, "nodes": {"A": {"properties": {"id": "INT64"}}}, "relationships": {}}, "needs a STRING id"),
        (
            {"version": 1, "nodes": {"A": {"properties": {"id": "STRING", "x": "FLOAT"}}}, "relationships": {}},
            "unknown types",
        ),
        ({"version": 1, "nodes": {}, "relationships": {"R": {"from": "A", "to": "B"}}}, "unknown labels"),
        ({"nodes": {}}, "malformed"),
    ],
)
def test_malformed_schemas_are_rejected(doc: dict, match: str) -> None:
    with pytest.raises(StoreError, match=match):
        parse_schema(doc)
