"""``@pipeline``: wire steps into a DAG with typed parameters and outputs.

Tracing calls the pipeline function once with a :class:`~argosy.sdk.graph.ParameterRef` per
parameter; the steps it calls become nodes. What the function returns becomes the pipeline's
outputs: one handle is ``output``; a dict, tuple or NamedTuple of handles names several.
``pipeline.run(...)`` runs it with the engine from Python; called directly, a pipeline
without control flow is still a plain function.
"""

from __future__ import annotations

import json
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any

from argosy.errors import ArgosyError, PipelineDefinitionError, ValidationError
from argosy.sdk.graph import (
    GraphBuilder,
    OneOfRef,
    OutputRef,
    ParameterRef,
    PipelineGraph,
    StepCall,
    caller_location,
    user_location,
)
from argosy.sdk.types import JSON_TYPES, type_ref

_tracing: list[str] = []  # names of the pipelines being traced, outermost first


class Pipeline:
    """A DAG of steps with typed parameters; ``graph()`` traces it without running anything."""

    def __init__(self, func: Callable[..., Any], name: str, location: str) -> None:
        self.func = func
        self.name = name
        self.location = location
        self.__doc__ = func.__doc__
        self.__wrapped__ = func

    def __repr__(self) -> str:
        return f"<pipeline {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Inside another pipeline's body: a sub-pipeline node. Outside: the plain function,
        its steps called in this process — for pipelines without ``map()``, ``If`` or
        ``exit_handler``; :meth:`run` runs any pipeline with the engine."""
        from argosy.sdk.graph import _direct_calls, current_builder

        builder = current_builder()
        if builder is not None:
            return builder.add_call(self, args, kwargs, None)
        _direct_calls.append(self.name)
        try:
            return self.func(*args, **kwargs)
        finally:
            _direct_calls.pop()

    def run(
        self,
        parameters: Mapping[str, Any] | None = None,
        /,
        *,
        backend: Any = None,
        fail_fast: bool = False,
        no_cache: bool = False,
        version: str | None = None,
        progress: bool = False,
        **values: Any,
    ) -> Any:
        """Run the pipeline with the engine and wait for the end; returns an
        :class:`argosy.Run` (``run.outputs["model"].load()``, ``run.metrics``, ...).

        Parameters are keyword arguments (or a ``parameters`` mapping, for names that clash
        with the options). Locally the steps run as isolated processes on this machine's
        ``.argosy`` state, with caching and lineage; after :func:`argosy.connect` (or with
        ``ARGOSY_SERVER`` set, or ``backend=``) the run is pushed to that server. A run that
        fails still returns its ``Run``: check ``run.status``.
        """
        from argosy.client.runs import start

        return start(
            self, {**(parameters or {}), **values}, backend=backend, wait=True,
            fail_fast=fail_fast, no_cache=no_cache, version=version, progress=progress,
        )  # fmt: skip

    def submit(
        self,
        parameters: Mapping[str, Any] | None = None,
        /,
        *,
        backend: Any = None,
        fail_fast: bool = False,
        no_cache: bool = False,
        version: str | None = None,
        **values: Any,
    ) -> Any:
        """Like :meth:`run`, but return the ``Run`` at once (``run.wait()`` waits); locally
        the run goes on in a background thread of this process."""
        from argosy.client.runs import start

        return start(
            self, {**(parameters or {}), **values}, backend=backend, wait=False,
            fail_fast=fail_fast, no_cache=no_cache, version=version, progress=False,
        )  # fmt: skip

    def map(
        self,
        items: Any,
        *,
        over: str | None = None,
        parallelism: int | None = None,
        name: str | None = None,
        **inputs: Any,
    ) -> Any:
        """Run this pipeline once per item, as a sub-pipeline (node paths ``NAME[i]/...``)."""
        from argosy.sdk.step import _map

        return _map(self, items, over, parallelism, name, inputs)

    def input_defs(self) -> dict[str, Any]:
        """Parameters as step-like inputs (type, default), for wiring it as a sub-pipeline."""
        from argosy.sdk.step import _MISSING, InputDef

        return {
            k: InputDef(t, _MISSING if required else default)
            for k, (t, default, required) in self.parameters().items()
        }

    def parameters(self) -> dict[str, tuple[Any, Any, bool]]:
        """name -> (TypeInfo, default, required), from the function's signature."""
        try:
            hints = typing.get_type_hints(self.func, include_extras=True)
        except Exception as exc:
            raise PipelineDefinitionError(
                f"cannot resolve the annotations of pipeline {self.name!r}: {exc} [{self.location}]"
            ) from None
        import inspect

        params: dict[str, tuple[Any, Any, bool]] = {}
        for p in inspect.signature(self.func).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise PipelineDefinitionError(
                    f"pipeline {self.name!r} takes *{p.name}; list each parameter by name "
                    f"[{self.location}]"
                )
            info = type_ref(hints.get(p.name, Any))
            if info.ref not in JSON_TYPES and info.ref != "any":
                raise ValidationError(
                    "check_parameters",
                    f"parameter {p.name!r} is annotated {info.ref}; pipeline parameters are JSON "
                    "values (int, float, str, bool, list, dict): pass data as a path or URL "
                    "parameter and load it in a step",
                    where=self.name,
                    location=self.location,
                )
            required = p.default is inspect.Parameter.empty
            default = None if required else p.default
            if not required:
                try:
                    json.dumps(default, allow_nan=False)
                except (TypeError, ValueError):
                    raise ValidationError(
                        "check_parameters",
                        f"the default of parameter {p.name!r} is not JSON data",
                        where=self.name,
                        location=self.location,
                    ) from None
            params[p.name] = (info, default, required)
        return params

    def graph(self) -> PipelineGraph:
        """Trace the pipeline body into a :class:`PipelineGraph` (validated as it is built).

        A sub-pipeline is traced by its own builder, so its node names are its own.
        """
        if self.name in _tracing:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r} calls itself (through {' -> '.join(_tracing)}); a "
                f"pipeline cannot contain itself [{self.location}]"
            )
        params = self.parameters()
        refs = {name: ParameterRef(name, info) for name, (info, _, _) in params.items()}
        _tracing.append(self.name)
        try:
            with GraphBuilder(self.name) as builder:
                returned = self.func(**refs)
        except ArgosyError:
            raise
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            where = user_location(exc.__traceback__) or self.location
            raise PipelineDefinitionError(
                f"the body of pipeline {self.name!r} raised {_described(exc)} [{where}]; the "
                "body runs once when the pipeline is compiled, with handles standing for step "
                "outputs (values exist only inside steps): fix it and retry"
            ) from None
        finally:
            _tracing.pop()
        outputs = _outputs(self.name, returned, self.location)
        if not builder.nodes:
            raise ValidationError(
                "check_not_empty",
                f"pipeline {self.name!r} calls no steps; call at least one @step in its body",
                location=self.location,
            )
        module = self.func.__module__
        file = sys.modules[module].__file__ if module in sys.modules else None
        return PipelineGraph(
            name=self.name,
            parameters=params,
            nodes=builder.nodes,
            outputs=outputs,
            location=self.location,
            module=module,
            file=file or "",
        )


