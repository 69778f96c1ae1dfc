"""Small helpers for users' Cypher: is it a write?, and the few Neo4j forms the embedded engine spells otherwise.

Only the store package knows Cypher; this module looks at query *text*, outside string literals, back-quoted
names and comments. The engines enforce read-only access themselves (the embedded store opens read-only for
the CLI's reads, Neo4j runs reads in READ transactions); the check here gives a clear message before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

WRITE_CLAUSES = frozenset(
    {
        "CREATE",
        "MERGE",
        "DELETE",
        "DETACH",
        "SET",
        "REMOVE",
        "DROP",
        "COPY",
        "ALTER",
        "LOAD",
        "FOREACH",
        "INSTALL",
        "IMPORT",
        "CHECKPOINT",
        "ATTACH",
    }
)
_TOKEN = re.compile(
    r"""(?P<literal>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`|//[^\n]*|/\*.*?\*/)"""
    r"""|(?P<word>[A-Za-z_][A-Za-z_0-9]*)|(?P<space>\s+)|(?P<other>.)""",
    re.S,
)


def _tokens(query: str) -> Iterator[re.Match[str]]:
    return _TOKEN.finditer(query)


def is_write_query(query: str) -> bool:
    """True when the query has a write clause (a keyword, not a property, label, parameter or alias)."""
    previous = ""
    for m in _tokens(query):
        if m.group("space"):
            continue
        is_name = previous in (".", ":", "$") or previous.upper() == "AS"  # property, label, parameter, alias
        if m.group("word") and not is_name and m.group("word").upper() in WRITE_CLAUSES:
            return True
        previous = m.group(0)
    return False


# Neo4j spellings -> LadybugDB (Kùzu dialect) spellings of the same functions.
_NEO4J_FORMS = (
    (re.compile(r"\btype(\s*\()", re.I), r"label\1"),
    (re.compile(r"\belementId(\s*\()", re.I), r"id\1"),
    (re.compile(r"\btoInteger(\s*\()", re.I), r"to_int64\1"),
    (re.compile(r"\btoFloat(\s*\()", re.I), r"to_double\1"),
)


def to_embedded_dialect(query: str) -> str:
    """Rewrite ``type(r)``, ``elementId(n)``, ``toInteger(x)`` and ``toFloat(x)`` outside literals."""
    parts: list[str] = []
    code: list[str] = []
    for m in _tokens(query):
        if m.group("literal"):
            parts.append(_apply_forms("".join(code)))
            code = []
            parts.append(m.group(0))
        else:
            code.append(m.group(0))
    parts.append(_apply_forms("".join(code)))
    return "".join(parts)


def _apply_forms(code: str) -> str:
    for pattern, repl in _NEO4J_FORMS:
        code = pattern.sub(repl, code)
    return code
