"""A small arithmetic evaluator for lr lambdas written as text: ``"0.95 ** epoch"``,
``"epoch / 5 if epoch < 5 else 0.5 * (1 + math.cos(math.pi * (epoch - 5) / 95))"``.

Its own tokenizer and parser (never ``eval``, ``exec`` or ``compile``): numbers, one variable, ``+ - * / // %
**``, comparisons, ``and``/``or``/``not``, ``a if c else b``, parentheses, and a fixed list of functions and
constants. Results are what the same Python lambda returns, bit for bit (Python's own operators run on Python
numbers). Sizes are bounded: the text, the nesting, and integers (a ``9 ** 9 ** 9`` is refused, not computed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plateau_forensics.schedules.errors import ExpressionError, ScheduleConfigError

MAX_CHARS = 2000
MAX_DEPTH = 40
MAX_INT_BITS = 4096

FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "round": round,
    "cos": math.cos,
    "sin": math.sin,
    "tan": math.tan,
    "acos": math.acos,
    "asin": math.asin,
    "atan": math.atan,
    "cosh": math.cosh,
    "sinh": math.sinh,
    "tanh": math.tanh,
    "exp": math.exp,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
    "fabs": math.fabs,
    "pow": math.pow,
}
#: the functions that exist only as ``math.<name>`` in Python (``abs`` ... ``round`` are builtins)
_BUILTINS = ("abs", "min", "max", "int", "float", "round")
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}

_TOKEN = re.compile(
    r"""
    (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<str>'[^'\\\n]{0,200}'|"[^"\\\n]{0,200}")
  | (?P<op>\*\*|//|==|!=|<=|>=|[-+*/%<>()\[\],=:.])
  | (?P<space>\s+)
""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    """One token: its kind (``num``, ``name``, ``str``, ``op``, ``end``), value and position in the text."""

    kind: str
    value: Any
    pos: int


def tokenize(text: str, what: str = "expression") -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token.

    Raises:
        ExpressionError: a character that no token starts with, or a text over ``MAX_CHARS``.
    """
    if len(text) > MAX_CHARS:
        raise ExpressionError(f"{what} is {len(text)} characters long (the limit is {MAX_CHARS})")
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExpressionError(f"{what} {text!r}: unexpected {text[pos]!r} at column {pos + 1}")
        kind = m.lastgroup
        raw = m.group()
        if kind == "num":
            if len(raw) > 60:
                raise ExpressionError(f"{what} {text!r}: number too long at column {pos + 1}")
            value: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
            out.append(Token("num", value, pos))
        elif kind == "str":
            out.append(Token("str", raw[1:-1], pos))
        elif kind != "space":
            out.append(Token(kind or "op", raw, pos))
        pos = m.end()
    out.append(Token("end", None, len(text)))
    return out


class Parser:
    """Recursive descent over tokens; ``expression()`` builds a tree of tuples, stopping at a token it does
    not use (a ``,`` or ``)`` of an enclosing schedule call)."""

    def __init__(self, tokens: list[Token], text: str, what: str = "expression") -> None:
        self.tokens, self.text, self.what = tokens, text, what
        self.i = 0
        self.depth = 0

    # -- token helpers ----------------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, tok: Token | None = None) -> ExpressionError:
        t = tok or self.tok
        return ExpressionError(f"{self.what} {self.text!r}: {message} at column {t.pos + 1}")

    def accept(self, kind: str, value: Any = None) -> Token | None:
        t = self.tok
        if t.kind == kind and (value is None or t.value == value):
            self.i += 1
            return t
        return None

    def expect(self, kind: str, value: Any = None) -> Token:
        t = self.accept(kind, value)
        if t is None:
            want = repr(value) if value is not None else kind
            got = "the end" if self.tok.kind == "end" else repr(self.tok.value)
            raise self.error(f"expected {want}, found {got}")
        return t

    def _nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH} levels")

    # -- grammar ---------------------------------------------------------------------------------------------
    def expression(self) -> Any:
        self._nest()
        try:
            node = self._or()
            if self.accept("name", "if"):
                cond = self._or()
                self.expect("name", "else")
                return ("if", cond, node, self.expression())
            return node
        finally:
            self.depth -= 1

    def _or(self) -> Any:
        node = self._and()
        while self.accept("name", "or"):
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._not()
        while self.accept("name", "and"):
            node = ("and", node, self._not())
        return node

    def _not(self) -> Any:
        if self.accept("name", "not"):
            self._nest()
            try:
                return ("not", self._not())
            finally:
                self.depth -= 1
        return self._comparison()

    def _comparison(self) -> Any:
        first = self._arith()
        ops, operands = [], [first]
        while self.tok.kind == "op" and self.tok.value in ("<", "<=", ">", ">=", "==", "!="):
            ops.append(self.tok.value)
            self.i += 1
            operands.append(self._arith())
        return ("cmp", tuple(ops), tuple(operands)) if ops else first

    def _arith(self) -> Any:
        node = self._term()
        while self.tok.kind == "op" and self.tok.value in ("+", "-"):
            op = self.tok.value
            self.i += 1
            node = ("bin", op, node, self._term())
        return node

    def _term(self) -> Any:
        node = self._factor()
        while self.tok.kind == "op" and self.tok.value in ("*", "/", "//", "%"):
            op = self.tok.value
            self.i += 1
            node = ("bin", op, node, self._factor())
        return node

    def _factor(self) -> Any:
        if self.tok.kind == "op" and self.tok.value in ("+", "-"):
            op = self.tok.value
            self.i += 1
            self._nest()
            try:
                return ("neg" if op == "-" else "pos", self._factor())
            finally:
                self.depth -= 1
        return self._power()

    def _power(self) -> Any:
        base = self._primary()
        if self.accept("op", "**"):
            self._nest()
            try:
                return ("bin", "**", base, self._factor())
            finally:
                self.depth -= 1
        return base

    def _primary(self) -> Any:
        t = self.tok
        if self.accept("num"):
            return ("num", t.value)
        if self.accept("op", "("):
            node = self.expression()
            self.expect("op", ")")
            return node
        if t.kind == "name" and t.value not in ("if", "else", "and", "or", "not", "lambda"):
            self.i += 1
            name = t.value
            if name == "math":
                self.expect("op", ".")
                attr = self.expect("name")
                name = attr.value
                if name not in CONSTANTS and (name not in FUNCTIONS or name in _BUILTINS):
                    raise self.error(
                        f"math.{name} is not one of the allowed functions "
                        f"({', '.join(sorted(set(FUNCTIONS) - set(_BUILTINS)))}) or constants "
                        f"({', '.join(CONSTANTS)})",
                        attr,
                    )
            if self.accept("op", "("):
                if name not in FUNCTIONS:
                    raise self.error(
                        f"{name}() is not an allowed function ({', '.join(sorted(FUNCTIONS))})", t
                    )
                args = []
                if not self.accept("op", ")"):
                    while True:
                        args.append(self.expression())
                        if self.accept("op", ")"):
                            break
                        self.expect("op", ",")
                return ("call", name, tuple(args))
            if name in CONSTANTS:
                return ("const", CONSTANTS[name])
            return ("name", name, t.pos)
        got = "the end" if t.kind == "end" else repr(t.value)
        raise self.error(f"expected a number, a name or '(', found {got}")


def _check_int(x: Any, where: str) -> Any:
    if isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"{where}: an integer over {MAX_INT_BITS} bits")
    return x


def _power(a: Any, b: Any, where: str) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        if (abs(a).bit_length() - 1) * b > MAX_INT_BITS:
            raise ExpressionError(
                f"{where}: {a} ** {b} is too large (integers are limited to {MAX_INT_BITS} bits)"
            )
    return _check_int(a**b, where)


def _binary(op: str, a: Any, b: Any, where: str) -> Any:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
            raise ExpressionError(f"{where}: a product over {MAX_INT_BITS} bits")
        return a * b
    if op == "/":
        return a / b
    if op == "//":
        return a // b
    if op == "%":
        return a % b
    return _power(a, b, where)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class Expression:
    """A parsed expression of one variable, callable like the lambda it stands for.

    Errors Python itself raises while evaluating (``ZeroDivisionError``, ``OverflowError``, a math domain
    error) propagate as they would from the lambda; refusals of the evaluator are ``ExpressionError``.

    Example:
        >>> Expression("0.95 ** epoch")(2)
        0.9025
    """

    def __init__(self, source: str, variable: str = "epoch") -> None:
        self.source = source
        self.variable = variable
        what = "expression"
        parser = Parser(tokenize(source, what), source, what)
        self.tree = parser.expression()
        if parser.tok.kind != "end":
            raise parser.error(f"unexpected {parser.tok.value!r}")
        self._check_names(self.tree)

    @classmethod
    def from_tree(cls, tree: Any, source: str, variable: str) -> Expression:
        """An expression parsed as part of a larger text (a ``lambda epoch: ...`` inside ``--schedule``)."""
        self = cls.__new__(cls)
        self.source, self.variable, self.tree = source, variable, tree
        self._check_names(tree)
        return self

    def _check_names(self, node: Any) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            if n[0] == "name" and n[1] != self.variable:
                raise ExpressionError(
                    f"expression {self.source!r}: unknown name {n[1]!r} at column {n[2] + 1} "
                    f"(the variable is {self.variable!r})"
                )
            stack.extend(c for c in n[1:] if isinstance(c, tuple) and c and isinstance(c[0], str))
            for c in n[1:]:
                if isinstance(c, tuple) and c and isinstance(c[0], tuple):
                    stack.extend(c)

    def __call__(self, value: Any) -> Any:
        return self._eval(self.tree, value)

    def _eval(self, n: Any, v: Any) -> Any:
        kind = n[0]
        if kind == "num" or kind == "const":
            return n[1]
        if kind == "name":
            return v
        if kind == "bin":
            return _binary(n[1], self._eval(n[2], v), self._eval(n[3], v), f"expression {self.source!r}")
        if kind == "neg":
            return -self._eval(n[1], v)
        if kind == "pos":
            return +self._eval(n[1], v)
        if kind == "call":
            args = [self._eval(a, v) for a in n[2]]
            if n[1] in ("min", "max") and len(args) < 2:
                raise ExpressionError(f"expression {self.source!r}: {n[1]}() needs at least two arguments")
            return _check_int(FUNCTIONS[n[1]](*args), f"expression {self.source!r}")
        if kind == "cmp":
            left = self._eval(n[2][0], v)
            for op, operand in zip(n[1], n[2][1:], strict=True):
                right = self._eval(operand, v)
                if not _COMPARE[op](left, right):
                    return False
                left = right
            return True
        if kind == "and":
            a = self._eval(n[1], v)
            return self._eval(n[2], v) if a else a
        if kind == "or":
            a = self._eval(n[1], v)
            return a if a else self._eval(n[2], v)
        if kind == "not":
            return not self._eval(n[1], v)
        cond = self._eval(n[1], v)  # "if"
        return self._eval(n[2], v) if cond else self._eval(n[3], v)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def as_callable(fn: Any, variable: str = "epoch") -> Any:
    """A callable as it is; a string as an ``Expression`` of ``variable``.

    Raises:
        ScheduleConfigError: neither (torch fails on it at the constructor's first step).
        ExpressionError: a string the evaluator refuses.
    """
    if isinstance(fn, str):
        return Expression(fn, variable)
    if callable(fn):
        return fn
    raise ScheduleConfigError(
        f"expected a function or an expression string, got {type(fn).__name__}", "TypeError"
    )
