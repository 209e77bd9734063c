"""`data.filter`'s text -> a tree: the tokenizer and parser of a small row-condition language.

A spec is untrusted, so the filter never reaches pandas `query`/`eval` or Python
`eval`: it is tokenized and parsed here into a tiny tree, and the tree is evaluated
over the frame's columns as numpy arrays. Nothing in the text can name a method, an
attribute, a module or a file: a name is a column, and the only functions are
`is.na(...)` and `c(...)`.

Grammar (lowest precedence first, R's order; Python's spellings accepted too):

    or      := and  (('|' | '||' | 'or')  and)*
    and     := not  (('&' | '&&' | 'and') not)*
    not     := ('!' | 'not' | '~') not | compare
    compare := sum ((== != < <= > >=) sum)*        (a < b < c means a < b and b < c)
             | sum ('%in%' | 'in' | 'not' 'in') list
    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := ('-' | '+') unary | atom
    atom    := number | "string" | 'string' | TRUE | FALSE | column | `odd column`
             | is.na(expr) | '(' or ')'
    list    := c(literal, ...) | [literal, ...]

The tree is evaluated over numpy arrays by `runner.data.filter`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SYNTAX = ("a filter uses column names (`backticks` for odd names), numbers, \"strings\", "
          "comparisons == != < <= > >=, & | ! (or and / or / not), parentheses, "
          "x %in% c(1, 2) or x in [1, 2], is.na(x) / !is.na(x), and arithmetic + - * /")
MAX_DEPTH = 40  # nesting of parentheses and operators; deeper is refused, never a RecursionError

_DIGITS = frozenset("0123456789")
_KEYWORDS = {"and": "&", "or": "|", "not": "!", "in": "in"}
_LITERALS = {"TRUE": True, "True": True, "true": True, "FALSE": False, "False": False, "false": False}
_OPERATORS = ("%in%", "==", "!=", "<=", ">=", "&&", "||", "<", ">", "&", "|", "!", "~", "+", "-", "*", "/",
              "(", ")", "[", "]", ",")
# what people try from Python or R, with what to write instead
_REFUSED = {"**": "powers are not supported in a filter", "^": "powers are not supported in a filter",
            "%%": "%% is not supported", "//": "// is not supported", ">>": ">> is not supported",
            "<<": "<< is not supported", "=": "'=' assigns; compare with '=='", "@": "'@' is not supported",
            "$": "'$' is not supported: name the column alone", ":": "':' is not supported",
            ";": "one condition only: combine conditions with & or |", "{": "braces are not supported",
            "}": "braces are not supported", "#": "comments are not supported", "\\": "'\\' is not supported",
            "?": "'?' is not supported"}
COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge}


class FilterError(ValueError):
    """A filter that cannot be parsed or evaluated; `offset` is the character it concerns."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.message = message
        self.offset = offset


def _position(text: str, offset: int) -> str:
    """1-based line:column of `offset` inside the filter text."""
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{line}:{col}"


# ----------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: str  # "num", "str", "name", "op", "end"
    text: str
    pos: int
    value: Any = None


def _is_name_start(ch: str) -> bool:
    return ch.isalpha() or ch in "_."


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_."


def _number(text: str, i: int) -> tuple[Token, int]:
    j = i
    while j < len(text) and text[j] in _DIGITS:
        j += 1
    if j < len(text) and text[j] == ".":
        j += 1
        while j < len(text) and text[j] in _DIGITS:
            j += 1
    if j < len(text) and text[j] in "eE":
        k = j + 1
        if k < len(text) and text[k] in "+-":
            k += 1
        if k < len(text) and text[k] in _DIGITS:
            j = k
            while j < len(text) and text[j] in _DIGITS:
                j += 1
    raw = text[i:j]
    end = j + 1 if j < len(text) and text[j] == "L" else j  # R's integer suffix
    if end < len(text) and _is_name_char(text[end]):
        raise FilterError(f"invalid number {text[i:end + 1]!r}", i)
    return Token("num", raw, i, float(raw)), end


