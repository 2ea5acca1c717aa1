"""The clauses of a column definition, table constraint or index, read from their SQL text.

Each reader walks the tokens with :mod:`sidecar.schema.sql`; everything else keeps the user's
text as written.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sidecar.schema.sql import (
    Token,
    names_in,
    parenthesised,
    split_top,
    tokens_of,
    top_level,
    top_words,
)

_CONSTANTS = ("null", "true", "false")


def constraint_body(tokens: Sequence[Token]) -> Sequence[Token]:
    """A table constraint's tokens after its ``CONSTRAINT name``."""
    return tokens[2:] if tokens and tokens[0].is_word("constraint") else tokens


def column_words(definition: str) -> list[str]:
    """The keywords of a column definition outside parentheses, folded (name left out)."""
    return top_words(tokens_of(definition)[1:])


def default_clause(tokens: Sequence[Token]) -> list[Token] | None:
    """The tokens of the DEFAULT value among a column definition's ``tokens``; None without."""
    for i, token in top_level(tokens):
        if token.is_word("default"):
            rest = tokens[i + 1 :]
            if rest and rest[0].text == "(":
                _, closing = parenthesised(rest, 0)
                return list(rest[: closing + 1])
            if rest and rest[0].text in ("+", "-"):
                return list(rest[:2])
            return list(rest[:1])
    return None


def is_null(default: Sequence[Token] | None) -> bool:
    """No DEFAULT, or DEFAULT NULL."""
    return default is None or (len(default) == 1 and default[0].is_word("null"))


def is_constant(default: Sequence[Token]) -> bool:
    """A DEFAULT that is a literal: the same value for every existing row, known up front."""
    if len(default) == 2 and default[0].text in ("+", "-"):
        return default[1].kind == "number"
    if len(default) != 1:
        return False
    token = default[0]
    return token.kind in ("string", "number", "blob") or token.is_word(*_CONSTANTS)


def null_default(definition: str) -> bool:
    """A column definition without a non-NULL DEFAULT."""
    if "default" not in definition.lower():  # most definitions: no tokenizing
        return True
    return is_null(default_clause(tokens_of(definition)[1:]))


def new_column_value(definition: str) -> tuple[str, str | None]:
    """What an existing row holds in a new column: (SQL expression, COLLATE name or None).

    A generated column: its expression; otherwise its DEFAULT (a bare name in a DEFAULT is a
    string, as SQLite reads it), or NULL."""
    tokens = tokens_of(definition)[1:]
    top = list(top_level(tokens))
    collate = next(
        (tokens[i + 1].value for i, t in top if t.is_word("collate") and i + 1 < len(tokens)),
        None,
    )
    for i, token in top:
        if token.is_word("as") and i + 1 < len(tokens) and tokens[i + 1].text == "(":
            opening, closing = parenthesised(tokens, i + 1)
            return definition[tokens[opening].start : tokens[closing].end], collate
    default = default_clause(tokens)
    if not default:
        return "NULL", collate
    if len(default) == 1 and default[0].is_name and not is_constant(default):
        word = default[0]
        if not word.is_word("current_time", "current_date", "current_timestamp"):
            return "'" + word.value.replace("'", "''") + "'", collate
    return definition[default[0].start : default[-1].end], collate


@functools.lru_cache(maxsize=65536)
def check_expressions(text: str) -> tuple[str, ...]:
    """The expressions of the CHECK clauses of a column definition or table constraint."""
    if "check" not in text.lower():  # most definitions: no tokenizing
        return ()
    tokens = tokens_of(text)
    found = []
    for i, token in top_level(tokens):
        if token.is_word("check") and i + 1 < len(tokens) and tokens[i + 1].text == "(":
            opening, closing = parenthesised(tokens, i + 1)
            found.append(text[tokens[opening].start : tokens[closing].end])
    return tuple(found)


def _values_in(tokens: Sequence[Token]) -> list[str]:
    return [t.value for t in tokens if t.is_name]


