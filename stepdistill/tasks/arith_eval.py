"""Safe evaluation of arithmetic answers such as "( 84.0 / 2.0 )" or "4 - 2 - 1".

Model output is untrusted text, so it is never handed to Python's eval(). A small tokenizer and a
recursive-descent parser accept exactly: decimal numbers (optionally with an exponent), + - * /,
parentheses and unary minus/plus. Anything else (names, commas, "=", "**") is not evaluable.

Grammar:
    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("-" | "+") unary | atom
    atom   := NUMBER | "(" expr ")"
"""

from __future__ import annotations

import math
import re

# Bounds that keep evaluation cheap on adversarial input: teacher and student answers are short, so a
# longer string or deeper nesting is garbage, not arithmetic.
MAX_CHARS = 1000
MAX_DEPTH = 64

_TOKEN = re.compile(r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<op>[-+*/()]))", re.ASCII)


class ArithError(ValueError):
    """The text is not an arithmetic expression this evaluator accepts, or its value is undefined."""


def tokenize(text: str) -> list[str]:
    """Split `text` into number and operator tokens; any other character raises ArithError."""
    if len(text) > MAX_CHARS:
        raise ArithError(f"expression longer than {MAX_CHARS} characters")
    tokens: list[str] = []
    pos = 0
    end = len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ArithError(f"unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
        tokens.append(m.group("num") or m.group("op"))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ArithError("unexpected end of expression")
        self.i += 1
        return tok

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> float:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.unary()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise ArithError("division by zero")
            else:
                value = value / rhs
        return value

    def unary(self) -> float:
        # Depth counts unary signs as well as parentheses: "-(-(-(..." must not exhaust the stack.
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ArithError(f"expression nested deeper than {MAX_DEPTH}")
        if self.peek() in ("-", "+"):
            sign = -1.0 if self.take() == "-" else 1.0
            value = sign * self.unary()
        else:
            value = self.atom()
        self.depth -= 1
        return value

    def atom(self) -> float:
        tok = self.take()
        if tok == "(":
            value = self.expr()
            if self.take() != ")":
                raise ArithError("expected ')'")
            return value
        if tok in "+-*/)":
            raise ArithError(f"unexpected {tok!r}")
        value = float(tok)
        if not math.isfinite(value):  # "1e999" overflows to inf
            raise ArithError(f"number {tok} is out of range")
        return value


def evaluate(text: str) -> float:
    """The value of an arithmetic expression; raises ArithError when it is not one or is not finite."""
    tokens = tokenize(text)
    if not tokens:
        raise ArithError("empty expression")
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.peek() is not None:
        raise ArithError(f"unexpected {parser.peek()!r} after a complete expression")
    if not math.isfinite(value):
        raise ArithError("value is not finite")
    return value


def try_evaluate(text: str | None) -> float | None:
    """Like evaluate() but returns None for anything that is not evaluable."""
    if text is None:
        return None
    try:
        return evaluate(text)
    except ArithError:
        return None


def same_value(a: float | None, b: float | None, rel_tol: float = 1e-6, abs_tol: float = 1e-4) -> bool:
    """Whether two evaluated answers agree; None (not evaluable) never agrees with anything.

    The tolerance absorbs float rounding ("10 / 3 * 3" vs "10") without accepting answers that a
    person would call different (3.33 vs 10/3 differ by 3e-3 and do not match).
    """
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
