"""``@step`` and ``container_step``: a typed unit of work and the options it runs with.

A :class:`Step` is a plain callable outside a pipeline (it runs the function) and a node
factory inside a ``@pipeline`` body (see :mod:`argosy.sdk.graph`). Its inputs and outputs come
from the function's annotations; its options (resources, retries, timeout, cache, env,
secrets) are validated here, where the decorator's file:line can be named.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, overload

from argosy.errors import PipelineDefinitionError
from argosy.sdk.graph import OutputRef, StepCall, caller_location, current_builder
from argosy.sdk.types import TypeInfo, is_multi_output, output_fields, type_ref

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


_MISSING: Any = _Missing()

# Inside a task's process (the launcher sets this), decorators only need the function: the
# pipeline was validated when it was compiled, so skip the introspection (start-up cost).
IN_TASK = "ARGOSY_ATTEMPT_ID" in os.environ


class TaskFunction:
    """What ``@step`` returns inside a task's process: the function, ready to be called."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


@dataclass(frozen=True)
class InputDef:
    """One input of a step: its type and, when optional, its JSON default."""

    type: TypeInfo
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass(frozen=True)
class StepOptions:
    """How a step runs: what it asks of the executor, and how failures and caching behave."""

    cpu: float = 1.0
    memory: int | None = None  # bytes; None: not limited by the watchdog
    gpu: int = 0
    pool: str | None = None
    retries: int = 0
    retry_backoff: float = 0.0
    timeout: float | None = None
    cache: bool = True
    cache_version: str | None = None
    cache_ttl: float | None = None  # seconds; reuse only outputs younger than this
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    packages: tuple[str, ...] | None = None  # the step's own environment (None: the project's)
    image: str | None = None  # a container image to run in (its python3, the runtime mounted)


def _options(location: str, **given: Any) -> StepOptions:
    """Check user-given options one by one, naming the bad one and its fix."""
    from argosy.errors import UsageError
    from argosy.units import parse_memory

    def bad(message: str) -> PipelineDefinitionError:
        return PipelineDefinitionError(f"{message} [{location}]")

    known = [f.name for f in dataclasses.fields(StepOptions)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise bad(f"unknown step option {unknown[0]!r}; options are: name, {', '.join(known)}")
    opts: dict[str, Any] = {}
    for key, value in given.items():
        if value is None and key not in ("memory", "pool", "timeout", "cache_version", "cache_ttl"):
            continue
        if key == "cpu":
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise bad(f"cpu must be a positive number of cores such as 1 or 0.5, got {value!r}")
            opts[key] = float(value)
        elif key == "memory":
            try:
                opts[key] = parse_memory(value)
            except UsageError as exc:
                raise bad(str(exc)) from None
        elif key in ("gpu", "retries"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(f"{key} must be a whole number >= 0, got {value!r}")
            opts[key] = value
        elif key == "retry_backoff":
            if not isinstance(value, int | float) or value < 0:
                raise bad(f"retry_backoff must be seconds >= 0, got {value!r}")
            opts[key] = float(value)
        elif key in ("timeout", "cache_ttl"):
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise bad(f"{key} must be seconds > 0 (or None), got {value!r}")
            opts[key] = None if value is None else float(value)
        elif key == "cache":
            opts[key] = bool(value)
        elif key in ("pool", "cache_version"):
            opts[key] = None if value is None else str(value)
        elif key == "env":
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str)
                for k, v in value.items()
            ):
                raise bad(
                    "env must map variable names to string values, e.g. {'OMP_NUM_THREADS': '2'}"
                )
            opts[key] = dict(value)
        elif key == "secrets":
            if isinstance(value, str) or not all(
                isinstance(s, str) and _ENV_NAME.match(s) for s in value
            ):
                raise bad("secrets must be a list of names such as ['WAREHOUSE_TOKEN']")
            opts[key] = tuple(value)
        elif key == "packages":
            opts[key] = _requirements(value, bad)
        elif key == "image":
            if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
                raise bad(
                    f"image must be an image reference such as 'repo@sha256:...', got {value!r}"
                )
            opts[key] = value
    if opts.get("image") and opts.get("packages"):
        raise bad("a step with an image takes its packages from the image: install them there, "
                  "or drop image= to have packages= build the step's environment")  # fmt: skip
    return StepOptions(**opts)


def _requirements(value: Any, bad: Callable[[str], PipelineDefinitionError]) -> tuple[str, ...]:
    """Requirement strings (``name``, ``name==1.2``, ``name>=1,<2``, ``name[extra]``), checked."""
    example = "packages=['xgboost==2.1.3', 'polars>=1']"
    if isinstance(value, str) or not all(isinstance(r, str) and r.strip() for r in value):
        raise bad(f"packages must be a list of requirement strings, e.g. {example}")
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging comes with pip and every installer
        return tuple(sorted(r.strip() for r in value))
    found = []
    for text in value:
        try:
            found.append(str(Requirement(text)))
        except InvalidRequirement as exc:
            raise bad(f"package {text!r} is not a requirement: {exc}; e.g. {example}") from None
    return tuple(sorted(found))