def references(text: str) -> tuple[list[str], str, list[str]] | None:
    """(child columns, parent table, parent columns: [] for its primary key) of a column
    definition's REFERENCES clause or of a FOREIGN KEY table constraint; None without one."""
    tokens = constraint_body(tokens_of(text))
    children: list[str] = []
    if tokens and tokens[0].is_word("foreign"):
        opening, closing = parenthesised(tokens, 0)
        children = _values_in(tokens[opening + 1 : closing])
    elif tokens:
        children = [tokens[0].value]
    for i, token in top_level(tokens):
        if token.is_word("references") and i + 1 < len(tokens):
            rest = tokens[i + 2 :]
            parents: list[str] = []
            if rest and rest[0].text == "(":
                opening, closing = parenthesised(rest, 0)
                parents = _values_in(rest[opening + 1 : closing])
            return children, tokens[i + 1].value, parents
    return None


def paren_names(tokens: Sequence[Token], start: int) -> tuple[list[str], int]:
    """The folded names inside the parentheses at or after ``start`` (ASC and DESC left out),
    and the index after them."""
    opening, closing = parenthesised(tokens, start)
    inside = [t for t in tokens[opening + 1 : closing] if not t.is_word("asc", "desc")]
    return names_in(inside), closing + 1


def unique_terms(constraint: str) -> str | None:
    """``(a, b)`` of a ``UNIQUE (a, b)`` table constraint (as written); None for others."""
    tokens = constraint_body(tokens_of(constraint))
    if not (tokens and tokens[0].is_word("unique")):
        return None
    opening, closing = parenthesised(tokens, 0)
    return constraint[tokens[opening].start : tokens[closing].end]


def is_unique_index(sql: str) -> bool:
    """``CREATE UNIQUE INDEX ...``."""
    tokens = tokens_of(sql)
    return len(tokens) > 1 and tokens[1].is_word("unique")


def index_parts(sql: str) -> tuple[list[str], str | None]:
    """The indexed expressions (ASC/DESC dropped) and the WHERE clause of a CREATE INDEX."""
    tokens = tokens_of(sql)
    on = next(i for i, t in enumerate(tokens) if t.is_word("on"))
    opening, closing = parenthesised(tokens, on)
    terms = []
    for _, item in split_top(sql, tokens[opening + 1 : closing]):
        end = len(item)
        while end > 1 and item[end - 1].is_word("asc", "desc"):
            end -= 1
        terms.append(sql[item[0].start : item[end - 1].end])
    rest = tokens[closing + 1 :]
    where = sql[rest[1].start : rest[-1].end] if rest and rest[0].is_word("where") else None
    return terms, where


def drop_not_null(definition: str) -> str:
    """A column definition without its ``NOT NULL`` clauses (a ``CONSTRAINT name`` before one
    and an ``ON CONFLICT`` after one included); every other character as written."""
    tokens = tokens_of(definition)
    spans: list[tuple[int, int]] = []
    for i, token in top_level(tokens):
        if i == 0 or not token.is_word("not") or i + 1 >= len(tokens):
            continue
        if not tokens[i + 1].is_word("null"):
            continue
        start, end = i, i + 2
        if i >= 3 and tokens[i - 2].is_word("constraint"):
            start = i - 2
        if (
            end + 2 < len(tokens)
            and tokens[end].is_word("on")
            and tokens[end + 1].is_word("conflict")
        ):
            end += 3
        spans.append((tokens[start].start, tokens[end - 1].end))
    text = definition
    for begin, finish in reversed(spans):
        head, tail = text[:begin].rstrip(), text[finish:].lstrip()
        text = f"{head} {tail}" if tail else head
    return text


_ACTIONS = {"cascade": 1, "restrict": 1, "set": 2, "no": 2}  # first word -> the action's words


