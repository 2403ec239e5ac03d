"""Binding run parameters: parse ``-p NAME=VALUE`` text by the parameter's annotation."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from argosy.errors import UsageError
from argosy.spec.models import ParameterSpec, PipelineSpec

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(name: str, spec: ParameterSpec, text: str) -> Any:
    """The JSON value of ``text`` for a parameter of ``spec.type``; a clear error if it does not fit."""
    t = spec.type
    if spec.optional and text.lower() in ("none", "null"):
        return None
    try:
        if t == "int":
            return int(text)
        if t == "float":
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        if t == "bool":
            low = text.lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError
        if t == "str":
            return text
        value = json.loads(text)
        if t == "list" and not isinstance(value, list):
            raise ValueError
        if t == "dict" and not isinstance(value, dict):
            raise ValueError
        return value
    except ValueError:
        if t == "any":
            return text
        hint = {"bool": "true or false", "float": "a finite number such as 0.5", "list": "a JSON list like [1,2]",
                "dict": 'a JSON object like {"a":1}'}.get(t, f"a valid {t}")  # fmt: skip
        raise UsageError(f"parameter {name!r} expects {t}, got {text!r}; pass {hint}") from None


def check_value(name: str, spec: ParameterSpec, value: Any) -> Any:
    """Check an already-typed value (from JSON or Python) against the parameter's type."""
    if value is None and (spec.optional or spec.type == "any"):
        return None
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }.get(spec.type, True)
    if not ok:
        raise UsageError(f"parameter {name!r} expects {spec.type}, got {value!r}")
    return float(value) if spec.type == "float" else value


def bind_parameters(
    spec: PipelineSpec, text_values: Mapping[str, str], values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """All parameters of a run: given text values parsed, typed values checked, defaults filled."""
    given: dict[str, Any] = {}
    for name, text in text_values.items():
        if name not in spec.parameters:
            raise UsageError(
                f"pipeline {spec.name!r} has no parameter {name!r}; its parameters are: "
                f"{', '.join(spec.parameters) or '(none)'}"
            )
        given[name] = parse_value(name, spec.parameters[name], text)
    for name, value in (values or {}).items():
        if name not in spec.parameters:
            raise UsageError(
                f"pipeline {spec.name!r} has no parameter {name!r}; its parameters are: "
                f"{', '.join(spec.parameters) or '(none)'}"
            )
        given[name] = check_value(name, spec.parameters[name], value)
    bound: dict[str, Any] = {}
    for name, p in spec.parameters.items():
        if name in given:
            bound[name] = given[name]
        elif p.required:
            raise UsageError(
                f"parameter {name!r} of pipeline {spec.name!r} is required; pass -p {name}=VALUE"
            )
        else:
            bound[name] = p.default
    return bound