def _string(text: str, i: int) -> tuple[Token, int]:
    quote = text[i]
    out: list[str] = []
    j = i + 1
    escapes = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}
    while j < len(text):
        ch = text[j]
        if ch == "\\" and j + 1 < len(text):
            out.append(escapes.get(text[j + 1], text[j + 1]))
            j += 2
            continue
        if ch == quote:
            return Token("str", text[i:j + 1], i, "".join(out)), j + 1
        out.append(ch)
        j += 1
    raise FilterError(f"the string starting here has no closing {quote}", i)


def tokenize(text: str) -> list[Token]:
    """The filter's tokens; an unknown character or operator is a FilterError at its place."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _DIGITS or (ch == "." and i + 1 < len(text) and text[i + 1] in _DIGITS):
            tok, i = _number(text, i)
            tokens.append(tok)
            continue
        if ch in "'\"":
            tok, i = _string(text, i)
            tokens.append(tok)
            continue
        if ch == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise FilterError("the `name` starting here has no closing backtick", i)
            tokens.append(Token("name", text[i:end + 1], i, text[i + 1:end]))
            i = end + 1
            continue
        if _is_name_start(ch):
            j = i
            while j < len(text) and _is_name_char(text[j]):
                j += 1
            word = text[i:j]
            if word in _KEYWORDS:
                tokens.append(Token("op", _KEYWORDS[word], i, word))
            elif word in _LITERALS:
                tokens.append(Token("bool", word, i, _LITERALS[word]))
            else:
                tokens.append(Token("name", word, i, word))
            i = j
            continue
        for bad in ("**", "//", ">>", "<<", "%%"):
            if text.startswith(bad, i):
                raise FilterError(f"invalid filter: {_REFUSED[bad]}", i)
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is None:
            if ch == "%":
                end = text.find("%", i + 1)
                shown = text[i:end + 1] if 0 < end - i < 20 else "%"
                raise FilterError(f"invalid filter: {shown} is not supported (only %in%)", i)
            reason = _REFUSED.get(ch, f"character {ch!r} is not allowed")
            raise FilterError(f"invalid filter: {reason}", i)
        tokens.append(Token("op", op, i, op))
        i += len(op)
    tokens.append(Token("end", "", len(text)))
    return tokens


# ----------------------------------------------------------------------------- tree


@dataclass(frozen=True)
class Node:
    kind: str  # col, num, str, bool, list, arith, neg, cmp, in, not, and, or, isna
    pos: int
    value: Any = None  # column name / literal / operator(s)
    args: tuple[Node, ...] = ()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in ops

    def expect(self, op: str, opened: Token | None = None) -> Token:
        if not self.at(op):
            where = f" to close the {opened.text!r} at {_position(self.text, opened.pos)}" if opened else ""
            raise FilterError(f"invalid filter: expected {op!r}{where}, found {self._shown(self.tok)}", self.tok.pos)
        return self.take()

    @staticmethod
    def _shown(tok: Token) -> str:
        return "the end of the filter" if tok.kind == "end" else repr(tok.text)

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise FilterError("the filter is empty: write a condition on rows, e.g. \"age >= 9\"", 0)
        node = self.or_()
        if self.tok.kind != "end":
            tok = self.tok
            hint = ""
            if tok.kind in ("name", "num", "str", "bool"):
                hint = ": combine conditions with & or |"
            raise FilterError(f"invalid filter: unexpected {self._shown(tok)}{hint}", tok.pos)
        return node

    def _chain(self, kind: str, ops: tuple[str, ...], sub: Callable[[], Node]) -> Node:
        """`a op b op c ...` as one node (args a, b, c; value the operators): long chains
        are loops here and in the evaluator, never deep recursion."""
        args = [sub()]
        seen: list[tuple[str, int, str]] = []
        while self.at(*ops):
            tok = self.take()
            seen.append((tok.text, tok.pos, str(tok.value)))
            args.append(sub())
        if not seen:
            return args[0]
        return Node(kind, seen[0][1], tuple(seen), tuple(args))

    def _deeper(self, parse: Callable[[], Node]) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"invalid filter: nested more than {MAX_DEPTH} levels deep", self.tok.pos)
        try:
            return parse()
        finally:
            self.depth -= 1

    def or_(self) -> Node:
        return self._chain("or", ("|", "||"), self.and_)

    def and_(self) -> Node:
        return self._chain("and", ("&", "&&"), self.not_)

    def not_(self) -> Node:
        if self.at("!", "~"):
            tok = self.take()
            return Node("not", tok.pos, tok.value, (self._deeper(self.not_),))
        return self.compare()

    def compare(self) -> Node:
        left = self.sum_()
        if self.at("%in%", "in") or (self.at("!") and self.tokens[self.i + 1].text == "in"
                                        and self.tokens[self.i + 1].kind == "op"):
            negate = self.at("!")
            tok = self.take()
            if negate:
                self.take()
            items = self.list_()
            node = Node("in", tok.pos, tok.value, (left, items))
            return Node("not", tok.pos, "not in", (node,)) if negate else node
        if not self.at(*COMPARISONS):
            return left
        operands, ops = [left], []
        while self.at(*COMPARISONS):
            tok = self.take()
            ops.append((tok.text, tok.pos))
            operands.append(self.sum_())
        return Node("cmp", ops[0][1], tuple(ops), tuple(operands))

    def sum_(self) -> Node:
        return self._chain("arith", ("+", "-"), self.product)

    def product(self) -> Node:
        return self._chain("arith", ("*", "/"), self.unary)

    def unary(self) -> Node:
        if self.at("-", "+"):
            tok = self.take()
            operand = self._deeper(self.unary)
            return operand if tok.text == "+" else Node("neg", tok.pos, "-", (operand,))
        return self.atom()

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind in ("num", "str", "bool"):
            self.take()
            return Node(tok.kind, tok.pos, tok.value)
        if tok.kind == "name":
            self.take()
            if self.at("("):
                return self.call(tok)
            return Node("col", tok.pos, tok.value)
        if self.at("("):
            self.take()
            inner = self._deeper(self.or_)
            self.expect(")", tok)
            return inner
        if self.at("["):
            raise FilterError("invalid filter: a [list] belongs after 'in', e.g. g in ['a', 'b']", tok.pos)
        if tok.kind == "end":
            raise FilterError("invalid filter: the filter ends where a value was expected", tok.pos)
        raise FilterError(f"invalid filter: unexpected {tok.text!r} where a value was expected", tok.pos)

    def call(self, name: Token) -> Node:
        opened = self.take()
        if name.text == "is.na":
            arg = self._deeper(self.or_)
            self.expect(")", opened)
            return Node("isna", name.pos, "is.na", (arg,))
        if name.text == "c":
            raise FilterError("invalid filter: c(...) belongs after %in%, e.g. g %in% c('a', 'b')", name.pos)
        words = {w.lower().replace("_", "") for w in (name.text.replace(".", ""), name.text.rsplit(".", 1)[-1])}
        hint = ("; did you mean is.na(x)?" if words & {"isna", "isnull", "isnan", "missing"} else
                "; did you mean !is.na(x)?" if words & {"notna", "notnull", "notnan"} else "")
        raise FilterError(f"invalid filter: {name.text}(...) is not a function a filter can call "
                          f"(only is.na(x), and c(...) after %in%){hint}", name.pos)

    def list_(self) -> Node:
        tok = self.tok
        if tok.kind == "name" and tok.text == "c" and self.tokens[self.i + 1].text == "(":
            self.take()
            close = ")"
        elif self.at("[", "("):
            close = "]" if tok.text == "[" else ")"
        else:
            raise FilterError(f"invalid filter: expected a list after {self.tokens[self.i - 1].value!r}, "
                              f"e.g. c(1, 2) or [1, 2], found {self._shown(tok)}", tok.pos)
        opened = self.take()
        items: list[Node] = []
        while not self.at(close):
            negative = self.at("-")
            if negative:
                self.take()
            item = self.tok
            if item.kind not in ("num", "str", "bool") or (negative and item.kind != "num"):
                raise FilterError(f"invalid filter: a list holds numbers or strings, found {self._shown(item)}",
                                  item.pos)
            self.take()
            items.append(Node(item.kind, item.pos, -item.value if negative else item.value))
            if not self.at(","):
                break
            self.take()
        self.expect(close, opened)
        return Node("list", tok.pos, None, tuple(items))


def parse_filter(text: str) -> Node:
    """The filter's tree; FilterError (with the offending character's offset) when invalid."""
    if "\x00" in text:
        raise FilterError("the filter contains a NUL character", text.index("\x00"))
    return _Parser(text).parse()
