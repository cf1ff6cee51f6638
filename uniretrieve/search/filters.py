"""`--where`: a small, safe filter language over id-map columns and JSON metadata keys, compiled to pyarrow compute.

Grammar (keywords case-insensitive; SQL semantics: a comparison with a null is false):

    expr     := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | "(" expr ")" | test
    test     := operand ("=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") operand
              | operand ["not"] "like" STRING            -- % any run, _ one character
              | operand ["not"] "in" "(" literal ("," literal)* ")"
              | operand "is" ["not"] "null"
    operand  := column | literal;  column := NAME ("." NAME)*  -- metadata.KEY reads a key of the JSON column
    literal  := 'string' | "string" | number | true | false

Nothing is ever evaluated as Python: the text is tokenised and parsed into pyarrow expressions.
Examples: `modality = 'image' and width > 100`, `width > 512 and source like '%/2024/%'`, `metadata.year >= 2020`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uniretrieve.embed.schema import ID, OPTIONAL_COLUMNS

# Id-map columns a filter may name directly (the JSON `metadata` column only through `metadata.KEY`).
FILTER_COLUMNS = (ID, *(c for c in OPTIONAL_COLUMNS if c != "metadata"), "shard", "row")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<str>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")"
    r"|(?P<op><=|>=|<>|!=|==|=|<|>|\(|\)|,)|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*))"
)
_KEYWORDS = {"and", "or", "not", "like", "in", "is", "null", "true", "false"}


class FilterError(ValueError):
    """A --where expression that cannot be parsed or names an unknown column; the message points at the spot."""


@dataclass(frozen=True)
class Tok:
    kind: str  # num | str | op | name | kw | end
    value: Any
    pos: int


def tokenize(text: str) -> list[Tok]:
    toks, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"cannot read --where at position {pos}: {text[pos : pos + 20]!r}")
        start = m.start(m.lastgroup)
        kind, raw = m.lastgroup, m.group(m.lastgroup)
        if kind == "num":
            toks.append(Tok("num", float(raw) if any(c in raw for c in ".eE") else int(raw), start))
        elif kind == "str":
            q = raw[0]
            toks.append(Tok("str", raw[1:-1].replace(q + q, q), start))
        elif kind == "name" and raw.lower() in _KEYWORDS:
            toks.append(Tok("kw", raw.lower(), start))
        else:
            toks.append(Tok(kind, raw, start))
        pos = m.end()
    toks.append(Tok("end", None, len(text)))
    return toks


MAX_NESTING = 100


class _Parser:
    """Recursive descent over the tokens; builds pyarrow expressions and records the columns used."""

    def __init__(self, text: str, resolve: Callable[[str, int], pc.Expression]) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.resolve = resolve
        self.depth = 0

    def peek(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def accept(self, kind: str, value: Any = None) -> bool:
        t = self.peek()
        if t.kind == kind and (value is None or t.value == value):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, value: Any = None, what: str = "") -> Tok:
        t = self.peek()
        if t.kind != kind or (value is not None and t.value != value):
            self.fail(t, f"expected {what or value or kind}")
        return self.take()

    def fail(self, t: Tok, msg: str) -> None:
        got = "the end" if t.kind == "end" else repr(self.text[t.pos : t.pos + 20])
        raise FilterError(f"--where {self.text!r}: {msg} at position {t.pos}, found {got}")

    def parse(self) -> pc.Expression:
        e = self.expr()
        if self.peek().kind != "end":
            self.fail(self.peek(), "expected 'and', 'or' or the end")
        return e

    def expr(self) -> pc.Expression:
        e = self.and_expr()
        while self.accept("kw", "or"):
            e = pc.or_kleene(e, self.and_expr())
        return e

    def and_expr(self) -> pc.Expression:
        e = self.not_expr()
        while self.accept("kw", "and"):
            e = pc.and_kleene(e, self.not_expr())
        return e

    def not_expr(self) -> pc.Expression:
        t = self.peek()
        if (t.kind, t.value) not in (("kw", "not"), ("op", "(")):
            return self.test()
        # nesting is the only recursion: bounded, so a hostile filter is an error, not a RecursionError
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail(t, f"more than {MAX_NESTING} nested parentheses or 'not's")
        try:
            if self.accept("kw", "not"):
                return pc.invert(self.not_expr())
            self.take()
            e = self.expr()
            self.expect("op", ")", "')'")
            return e
        finally:
            self.depth -= 1

    def operand(self) -> tuple[pc.Expression, Any, bool]:
        """(expression, literal value or None, is_column)."""
        t = self.take()
        if t.kind == "name":
            return self.resolve(t.value, t.pos), None, True
        if t.kind in ("num", "str"):
            return pc.scalar(t.value), t.value, False
        if t.kind == "kw" and t.value in ("true", "false"):
            return pc.scalar(t.value == "true"), t.value == "true", False
        self.fail(t, "expected a column name or a value")
        raise AssertionError  # unreachable

    def literal(self) -> Any:
        t = self.take()
        if t.kind in ("num", "str"):
            return t.value
        if t.kind == "kw" and t.value in ("true", "false"):
            return t.value == "true"
        self.fail(t, "expected a value")
        return None

    def test(self) -> pc.Expression:
        left, _, _ = self.operand()
        t = self.peek()
        if t.kind == "kw" and t.value == "is":
            self.take()
            negate = self.accept("kw", "not")
            self.expect("kw", "null", "'null'")
            return pc.invert(pc.is_null(left)) if negate else pc.is_null(left)
        negate = self.accept("kw", "not")
        t = self.peek()
        if t.kind == "kw" and t.value == "like":
            self.take()
            pat = self.expect("str", what="a quoted pattern").value
            e = pc.match_like(left, pat)
            return pc.invert(e) if negate else e
        if t.kind == "kw" and t.value == "in":
            self.take()
            self.expect("op", "(", "'('")
            values = [self.literal()]
            while self.accept("op", ","):
                values.append(self.literal())
            self.expect("op", ")", "')'")
            # null rows stay null (→ excluded) rather than matching, as in SQL
            e = pc.if_else(
                pc.is_valid(left),
                pc.is_in(left, value_set=pa.array(values)),
                pc.scalar(pa.scalar(None, pa.bool_())),
            )
            return pc.invert(e) if negate else e
        if negate:
            self.fail(t, "expected 'like' or 'in' after 'not'")
        op = self.expect("op", what="a comparison (=, !=, <, <=, >, >=, like, in, is null)")
        if op.value not in ("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            self.fail(op, "expected a comparison")
        right, _, _ = self.operand()
        return {
            "=": pc.equal,
            "==": pc.equal,
            "!=": pc.not_equal,
            "<>": pc.not_equal,
            "<": pc.less,
            "<=": pc.less_equal,
            ">": pc.greater,
            ">=": pc.greater_equal,
        }[op.value](left, right)


def metadata_column(json_column: pa.ChunkedArray | pa.Array, key: str) -> pa.Array:
    """One key of the JSON `metadata` column as an Arrow array (numbers, strings or booleans; null when absent).

    Parsed row by row once per key (the column is user JSON, not a typed Arrow column); mixed types become strings.
    """
    values: list[Any] = []
    for raw in json_column.to_pylist():
        v = None
        if raw:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                obj = None
            for part in key.split("."):
                obj = obj.get(part) if isinstance(obj, dict) else None
            v = (
                obj
                if isinstance(obj, str | int | float | bool)
                else (None if obj is None else json.dumps(obj))
            )
        values.append(v)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


class WhereFilter:
    """A parsed --where expression, applied to an id-map table (or any table with the named columns)."""

    def __init__(self, text: str, columns: list[str]) -> None:
        self.text = text
        self.metadata_keys: list[str] = []

        def resolve(name: str, pos: int) -> pc.Expression:
            head, _, rest = name.partition(".")
            if head in ("metadata", "meta") and rest:
                if "metadata" not in columns:
                    raise FilterError(f"--where {text!r}: this index has no metadata column")
                self.metadata_keys.append(rest)
                return pc.field(f"metadata.{rest}")
            if name not in columns:
                raise FilterError(
                    f"--where {text!r}: unknown column {name!r} at position {pos}; columns are "
                    f"{', '.join(c for c in columns if c != 'metadata')} and metadata.KEY"
                )
            return pc.field(name)

        self.expression = _Parser(text, resolve).parse()

    def mask(self, table: pa.Table) -> np.ndarray:
        """Boolean numpy mask over the rows of `table`: True where the expression is true (null counts as false)."""
        work = table
        for key in dict.fromkeys(self.metadata_keys):
            work = work.append_column(f"metadata.{key}", metadata_column(table.column("metadata"), key))
        work = work.append_column("__row", pa.array(np.arange(len(table), dtype=np.int64)))
        try:
            rows = work.filter(self.expression).column("__row").to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise FilterError(f"--where {self.text!r} cannot be applied: {exc}") from exc
        out = np.zeros(len(table), dtype=bool)
        out[rows] = True
        return out