def _described(exc: BaseException) -> str:
    """``KeyError: 'x'``, ``sys.exit(3)``, ``KeyboardInterrupt``: an exception as a user reads it."""
    if isinstance(exc, SystemExit):
        return f"SystemExit (sys.exit({exc.code!r}))"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _outputs(name: str, returned: Any, location: str) -> dict[str, OutputRef | OneOfRef]:
    def check(key: str, value: Any) -> OutputRef | OneOfRef:
        if isinstance(value, OutputRef | OneOfRef):
            return value
        if isinstance(value, StepCall):
            raise ValidationError(
                "check_outputs",
                f"pipeline output {key!r} is the whole call {value.node.path!r}; return one of "
                f"its outputs, e.g. {value.node.path}.<output>",
                where=name,
                location=location,
            )
        raise ValidationError(
            "check_outputs",
            f"pipeline output {key!r} is {type(value).__name__}, not a step output; a pipeline "
            "returns step outputs (or a dict/tuple of them)",
            where=name,
            location=location,
        )

    if returned is None:
        return {}
    if isinstance(returned, OutputRef | OneOfRef):
        return {"output": returned}
    if isinstance(returned, dict):
        return {str(k): check(str(k), v) for k, v in returned.items()}
    if isinstance(returned, tuple) and hasattr(returned, "_fields"):
        return {k: check(k, v) for k, v in zip(returned._fields, returned, strict=True)}
    if isinstance(returned, tuple | list):
        return {f"output_{i}": check(f"output_{i}", v) for i, v in enumerate(returned)}
    if isinstance(returned, StepCall):
        return {k: v for k, v in ((r.output, r) for r in returned)}
    return {"output": check("output", returned)}


def pipeline(func: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
    """Declare a pipeline: its parameters are the function's, its outputs what it returns."""
    from argosy.sdk.step import IN_TASK

    if IN_TASK:  # a task never builds a pipeline: leave the function as it is
        return func if func is not None else (lambda f: f)
    location = caller_location()

    def decorate(f: Callable[..., Any]) -> Pipeline:
        return Pipeline(f, name or f.__name__, location)

    if func is not None:
        return decorate(func)
    return decorate
