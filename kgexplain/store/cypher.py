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
    """Rewrite ``type(r)``, ``elementId(n)``, ``toInteger(x)`` and ``toFloat(x)`` outside literals, and name each
    column as Neo4j does (``alias_return_items``)."""
    parts: list[str] = []
    code: list[str] = []
    for m in _tokens(alias_return_items(query)):
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


_CLAUSE_END = frozenset({"ORDER", "SKIP", "LIMIT", "UNION"})


def alias_return_items(query: str) -> str:
    """Give every expression of a top-level RETURN without ``AS`` its own text as alias, as Neo4j names columns
    (``RETURN count(p)`` -> a column ``count(p)``): the embedded engine names them after its internal form
    (``COUNT(p._ID)``, ``+(TO_INT64(p.k),1)``), so results (and ``--json`` keys) differed between the backends."""
    out: list[str] = []
    item: list[str] = []  # the current RETURN item's tokens
    depth = 0
    in_return = False
    previous = ""

    def close_item() -> None:
        significant = [i for i, t in enumerate(item) if t.strip() and not t.startswith(("//", "/*"))]
        end = significant[-1] + 1 if significant else 0
        text = " ".join("".join(item[:end]).split())
        out.extend(item[:end])
        if text and text != "*" and not _has_alias(item[:end]):
            out.append(" AS `" + text.replace("`", "``") + "`")
        out.extend(item[end:])  # the space and comments after the expression
        item.clear()

    for m in _tokens(query):
        tok = m.group(0)
        word = m.group("word")
        is_name = previous in (".", ":", "$")
        if m.group("other"):
            if tok in "([{":
                depth += 1
            elif tok in ")]}":
                depth -= 1
        if in_return and depth == 0 and word and not is_name and word.upper() in _CLAUSE_END:
            close_item()
            in_return = False
        elif in_return and depth == 0 and tok in (",", ";"):
            close_item()
            if tok == ";":
                in_return = False
            out.append(tok)
            previous = tok
            continue
        if in_return:
            if word and word.upper() == "DISTINCT" and not "".join(item).strip():  # RETURN's, not the item's
                out.extend(item)
                item.clear()
                out.append(tok)
            else:
                item.append(tok)
            if not m.group("space"):
                previous = tok
            continue
        out.append(tok)
        if word and depth == 0 and not is_name and word.upper() == "RETURN":
            in_return = True
        if not m.group("space"):
            previous = tok
    if in_return:
        close_item()
    return "".join(out)


def _has_alias(item: list[str]) -> bool:
    """Whether a RETURN item ends in ``AS name`` at its own level (not inside a list comprehension or a map)."""
    depth = 0
    previous = ""
    for tok in item:
        if tok in ("(", "[", "{"):
            depth += 1
        elif tok in (")", "]", "}"):
            depth -= 1
        elif depth == 0 and tok.upper() == "AS" and previous not in (".", ":", "$"):
            return True
        if tok.strip():
            previous = tok
    return False
