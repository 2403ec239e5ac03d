"""KFP trigger conditions (the CEL subset the KFP compiler writes) as Argosy conditions.

The compiler writes ``inputs.parameter_values['pipelinechannel--x'] == 'heads'``,
``int(inputs.parameter_values['...']) > 5``, ``== true``, ``!( ... )`` and ``&&`` (If/Elif/Else
branches). Operands name inputs of the condition's own task; each becomes that input's binding
(a parameter, an upstream output or a constant), so the engine evaluates the condition itself.

A cast (``int``, ``double``, ``string``) is accepted where the value already has that type
(the input is declared so): Argosy compares JSON values as they are and does not convert.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from argosy.errors import PipelineDefinitionError
from argosy.spec.models import ConditionSpec, ConstantInput, Operand

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<op>==|!=|<=|>=|<|>|&&|\|\||!|\(|\)|\[|\]|\.)
    |(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_CASTS = {
    "int": ("NUMBER_INTEGER", "NUMBER_DOUBLE"),
    "double": ("NUMBER_INTEGER", "NUMBER_DOUBLE"),
    "string": ("STRING",),
    "bool": ("BOOLEAN",),
}


class ConditionError(PipelineDefinitionError):
    """A trigger condition Argosy cannot express."""


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    at = 0
    text = text.strip()
    while at < len(text):
        m = _TOKEN.match(text, at)
        if m is None or m.end() == at:
            raise ConditionError(f"cannot read the condition {text!r} at {text[at:]!r}")
        kind = m.lastgroup or ""
        found.append((kind, m.group(kind)))
        at = m.end()
    return found


class _Parser:
    def __init__(
        self, text: str, bindings: Mapping[str, Operand], types: Mapping[str, str]
    ) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.bindings = bindings
        self.types = types

    def fail(self, why: str) -> ConditionError:
        return ConditionError(f"condition {self.text!r}: {why}")

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise self.fail("it ends too early")
        token = self.tokens[self.at]
        if expected is not None and token[1] != expected:
            raise self.fail(f"expected {expected!r}, found {token[1]!r}")
        self.at += 1
        return token

    def parse(self) -> ConditionSpec:
        cond = self.disjunction()
        if self.at != len(self.tokens):
            raise self.fail(f"unexpected {self.peek()!r}")
        return cond

    def disjunction(self) -> ConditionSpec:
        parts = [self.conjunction()]
        while self.peek() == "||":
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else ConditionSpec(any=parts)

    def conjunction(self) -> ConditionSpec:
        parts = [self.unary()]
        while self.peek() == "&&":
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else ConditionSpec(all=parts)

    def unary(self) -> ConditionSpec:
        if self.peek() == "!":
            self.take()
            return ConditionSpec.model_validate({"not": self.unary()})
        if self.peek() == "(":
            start = self.at
            self.take()
            inner = self.disjunction()
            if self.peek() == ")":
                self.take()
                if self.peek() not in ("==", "!=", "<", "<=", ">", ">="):
                    return inner
            self.at = start  # a parenthesised operand after all
        left = self.operand()
        op = self.peek()
        if op in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            right = self.operand()
            return ConditionSpec(op=op, left=left, right=right)  # type: ignore[arg-type]
        return ConditionSpec(op="==", left=left, right=ConstantInput(constant=True))

    def operand(self) -> Operand:
        kind, value = self.take()
        if kind == "str":
            body = value[1:-1]
            return ConstantInput(constant=re.sub(r"\\(.)", r"\1", body))
        if kind == "num":
            number = float(value)
            return ConstantInput(
                constant=int(number) if number.is_integer() and "." not in value else number
            )
        if kind == "op" and value == "(":
            inner = self.operand()
            self.take(")")
            return inner
        if kind != "name":
            raise self.fail(f"unexpected {value!r}")
        if value in ("true", "false"):
            return ConstantInput(constant=value == "true")
        if value == "null":
            return ConstantInput(constant=None)
        if value in _CASTS:
            self.take("(")
            inner, name = self.input_reference()
            self.take(")")
            declared = self.types.get(name, "")
            if declared not in _CASTS[value]:
                raise self.fail(
                    f"{value}() of input {name!r}, declared {declared or 'without a type'}: "
                    "Argosy compares values as they are and cannot convert them; give the "
                    "condition a value of that type"
                )
            return inner
        if value == "inputs":
            self.at -= 1
            return self.input_reference()[0]
        raise self.fail(f"unknown name {value!r} (only inputs.parameter_values[...] is supported)")

    def input_reference(self) -> tuple[Operand, str]:
        self.take("inputs")
        self.take(".")
        _, field = self.take()
        if field != "parameter_values":
            raise self.fail(f"inputs.{field} is not supported (only inputs.parameter_values)")
        self.take("[")
        kind, quoted = self.take()
        if kind != "str":
            raise self.fail("inputs.parameter_values[...] takes a quoted input name")
        self.take("]")
        name = quoted[1:-1]
        if name not in self.bindings:
            raise self.fail(f"it reads input {name!r}, which its task does not have")
        return self.bindings[name], name


def parse_condition(
    text: str, bindings: Mapping[str, Operand], types: Mapping[str, str] | None = None
) -> ConditionSpec:
    """The condition ``text`` with its operands replaced by the task's input ``bindings``.

    ``types``: each input's declared KFP ``parameterType`` (checks the casts).
    """
    return _Parser(text, bindings, types or {}).parse()
