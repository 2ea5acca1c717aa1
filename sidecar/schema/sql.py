"""SQL text: the tokenizer, the one parenthesis walker, and the statements of a file.

Texts are compared token by token (quoting, case and spacing do not matter), and every walk
over nesting goes through :func:`depths`. See docs/design.md, 'SQL text, token by token'.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from sidecar.sqlite import quote_ident

_COMMENT = r"--[^\n]*|/\*.*?(?:\*/|\Z)"  # an unclosed block comment runs to the end
_TOKEN = re.compile(
    rf"""
    (?P<ws>[ \t\n\r\f]+)
   |(?P<comment>{_COMMENT})
   |(?P<blob>[xX]'[^']*')
   |(?P<string>'(?:[^']|'')*'?)
   |(?P<ident>"(?:[^"]|"")*"?|`(?:[^`]|``)*`?|\[[^\]]*\]?)
   |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
   |(?P<word>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*)
   |(?P<op>\|\||<<|>>|<=|>=|==|!=|<>|->>|->|.)
    """,
    re.VERBOSE | re.DOTALL,
)
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NAMES = ("word", "ident")


def fold(name: str) -> str:
    """SQLite's identifier comparison: ASCII letters case-insensitive, everything else exact."""
    return name.translate(_ASCII_FOLD)


def quoted(*names: str) -> str:
    """``"a"."b"``: names quoted for SQL and for messages."""
    return ".".join(quote_ident(n) for n in names)


class Token(NamedTuple):
    kind: str
    text: str
    start: int
    end: int

    @property
    def value(self) -> str:
        """An identifier without its quotes (``"a""b"`` -> ``a"b``); other tokens as written."""
        if self.kind == "ident":
            body = self.text[1:-1]
            quote = self.text[0]
            return body if quote == "[" else body.replace(quote * 2, quote)
        return self.text

    @property
    def norm(self) -> str:
        """What matters for comparison: names folded and unquoted, literals exact."""
        if self.kind in _NAMES:
            return fold(self.value)
        return self.text

    @property
    def is_name(self) -> bool:
        """A bare word or a quoted identifier."""
        return self.kind in _NAMES

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and fold(self.text) in words


def iter_tokens(sql: str) -> Iterator[Token]:
    """Meaningful tokens of ``sql`` (whitespace and comments left out), lazily."""
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "op"
        if kind not in ("ws", "comment"):
            yield Token(kind, match.group(), match.start(), match.end())


def tokenize(sql: str) -> list[Token]:
    """Meaningful tokens of ``sql``: whitespace and comments left out."""
    return list(iter_tokens(sql))


@functools.lru_cache(maxsize=65536)
def tokens_of(sql: str) -> tuple[Token, ...]:
    """:func:`tokenize`, cached: the same definitions are read by several rules per plan."""
    return tuple(iter_tokens(sql))


def shape(sql: str, skip: int = 0) -> tuple[str, ...]:
    """The normalised tokens of ``sql`` after the first ``skip``: equal shapes, equal SQL."""
    return tuple(token.norm for token in tokens_of(sql)[skip:])


# --------------------------------------------------------------------------- the walker


def depths(tokens: Sequence[Token], start: int = 0) -> Iterator[tuple[int, int, Token]]:
    """(index, depth, token) from ``start``: the parentheses open after the token."""
    depth = 0
    for i in range(start, len(tokens)):
        token = tokens[i]
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        yield i, depth, token


def top_level(tokens: Sequence[Token]) -> Iterator[tuple[int, Token]]:
    """(index, token) of the tokens outside parentheses, the parentheses left out."""
    for i, depth, token in depths(tokens):
        if depth == 0 and token.text not in ("(", ")"):
            yield i, token


def parenthesised(tokens: Sequence[Token], start: int) -> tuple[int, int]:
    """Index of the first ``(`` at or after ``start`` and of its matching ``)``.

    Raises StopIteration without a ``(``, ValueError when it is never closed."""
    opening = next(i for i in range(start, len(tokens)) if tokens[i].text == "(")
    for i, depth, token in depths(tokens, opening):
        if depth == 0 and token.text == ")":
            return opening, i
    raise ValueError("unbalanced parentheses")


def split_top(sql: str, tokens: Sequence[Token]) -> list[tuple[str, list[Token]]]:
    """Split tokens at commas outside parentheses: [(raw text, tokens)] per non-empty item."""
    commas = [i for i, token in top_level(tokens) if token.text == ","]
    items = []
    for begin, end in zip([-1, *commas], [*commas, len(tokens)], strict=True):
        item = list(tokens[begin + 1 : end])
        if item:
            items.append((sql[item[0].start : item[-1].end], item))
    return items


def top_words(tokens: Sequence[Token]) -> list[str]:
    """Bare words outside parentheses, folded: the keywords of a column definition."""
    return [fold(token.text) for _, token in top_level(tokens) if token.kind == "word"]


def names_in(tokens: Sequence[Token]) -> list[str]:
    """The names among ``tokens``, normalised."""
    return [token.norm for token in tokens if token.is_name]


# --------------------------------------------------------------------------- statements

_LEADING = re.compile(rf"(?:\s+|{_COMMENT})*", re.DOTALL)  # before a statement


def split_statements(text: str) -> list[tuple[int, str]]:
    """(line number, statement) pairs, split where ``sqlite3.complete_statement`` agrees.

    A trailing incomplete statement is returned as is. See docs/design.md, 'Splitting
    statements'."""
    statements: list[tuple[int, str]] = []
    pos, line, counted = 0, 1, 0
    while True:
        leading = _LEADING.match(text, pos)
        begin = leading.end() if leading else pos  # it always matches, if only emptily
        if begin >= len(text):
            return statements
        if text[begin] == ";":  # an empty statement
            pos = begin + 1
            continue
        line += text.count("\n", counted, begin)
        counted = begin
        end = text.find(";", begin)
        while end != -1 and not sqlite3.complete_statement(text[begin : end + 1]):
            end = text.find(";", end + 1)
        if end == -1:
            statements.append((line, text[begin:].strip()))
            return statements
        statements.append((line, text[begin : end + 1]))
        pos = end + 1