def _foreign_key_clause(tokens: Sequence[Token]) -> tuple[int, int, int] | None:
    """(REFERENCES, end of the parent table and its columns, end of the whole clause) of the
    first foreign-key clause among ``tokens``, as token indexes; None without one. The clause
    runs on over its ``ON DELETE/UPDATE``, ``MATCH`` and ``[NOT] DEFERRABLE`` parts."""
    at = next((i for i, t in top_level(tokens) if t.is_word("references")), None)
    if at is None or at + 1 >= len(tokens):
        return None
    parent_end = at + 2
    if parent_end < len(tokens) and tokens[parent_end].text == "(":
        parent_end = parenthesised(tokens, parent_end)[1] + 1
    end = parent_end
    while end < len(tokens):
        token, after = tokens[end], tokens[end + 1 :]
        if token.is_word("on") and len(after) > 1 and after[0].is_word("delete", "update"):
            end += 2 + _ACTIONS.get(after[1].norm, 1)
        elif token.is_word("match") and after:
            end += 2
        elif token.is_word("deferrable") or (
            token.is_word("not") and after and after[0].is_word("deferrable")
        ):
            end += 1 if token.is_word("deferrable") else 2
            if end + 1 < len(tokens) and tokens[end].is_word("initially"):
                end += 2
        else:
            break
    return at, parent_end, min(end, len(tokens))


def _action_spans(tokens: Sequence[Token], start: int, end: int) -> list[tuple[int, int]]:
    """The token spans of the ``ON DELETE x`` / ``ON UPDATE x`` clauses in [start, end)."""
    spans, i = [], start
    while i < end:
        if i + 2 < end and tokens[i].is_word("on") and tokens[i + 1].is_word("delete", "update"):
            stop = min(i + 2 + _ACTIONS.get(tokens[i + 2].norm, 1), end)
            spans.append((i, stop))
            i = stop
        else:
            i += 1
    return spans


def foreign_key_actions(text: str) -> tuple[str, str]:
    """(ON DELETE, ON UPDATE) of the foreign key of a column definition or table constraint,
    each as folded words (``no action`` when not written)."""
    tokens = tokens_of(text)
    clause = _foreign_key_clause(tokens)
    found = {"delete": "no action", "update": "no action"}
    if clause is not None:
        for begin, stop in _action_spans(tokens, clause[1], clause[2]):
            found[tokens[begin + 1].norm] = " ".join(t.norm for t in tokens[begin + 2 : stop])
    return found["delete"], found["update"]


def with_actions(text: str, wanted: str) -> str:
    """``text`` (a column definition or table constraint with a foreign key) with its
    ``ON DELETE`` / ``ON UPDATE`` clauses replaced by those of ``wanted``, as written there,
    right after the parent table; every other character of ``text`` as written."""
    tokens, theirs = tokens_of(text), tokens_of(wanted)
    clause, other = _foreign_key_clause(tokens), _foreign_key_clause(theirs)
    if clause is None or other is None:
        return text
    added = " ".join(
        wanted[theirs[b].start : theirs[e - 1].end] for b, e in _action_spans(theirs, *other[1:])
    )
    text = _cut(text, tokens, _action_spans(tokens, clause[1], clause[2]))
    tokens = tokens_of(text)
    clause = _foreign_key_clause(tokens)
    if not added or clause is None:
        return text
    at = tokens[clause[1] - 1].end
    return f"{text[:at]} {added}{text[at:]}"


def drop_references(definition: str) -> str:
    """A column definition without its foreign-key clause (and a ``CONSTRAINT name`` before
    it); every other character as written."""
    tokens = tokens_of(definition)
    clause = _foreign_key_clause(tokens)
    if clause is None:
        return definition
    start = clause[0]
    if start >= 3 and tokens[start - 2].is_word("constraint"):
        start -= 2
    return _cut(definition, tokens, [(start, clause[2])])


def _cut(text: str, tokens: Sequence[Token], spans: list[tuple[int, int]]) -> str:
    """``text`` without the token spans (each [begin, end)), one space where each was."""
    for begin, finish in reversed(spans):
        head, tail = text[: tokens[begin].start].rstrip(), text[tokens[finish - 1].end :].lstrip()
        text = f"{head} {tail}" if tail and not tail.startswith((",", ")")) else head + tail
    return text