class Step:
    """A unit of work in a pipeline: a Python function or a container command."""

    kind = "python"

    def __init__(
        self,
        func: Callable[..., Any] | None,
        *,
        name: str,
        inputs: dict[str, InputDef],
        outputs: dict[str, TypeInfo],
        multi_output: bool,
        options: StepOptions,
        location: str,
        node_name: str | None = None,
    ) -> None:
        self.func = func
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.multi_output = multi_output
        self.config = options
        self.location = location
        self._node_name = node_name
        if func is not None:
            self.__doc__ = func.__doc__
            self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<step {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = current_builder()
        if builder is None:
            return self.run_directly(*args, **kwargs)
        return builder.add_call(self, args, kwargs, self._node_name)

    def map(
        self,
        items: Any,
        *,
        over: str | None = None,
        parallelism: int | None = None,
        name: str | None = None,
        **inputs: Any,
    ) -> Any:
        """Run this step once per item of ``items`` (a list: constant, parameter or output).

        The item goes to input ``over`` (default: the first input not given in ``inputs``);
        at most ``parallelism`` iterations run at once. Each iteration is its own task, node
        path ``NAME[i]``; the outputs are collected into lists, in the order of the items.
        """
        return _map(self, items, over, parallelism, name or self._node_name, inputs)

    def run_directly(self, *args: Any, **kwargs: Any) -> Any:
        """Outside a pipeline a step is just its function."""
        assert self.func is not None
        return self.func(*args, **kwargs)

    def options(self, **changes: Any) -> Step:
        """``train.options(name="train_lr", cpu=2)(...)``: a copy with some options changed.

        ``name`` sets the node name of the calls made through the copy; the other keys are the
        ``@step`` options, checked the same way.
        """
        location = caller_location()
        node_name = changes.pop("name", None)
        unknown = set(changes) - {f.name for f in dataclasses.fields(StepOptions)}
        if unknown:
            raise PipelineDefinitionError(
                f"unknown step option {sorted(unknown)[0]!r}; options are: "
                f"name, {', '.join(f.name for f in dataclasses.fields(StepOptions))} [{location}]"
            )
        current = dataclasses.asdict(self.config)
        current.update(changes)
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.config = _options(location, **current)
        clone._node_name = node_name if node_name is not None else self._node_name
        return clone

    @property
    def module(self) -> str:
        assert self.func is not None
        return self.func.__module__

    @property
    def qualname(self) -> str:
        assert self.func is not None
        return self.func.__qualname__


def _map(
    target: Any,
    items: Any,
    over: str | None,
    parallelism: int | None,
    name: str | None,
    inputs: dict[str, Any],
) -> Any:
    builder = current_builder()
    if builder is None:
        from argosy.sdk.graph import outside_pipeline

        raise outside_pipeline(f"{target.name}.map() (a fan-out)")
    if parallelism is not None and (not isinstance(parallelism, int) or parallelism < 1):
        raise PipelineDefinitionError(
            f"parallelism must be a whole number >= 1 (or None), got {parallelism!r} "
            f"[{caller_location()}]"
        )
    return builder.add_call(target, (), inputs, name, for_each=(over, items, parallelism))


def _signature(func: Callable[..., Any], location: str) -> tuple[dict[str, InputDef], Any]:
    import inspect

    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # NameError for unresolvable forward references, etc.
        raise PipelineDefinitionError(
            f"cannot resolve the annotations of step {func.__name__!r}: {exc}; import the types "
            f"it names at module level [{location}]"
        ) from None
    inputs: dict[str, InputDef] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise PipelineDefinitionError(
                f"step {func.__name__!r} takes *{param.name}; steps need named inputs so they "
                f"can be wired and recorded, so list each input explicitly [{location}]"
            )
        info = type_ref(hints.get(param.name, Any))
        default = _MISSING if param.default is inspect.Parameter.empty else param.default
        if isinstance(default, PurePath):
            default = str(default)  # a Path input's default names a file to import
        if default is not _MISSING:
            try:
                json.dumps(default, allow_nan=False)
            except (TypeError, ValueError):
                raise PipelineDefinitionError(
                    f"the default of input {param.name!r} of step {func.__name__!r} is a "
                    f"{type(default).__name__}, not JSON data; use a JSON value (or None) as the "
                    f"default [{location}]"
                ) from None
        inputs[param.name] = InputDef(info, default)
    return inputs, hints.get("return", Any)


def _outputs(returns: Any) -> tuple[dict[str, TypeInfo], bool]:
    if returns is None or returns is type(None):
        return {}, False
    if is_multi_output(returns):
        return {name: type_ref(a) for name, a in output_fields(returns).items()}, True
    return {"output": type_ref(returns)}, False


@overload
def step(func: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    cpu: float | None = None,
    memory: str | int | None = None,
    gpu: int | None = None,
    pool: str | None = None,
    retries: int | None = None,
    retry_backoff: float | None = None,
    timeout: float | None = None,
    cache: bool | None = None,
    cache_version: str | None = None,
    cache_ttl: float | None = None,
    env: Mapping[str, str] | None = None,
    secrets: Sequence[str] | None = None,
    packages: Sequence[str] | None = None,
    image: str | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a typed Python function into a step; use bare (``@step``) or with options.

    Options: ``cpu`` (cores, default 1), ``memory`` (``"4Gi"``), ``gpu`` (count), ``pool`` (a
    node-pool label), ``retries`` and ``retry_backoff`` (seconds, doubled per retry),
    ``timeout`` (seconds), ``cache``, ``cache_version`` and ``cache_ttl`` (seconds), ``env`` (extra environment
    variables), ``secrets`` (names resolved at run time, never stored) and ``packages``
    (requirements such as ``"xgboost==2.1.3"``: the step runs in its own environment, built once
    per package set and Python version; default: ``[environment] packages`` of ``argosy.toml``)
    or ``image`` (``"repo@sha256:..."``: the step runs in that container image, with its
    ``python3`` of the runtime's version and the Argosy runtime mounted read-only, confined as a
    container step).
    """
    if IN_TASK:
        return TaskFunction(func) if func is not None else TaskFunction

    location = caller_location()

    def decorate(f: Callable[..., Any]) -> Step:
        if isinstance(f, Step):
            raise PipelineDefinitionError(f"{f.name!r} is already a step [{location}]")
        if not callable(f):
            raise PipelineDefinitionError(f"@step decorates a function, got {f!r} [{location}]")
        opts = dict(options)
        name = opts.pop("name", None) or f.__name__
        if "<locals>" in f.__qualname__ or f.__name__ == "<lambda>":
            raise PipelineDefinitionError(
                f"step {name!r} is defined inside a function or is a lambda; define it at module "
                f"level so each task's process can import it [{location}]"
            )
        inputs, returns = _signature(f, location)
        outputs, multi = _outputs(returns)
        return Step(
            f,
            name=name,
            inputs=inputs,
            outputs=outputs,
            multi_output=multi,
            options=_options(location, **opts),
            location=location,
        )

    if func is not None:
        return decorate(func)
    return decorate


class ContainerStep(Step):
    """A step that runs a command in a container image, with inputs and outputs as files."""

    kind = "container"

    def __init__(
        self, *, image: str, command: list[str], network: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(None, **kwargs)
        self.image = image
        self.command = command
        self.network = network

    def run_directly(self, *args: Any, **kwargs: Any) -> Any:
        raise PipelineDefinitionError(
            f"container step {self.name!r} runs only inside a pipeline; call it from a @pipeline "
            "body and run that with 'argosy run'"
        )


def container_step(
    *,
    name: str,
    image: str,
    command: Sequence[str],
    inputs: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    network: bool = False,
    **options: Any,
) -> ContainerStep:
    """A step that runs ``command`` in ``image`` (pin it by digest: ``image@sha256:...``).

    The container has no network unless ``network=True``, a read-only root filesystem (its
    scratch space is ``/argosy`` and a ``/tmp`` tmpfs), a non-root user and no capabilities;
    declared ``secrets`` are files in ``/run/secrets/NAME``, never environment variables.

    The command may use ``{{inputs.NAME.path}}`` (a file holding the input), ``{{inputs.NAME.value}}``
    (a JSON scalar inlined) and ``{{outputs.NAME.path}}`` (where to write an output); ``str``
    outputs are the file's text, ``int``/``float``/``bool``/``list``/``dict`` its JSON, ``bytes``
    and ``Path`` the file itself.
    """
    if IN_TASK:
        return None  # type: ignore[return-value]  # container steps never run Python in a task
    location = caller_location()
    if not image or not isinstance(image, str):
        raise PipelineDefinitionError(f"container step {name!r} needs an image [{location}]")
    if isinstance(command, str) or not command or not all(isinstance(c, str) for c in command):
        raise PipelineDefinitionError(
            f"container step {name!r}: command must be a non-empty list of strings, e.g. "
            f"['sh', '-c', '...'] [{location}]"
        )
    placeholders = re.findall(
        r"\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\.(path|value)\s*\}\}", " ".join(command)
    )
    declared = {"inputs": dict(inputs or {}), "outputs": dict(outputs or {})}
    for group, key, _ in placeholders:
        if key not in declared[group]:
            raise PipelineDefinitionError(
                f"container step {name!r}: command uses {{{{{group}.{key}...}}}} but {key!r} is not "
                f"declared in {group}= ; declare it, e.g. {group}={{'{key}': str}} [{location}]"
            )
    return ContainerStep(
        image=image,
        command=list(command),
        network=bool(network),
        name=name,
        inputs={k: InputDef(type_ref(t)) for k, t in declared["inputs"].items()},
        outputs={k: type_ref(t) for k, t in declared["outputs"].items()},
        multi_output=len(declared["outputs"]) != 1,
        options=_options(location, **options),
        location=location,
    )


__all__ = [
    "ContainerStep",
    "InputDef",
    "OutputRef",
    "Step",
    "StepCall",
    "StepOptions",
    "container_step",
    "step",
]
