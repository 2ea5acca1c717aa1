"""The one parenthesis walker (:func:`sidecar.schema.sql.depths`) gives what the five walks it
replaced gave: those walks are kept here verbatim as the oracle, and Hypothesis draws SQL
fragments with balanced, unbalanced and nested parentheses."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.schema.clauses import default_clause
from sidecar.schema.sql import (
    Token,
    fold,
    parenthesised,
    split_top,
    tokenize,
    top_level,
    top_words,
)

FRAGMENTS = ["(", ")", ",", "a", '"b c"', "DEFAULT", "default", "-", "1", "'x'", "NOT", "from"]
TEXTS = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map(" ".join)


# --------------------------------------------------------------------------- the old walks


def old_split_top(sql: str, tokens: Sequence[Token]) -> list[tuple[str, list[Token]]]:
    items: list[tuple[str, list[Token]]] = []
    current: list[Token] = []
    depth = 0
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        if token.text == "," and depth == 0:
            if current:
                items.append((sql[current[0].start : current[-1].end], current))
            current = []
            continue
        current.append(token)
    if current:
        items.append((sql[current[0].start : current[-1].end], current))
    return items


def old_parenthesised(tokens: Sequence[Token], start: int) -> tuple[int, int]:
    opening = next(i for i in range(start, len(tokens)) if tokens[i].text == "(")
    depth = 0
    for i in range(opening, len(tokens)):
        if tokens[i].text == "(":
            depth += 1
        elif tokens[i].text == ")":
            depth -= 1
            if depth == 0:
                return opening, i
    raise ValueError("unbalanced parentheses")


def old_top_words(tokens: Sequence[Token]) -> list[str]:
    words = []
    depth = 0
    for token in tokens:
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.kind == "word":
            words.append(fold(token.text))
    return words


def old_depth0(tokens: Sequence[Token]) -> Iterator[tuple[int, Token]]:
    depth = 0
    for i, token in enumerate(tokens):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0:
            yield i, token


def old_default_tokens(tokens: Sequence[Token]) -> list[Token] | None:
    depth = 0
    for i, token in enumerate(tokens):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.is_word("default"):
            rest = tokens[i + 1 :]
            if rest and rest[0].text == "(":
                _, closing = old_parenthesised(rest, 0)
                return list(rest[: closing + 1])
            if rest and rest[0].text in ("+", "-"):
                return list(rest[:2])
            return list(rest[:1])
    return None


def old_from(rest: Sequence[Token]) -> int | None:
    depth, at = 0, None
    for i, token in enumerate(rest):
        depth += (token.text == "(") - (token.text == ")")
        if depth == 0 and token.is_word("from"):
            at = i
            break
    return at


def outcome(call: object) -> object:
    """What a call returns, or the type of what it raises."""
    try:
        return call()  # type: ignore[operator]
    except (StopIteration, ValueError) as exc:
        return type(exc)


# --------------------------------------------------------------------------- the properties


@given(TEXTS)
def test_the_walker_splits_and_filters_as_the_old_walks(text: str) -> None:
    tokens = tokenize(text)
    assert split_top(text, tokens) == old_split_top(text, tokens)
    assert top_words(tokens) == old_top_words(tokens)
    assert list(top_level(tokens)) == list(old_depth0(tokens))
    assert next((i for i, t in top_level(tokens) if t.is_word("from")), None) == old_from(tokens)


@given(TEXTS, st.integers(min_value=0, max_value=14))
def test_the_walker_matches_parentheses_as_the_old_walk(text: str, start: int) -> None:
    tokens = tokenize(text)
    assert outcome(lambda: parenthesised(tokens, start)) == outcome(
        lambda: old_parenthesised(tokens, start)
    )
    assert outcome(lambda: default_clause(tokens)) == outcome(lambda: old_default_tokens(tokens))


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("a, (b, c), d", ["a", "(b, c)", "d"]),
        (",, a ,", ["a"]),
        ("a) , b", ["a) , b"]),  # below depth 0 no comma splits, as before
    ],
)
def test_split_top_examples(text: str, items: list[str]) -> None:
    assert [raw for raw, _ in split_top(text, tokenize(text))] == items
