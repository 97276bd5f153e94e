"""The ``--where`` filter language: one small tokenizer and recursive-descent parser, compiled to SQL.

    accuracy > 0.9 and lr <= 0.01 and model glob 'resnet*' and tag.owner = 'alice' and status != failed

Grammar (``and`` binds tighter than ``or``; ``not`` tighter than both)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := FIELD OP value | FIELD "in" "(" value ("," value)* ")"
    OP         := = | != | < | <= | > | >= | glob

A FIELD is a run column (model, status, name, id, created, ...), ``tag.KEY``, ``param.KEY`` or ``metric.KEY``, or
a bare name: a test metric by its key or short name (accuracy, f1, test_f1/cat), else a recorded param (lr). A
value is a number, a quoted string, or a bare word (failed, resnet18). A comparison on a key a run lacks is false
for that run. Everything compiles to bound parameters (never text pasted into SQL); the metric comparisons use
the (key, value) index of the metrics table. Errors are one line naming the column of the offending token.
Imports no torch and no sqlalchemy.orm.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Union

from sqlalchemy import Connection, Float, and_, case, cast, exists, func, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from zoo.errors import ZooError
from zoo.store import tables
from zoo.store.queries import METRIC_ALIASES  # what a bare metric name means, as in compare --metric
from zoo.vocab import CLASS_SEPARATOR, TEST

r, m, p, t = tables.runs, tables.metrics, tables.params, tables.tags

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "glob", "in")
KEYWORDS = ("and", "or", "not", "in", "glob")
# Run columns a filter may name, and friendlier names for some.
COLUMN_ALIASES = {"dataset": "dataset_path", "run": "id"}
HIDDEN_COLUMNS = {"classes", "confusion", "deleted_at"}  # JSON, or handled by --deleted
NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/:*?\[\]]*|[0-9][A-Za-z0-9_.\-/:*?+]*")
SYMBOLS = ("!=", "<=", ">=", "==", "=", "<", ">", "(", ")", ",")
MAX_LENGTH = 2000  # characters; a filter is typed by hand or in a URL
MAX_TERMS = 100  # comparisons in one filter
MAX_DEPTH = 20  # nested parentheses and nots


class WhereError(ZooError):
    """A filter that does not parse or names nothing known: one line with the column of the bad token."""

    def __init__(self, text: str, position: int, problem: str):
        self.position = position
        start = max(0, position - 60)
        shown = ("..." if start else "") + text[start:position] + "^" + text[position:position + 60]
        super().__init__(f"Bad --where at column {position + 1} (^): {problem}. In: {shown.rstrip()}")


# ----------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Token:
    kind: str  # word | number | string | op | "(" | ")" | "," | end
    text: str  # the token as written (for strings: the value, quotes removed)
    position: int  # 0-based column in the filter

    @property
    def keyword(self) -> Optional[str]:
        return self.text.lower() if self.kind == "word" and self.text.lower() in KEYWORDS else None


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_LENGTH:
        raise WhereError(text, MAX_LENGTH, f"a filter is at most {MAX_LENGTH} characters")
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "'\"":
            end = i + 1
            chars = []
            while end < len(text):
                if text[end] == ch and text[end + 1:end + 2] == ch:  # 'it''s', as in SQL
                    end += 1
                elif text[end] == ch:
                    break
                elif text[end] == "\\" and end + 1 < len(text):  # \' or \\ inside a string
                    end += 1
                chars.append(text[end])
                end += 1
            if end >= len(text):
                raise WhereError(text, i, f"string not closed: add the closing {ch}")
            tokens.append(Token("string", "".join(chars), i))
            i = end + 1
            continue
        symbol = next((s for s in SYMBOLS if text.startswith(s, i)), None)
        if symbol is not None:
            kind = symbol if symbol in ("(", ")", ",") else "op"
            tokens.append(Token(kind, "=" if symbol == "==" else symbol, i))
            i += len(symbol)
            continue
        match = NUMBER.match(text, i) if (ch.isdigit() or ch in ".-") else None
        if match and not _word_continues(text, match.end()):
            tokens.append(Token("number", match.group(), i))
            i = match.end()
            continue
        match = WORD.match(text, i)
        if match is None:
            raise WhereError(text, i, f"unexpected character {ch!r}: quote values that contain it ('...')")
        tokens.append(Token("word", match.group(), i))
        i = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _word_continues(text: str, end: int) -> bool:
    """Whether a number is only the start of a bare word (3d, 2026-01-01, 1e-3x)."""
    return end < len(text) and (text[end].isalnum() or text[end] in "_.-/:")


# ----------------------------------------------------------------------------- syntax tree
@dataclass(frozen=True)
class Compare:
    field: Token
    op: Token
    values: tuple[Token, ...]  # one, or several for `in`


@dataclass(frozen=True)
class Not:
    operand: "Node"


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    operands: tuple["Node", ...]


Node = Union[Compare, Not, BoolOp]


class Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.terms = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def error(self, problem: str, token: Optional[Token] = None) -> WhereError:
        return WhereError(self.text, (token or self.token).position, problem)

    def take(self) -> Token:
        token = self.token
        self.index += 1
        return token

    def found(self) -> str:
        token = self.token
        return "the end of the filter" if token.kind == "end" else repr(token.text)

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise self.error("the filter is empty: write a condition such as accuracy > 0.9")
        node = self.expr()
        if self.token.kind != "end":
            if self.token.kind == ")":
                raise self.error("')' without a matching '('")
            raise self.error(f"expected 'and', 'or' or the end of the filter, found {self.found()}")
        return node

    def expr(self) -> Node:
        operands = [self.and_expr()]
        while self.token.keyword == "or":
            self.take()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def and_expr(self) -> Node:
        operands = [self.not_expr()]
        while self.token.keyword == "and":
            self.take()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def not_expr(self) -> Node:
        if self.token.keyword == "not" or self.token.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:  # SQLite's expression depth (and Python's stack) are limited
                raise self.error(f"at most {MAX_DEPTH} nested 'not' or parentheses")
            try:
                return self.nested()
            finally:
                self.depth -= 1
        return self.comparison()

    def nested(self) -> Node:
        if self.token.keyword == "not":
            self.take()
            return Not(self.not_expr())
        if self.token.kind == "(":
            opening = self.take()
            node = self.expr()
            if self.token.kind != ")":
                raise self.error(f"'(' at column {opening.position + 1} is not closed: expected ')', "
                                 f"found {self.found()}")
            self.take()
            return node
        raise AssertionError("nested() is called on 'not' or '(' only")

    def comparison(self) -> Compare:
        field = self.token
        if field.kind != "word" or field.keyword:
            raise self.error(f"expected a field (accuracy, lr, model, tag.KEY...), found {self.found()}")
        self.take()
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.error(f"at most {MAX_TERMS} comparisons in one filter", field)
        op = self.token
        if op.kind == "op" or op.keyword in ("glob", "in"):
            self.take()
        elif op.keyword == "not" and self.tokens[self.index + 1].keyword == "in":
            self.take()
            op = Token("op", "not in", op.position)
            self.take()
        else:
            raise self.error(f"expected an operator ({', '.join(OPERATORS)}) after {field.text!r}, "
                             f"found {self.found()}")
        name = op.text.lower()
        if name.endswith("in"):
            if self.token.kind != "(":
                raise self.error(f"expected '(' after '{name}': {field.text} {name} (a, b, c)")
            self.take()
            values = [self.value(name)]
            while self.token.kind == ",":
                self.take()
                values.append(self.value(name))
            if self.token.kind != ")":
                raise self.error(f"expected ',' or ')' in the list after '{name}', found {self.found()}")
            self.take()
            return Compare(field, Token("op", name, op.position), tuple(values))
        return Compare(field, Token("op", name, op.position), (self.value(name),))

    def value(self, after: str) -> Token:
        token = self.token
        if token.kind in ("number", "string") or (token.kind == "word" and not token.keyword):
            self.take()
            return token
        raise self.error(f"expected a value after '{after}', found {self.found()}")


def parse(text: str) -> Node:
    """The syntax tree of a filter, or a WhereError pointing at the offending token."""
    return Parser(text).parse()


# ----------------------------------------------------------------------------- compiling to SQL
@dataclass(frozen=True)
class Field:
    kind: str  # column | metric | param | tag
    key: str  # column name, metric key, param key, tag key


class Compiler:
    """Turns a syntax tree into one SQLAlchemy clause over ``runs``; names are resolved against the registry."""

    def __init__(self, conn: Connection, text: str):
        self.conn = conn
        self.text = text
        self._known: dict[tuple[str, str], bool] = {}

    def error(self, token: Token, problem: str) -> WhereError:
        return WhereError(self.text, token.position, problem)

    def recorded(self, table: Any, key: str) -> bool:
        """Whether any run has this metric or param key (one index lookup, remembered)."""
        found = self._known.get((table.name, key))
        if found is None:
            found = self.conn.scalar(select(table.c.key).where(table.c.key == key).limit(1)) is not None
            self._known[(table.name, key)] = found
        return found

    def compile(self, node: Node) -> ColumnElement:
        if isinstance(node, BoolOp):
            parts = [self.compile(each) for each in node.operands]
            return and_(*parts) if node.op == "and" else or_(*parts)
        if isinstance(node, Not):
            return not_(self.compile(node.operand))
        return self.comparison(node)

    # -- names
    def field(self, token: Token) -> Field:
        name = token.text
        prefix, dot, rest = name.partition(".")
        if dot and prefix.lower() in ("tag", "tags", "param", "params", "metric", "metrics"):
            if not rest:
                raise self.error(token, f"'{name}' names no key: write {prefix}.KEY")
            kind = prefix.lower().rstrip("s")
            if kind == "metric":
                return Field("metric", self.metric_key(rest))
            return Field(kind, rest)
        column = COLUMN_ALIASES.get(name.lower(), name.lower())
        if column in tables.RUN_COLUMNS and column not in HIDDEN_COLUMNS:
            return Field("column", column)
        key = self.metric_key(name)
        if self.recorded(m, key) or name.startswith(TEST) or CLASS_SEPARATOR in name or name.lower() in METRIC_ALIASES:
            return Field("metric", key)
        for candidate in dict.fromkeys((name, name.replace("-", "_"))):
            if self.recorded(p, candidate):
                return Field("param", candidate)
        raise self.error(token, f"unknown field '{name}': not a run column, a recorded test metric or param"
                         f"{self.close_to(name)}. Use a metric (accuracy, f1, test_f1/CLASS), a param (lr), a "
                         f"column (model, status, created...), tag.KEY or param.KEY")

    def close_to(self, name: str) -> str:
        """'; did you mean accuracy?' from the names a filter may use here (read only on this error path)."""
        import difflib

        names = set(METRIC_ALIASES) | set(tables.RUN_COLUMNS) - HIDDEN_COLUMNS
        names |= set(self.conn.scalars(select(p.c.key).distinct()))
        names |= set(self.conn.scalars(select(m.c.key).distinct()))
        close = difflib.get_close_matches(name, sorted(names), n=3)
        return f" (did you mean {' or '.join(close)}?)" if close else ""

    def metric_key(self, name: str) -> str:
        """The recorded metric key a name means (accuracy -> test_accuracy); the alias or name itself if none."""
        for candidate in dict.fromkeys((name, METRIC_ALIASES.get(name.lower(), ""), TEST + name)):
            if candidate and self.recorded(m, candidate):
                return candidate
        return METRIC_ALIASES.get(name.lower(), name)

    # -- values
    def number(self, token: Token, what: str) -> float:
        if token.kind == "number":
            return float(token.text)
        try:
            return float(token.text)
        except ValueError:
            raise self.error(token, f"{what} compares with a number, not {token.text!r}") from None

    @staticmethod
    def like(pattern: str) -> str:
        """A shell pattern (* ? only) as a LIKE pattern with backslash escapes."""
        out = []
        for ch in pattern:
            out.append("%" if ch == "*" else "_" if ch == "?" else "\\" + ch if ch in "%_\\" else ch)
        return "".join(out)

    def glob_clause(self, column: Any, token: Token) -> ColumnElement:
        if any(ch in token.text for ch in "[]"):
            raise self.error(token, "glob patterns take * and ? only (no [...] sets)")
        return func.lower(column).like(self.like(token.text.lower()), escape="\\")

    # -- comparisons
    def comparison(self, node: Compare) -> ColumnElement:
        field = self.field(node.field)
        if field.kind == "column":
            return self.column_clause(field.key, node)
        # an alias of its own, so the subquery correlates with runs only (a query may join metrics to sort)
        table = {"metric": m, "tag": t, "param": p}[field.kind].alias()
        if field.kind == "metric":
            condition = self.numeric_clause(table.c.value, node, f"metric {field.key}")
        else:
            condition = self.text_clause(table.c.value, node, json_text=field.kind == "param")
        return exists().where(table.c.run_id == r.c.id, table.c.key == field.key, condition)

    def apply(self, column: Any, op: str, values: list[Any]) -> ColumnElement:
        if op == "in":
            return column.in_(values)
        if op == "not in":
            return column.not_in(values)
        value = values[0]
        return {"=": column == value, "!=": column != value, "<": column < value, "<=": column <= value,
                ">": column > value, ">=": column >= value}[op]

    def numeric_clause(self, column: Any, node: Compare, what: str) -> ColumnElement:
        op = node.op.text
        if op == "glob":
            raise self.error(node.op, f"{what} is a number: compare it with = != < <= > >= or in, not glob")
        return self.apply(column, op, [self.number(v, what) for v in node.values])

    def text_clause(self, column: Any, node: Compare, *, json_text: bool) -> ColumnElement:
        """A param (JSON text: 0.01, "adamw", true) or a tag (plain text)."""
        op = node.op.text
        if op == "glob":
            clause = self.glob_clause(column, node.values[0])
            if json_text:  # a string param is stored with its quotes
                quoted = Token("string", f'"{node.values[0].text}"', node.values[0].position)
                clause = or_(clause, self.glob_clause(column, quoted))
            return clause
        numbers = [_as_number(v) for v in node.values]
        if op in ("<", "<=", ">", ">="):
            if numbers[0] is None:
                if json_text:
                    raise self.error(node.values[0], f"'{op}' on a param compares numbers, not "
                                     f"{node.values[0].text!r}")
                return self.apply(column, op, [node.values[0].text])
            numeric = cast(case((_looks_numeric(column), column)), Float)
            return and_(_looks_numeric(column), self.apply(numeric, op, numbers))
        spelled: list[str] = []
        for token, number in zip(node.values, numbers):
            spelled += _spellings(token, number, json_text=json_text)
        if op in ("=", "in"):
            return column.in_(spelled)
        return column.not_in(spelled)

    def column_clause(self, name: str, node: Compare) -> ColumnElement:
        column = r.c[name]
        op = node.op.text
        python_type = _python_type(column)
        if python_type is datetime:
            if op == "glob":
                raise self.error(node.op, f"{name} is a time: compare it with = != < <= > >=")
            return self.apply(column, op, [self.when(v, name) for v in node.values])
        if python_type in (int, float):
            return self.numeric_clause(column, node, name)
        if op == "glob":
            return self.glob_clause(column, node.values[0])
        values = [v.text for v in node.values]
        if name == "status":
            values = ["running" if v.lower() == "stale" else v.lower() for v in values]
        return self.apply(column, op, values)

    def when(self, token: Token, name: str) -> datetime:
        """An ISO date/time (local time unless it says) or an age (30m, 2h, 3d, 1w ago) -> naive UTC."""
        text = token.text.strip().lower()
        match = AGE.fullmatch(text)
        if match:
            ago = timedelta(seconds=float(match.group(1)) * AGE_UNITS[match.group(2)])
            return datetime.now(timezone.utc).replace(tzinfo=None) - ago
        try:
            when = datetime.fromisoformat(token.text.strip())
        except ValueError:
            raise self.error(token, f"{name} compares with a date (2026-05-01, '2026-05-01 14:30') or an age "
                             f"(30m, 2h, 3d), not {token.text!r}") from None
        if when.tzinfo is None:
            when = when.astimezone()
        return when.astimezone(timezone.utc).replace(tzinfo=None)


def _python_type(column: Any) -> type:
    try:
        return column.type.python_type
    except NotImplementedError:
        return str


def _as_number(token: Token) -> Optional[float]:
    if token.kind == "string":
        return None
    try:
        return float(token.text)
    except ValueError:
        return None


def _spellings(token: Token, number: Optional[float], *, json_text: bool) -> list[str]:
    """How a value may be stored: a param as JSON (0.01, 1 and 1.0, "adamw", true), a tag as typed."""
    if not json_text:
        return [token.text] if number is None else list(dict.fromkeys([token.text, _number_text(number)]))
    if number is not None:
        spelled = [json.dumps(number), token.text]
        if number == int(number):
            spelled.append(json.dumps(int(number)))
        return list(dict.fromkeys(spelled))
    spelled = [json.dumps(token.text)]
    if token.kind == "word" and token.text.lower() in ("true", "false", "null"):
        spelled.append(token.text.lower())
    return spelled


def _number_text(number: float) -> str:
    return str(int(number)) if number == int(number) else repr(number)


def _looks_numeric(column: Any) -> ColumnElement:
    """Whether stored text starts like a JSON number (so CAST reads it, on SQLite and PostgreSQL alike)."""
    return func.substr(column, 1, 1).in_(list("-0123456789"))


def compile_where(conn: Connection, text: str) -> ColumnElement:
    """One SQLAlchemy clause over ``zoo.store.tables.runs`` for a filter (names resolved in this registry)."""
    text = text or ""
    if not text.strip():
        return true()
    return Compiler(conn, text).compile(parse(text))


def check(text: str) -> None:
    """Parse only (no registry): raise WhereError for a filter that does not parse."""
    if text and text.strip():
        parse(text)

