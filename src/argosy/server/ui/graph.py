"""The pipeline graph of the web UI: which boxes and arrows a spec makes, and where they go.

:func:`pipeline_graph` turns a compiled spec into graph nodes and edges. A node is one node of
the spec: a step call, or a sub-pipeline — drawn as its own inner nodes (``prep/clean``) unless
it is *collapsed*, then as one box. A fan-out (``train.map(...)``) is one box standing for
all its iterations (``train[0]`` ... ``train[5]``): the iterations are listed in the step's
side panel, and compared on the comparison page. Edges are data (an input bound to an
upstream output, or a fan-out's items), conditions (an ``If`` reading an upstream output),
order (``after``) and exit handlers (the group a handler waits for).

:func:`layout` places them left to right with the Sugiyama layered layout of `grandalf`
(a small pure-Python library from PyPI: layering, crossing reduction by barycenters,
coordinate assignment), so pages are drawn by the server as plain SVG — no script needed to
see a graph, nothing laid out in the browser. A layout depends only on the graph's structure,
so it is cached (:data:`LAYOUT_CACHE` graphs): a run page is laid out once per pipeline
version, however many runs and views it has.

:func:`node_key` maps a task's node path to its box (``fold[2]/fit`` -> ``fold/fit``), and
:func:`aggregate` gives a box the state of its tasks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from argosy.spec.models import (
    ConditionSpec,
    ConstantInput,
    DagSpec,
    InputBinding,
    NodeSpec,
    OneOfInput,
    Operand,
    OutputReference,
    ParameterInput,
    PipelineSpec,
    TaskOutputInput,
)

EdgeKind = Literal["data", "condition", "order", "exit"]
LAYOUT_CACHE = 256
NODE_HEIGHT = 46
MIN_WIDTH = 120
MAX_WIDTH = 230
CHAR_WIDTH = 7.2
LAYER_GAP = 70  # between columns
NODE_GAP = 22  # between boxes of one column
MARGIN = 16

_ITERATION = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class GraphNode:
    """One box: ``key`` is the node path without iteration indices (``fold/fit``)."""

    key: str
    label: str
    step: str | None = None
    mapped: bool = False  # a fan-out (or inside one): the box stands for its iterations
    subpipeline: bool = False  # a collapsed sub-pipeline
    condition: str | None = None  # its If/Elif/Else condition, as text
    exit_handler: bool = False


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str
    kind: EdgeKind = "data"


@dataclass(frozen=True)
class Box:
    node: GraphNode
    x: float
    y: float
    width: float
    height: float

    @property
    def cx(self) -> float:
        return self.x + self.width / 2

    @property
    def cy(self) -> float:
        return self.y + self.height / 2


@dataclass(frozen=True)
class Line:
    source: str
    target: str
    kind: EdgeKind
    d: str  # the SVG path


@dataclass(frozen=True)
class Drawing:
    width: float
    height: float
    boxes: tuple[Box, ...]
    lines: tuple[Line, ...]
    groups: tuple[str, ...] = ()  # the sub-pipelines drawn expanded (can be collapsed)
    collapsible: tuple[str, ...] = field(default=())  # every sub-pipeline node key


def node_key(node_path: str) -> str:
    """The box of a task: its node path without iteration indices."""
    return _ITERATION.sub("", node_path)


STATE_ORDER = ("failed", "running", "queued", "cancelled", "pending", "skipped")


def aggregate(states: Iterable[str]) -> str:
    """The state one box shows for its tasks: failed before running before queued ...;
    succeeded (or cached) only when every task did."""
    found = list(states)
    if not found:
        return "pending"
    unique = set(found)
    if unique <= {"succeeded", "cached"}:
        return "cached" if unique == {"cached"} else "succeeded"
    for state in STATE_ORDER:
        if state in unique:
            if state == "pending" and unique & {"succeeded", "cached"}:
                return "running"  # some done, some waiting: under way
            return state
    return found[0]


# -- conditions as text --------------------------------------------------------------------------
def _operand(o: Operand | None) -> str:
    if isinstance(o, ConstantInput):
        return json.dumps(o.constant)
    if isinstance(o, ParameterInput):
        return o.parameter
    if isinstance(o, TaskOutputInput):
        return f"{o.task_output.node}.{o.task_output.output}"
    return "?"


def condition_text(c: ConditionSpec) -> str:
    """``mean.output >= threshold``, ``(a) and (b)``, ``not (a)``."""
    if c.op is not None:
        return f"{_operand(c.left)} {c.op} {_operand(c.right)}"
    if c.all:
        return " and ".join(f"({condition_text(x)})" for x in c.all)
    if c.any:
        return " or ".join(f"({condition_text(x)})" for x in c.any)
    if c.not_ is not None:
        return f"not ({condition_text(c.not_)})"
    return "?"


# -- the graph of a spec ---------------------------------------------------------------------------
@dataclass
class _Scope:
    """One DAG being drawn: the root, or an expanded sub-pipeline inside its parent."""

    dag: DagSpec
    prefix: str
    parent: _Scope | None = None
    node: NodeSpec | None = None  # the sub-pipeline node in the parent
    mapped: bool = False
    children: dict[str, _Scope] = field(default_factory=dict)

    def get(self, name: str) -> NodeSpec | None:
        for node in self.dag.nodes:
            if node.name == name:
                return node
        return None


class _Builder:
    def __init__(self, spec: PipelineSpec, collapsed: frozenset[str]) -> None:
        self.spec = spec
        self.collapsed = collapsed
        self.nodes: dict[str, GraphNode] = {}
        self.edges: dict[tuple[str, str], EdgeKind] = {}
        self.groups: list[str] = []
        self.subpipelines: list[str] = []

    def expanded(self, scope: _Scope, node: NodeSpec) -> bool:
        key = scope.prefix + node.name
        return node.pipeline is not None and key not in self.collapsed

    def add_nodes(self, scope: _Scope) -> None:
        for node in scope.dag.nodes:
            key = scope.prefix + node.name
            mapped = scope.mapped or node.for_each is not None
            if node.pipeline is not None:
                self.subpipelines.append(key)
            if self.expanded(scope, node):
                assert node.pipeline is not None
                child = _Scope(
                    self.spec.pipelines[node.pipeline].root, key + "/", scope, node, mapped
                )
                scope.children[node.name] = child
                self.groups.append(key)
                self.add_nodes(child)
                continue
            self.nodes[key] = GraphNode(
                key=key, label=key, step=node.step, mapped=mapped,
                subpipeline=node.pipeline is not None,
                condition=condition_text(node.when) if node.when is not None else None,
                exit_handler=node.exit_handler is not None,
            )  # fmt: skip

    # where a value comes from: the boxes whose output it is
    def exits(self, scope: _Scope, name: str, output: str | None) -> list[str]:
        node = scope.get(name)
        if node is None:
            return []
        if not self.expanded(scope, node):
            return [scope.prefix + name]
        child = scope.children[name]
        assert node.pipeline is not None
        ref = self.spec.pipelines[node.pipeline].root.outputs.get(output or "")
        if isinstance(ref, OutputReference):
            return self.exits(child, ref.node, ref.output)
        if isinstance(ref, OneOfInput):
            return [k for r in ref.one_of for k in self.exits(child, r.node, r.output)]
        return self.sinks(child)

    def sinks(self, scope: _Scope) -> list[str]:
        used = {
            src
            for node in scope.dag.nodes
            for binding in node.inputs.values()
            for src in self._names(binding)
        } | {a for node in scope.dag.nodes for a in node.after}
        return [
            k for node in scope.dag.nodes if node.name not in used
            for k in self.exits(scope, node.name, None)
        ]  # fmt: skip

    @staticmethod
    def _names(binding: InputBinding) -> list[str]:
        if isinstance(binding, TaskOutputInput):
            return [binding.task_output.node]
        if isinstance(binding, OneOfInput):
            return [r.node for r in binding.one_of]
        return []

    def sources(self, scope: _Scope, binding: InputBinding | None) -> list[str]:
        if isinstance(binding, TaskOutputInput):
            ref = binding.task_output
            return self.exits(scope, ref.node, ref.output)
        if isinstance(binding, OneOfInput):
            return [k for r in binding.one_of for k in self.exits(scope, r.node, r.output)]
        if isinstance(binding, ParameterInput):
            return self.parameter_sources(scope, binding.parameter)
        return []

    def parameter_sources(self, scope: _Scope, name: str) -> list[str]:
        if scope.parent is None or scope.node is None:
            return []  # a pipeline parameter: no box
        node = scope.node
        if node.for_each is not None and node.for_each.input == name:
            return self.sources(scope.parent, node.for_each.items)
        return self.sources(scope.parent, node.inputs.get(name))

    def condition_sources(self, scope: _Scope, c: ConditionSpec | None) -> list[str]:
        if c is None:
            return []
        found: list[str] = []
        for operand in (c.left, c.right):
            if operand is not None:
                found += self.sources(scope, operand)
        for inner in [*(c.all or []), *(c.any or []), *([c.not_] if c.not_ else [])]:
            found += self.condition_sources(scope, inner)
        return found

    def edge(self, sources: Iterable[str], target: str, kind: EdgeKind) -> None:
        for source in sources:
            if source != target and source in self.nodes and target in self.nodes:
                self.edges.setdefault((source, target), kind)

    def add_edges(self, scope: _Scope) -> None:
        for node in scope.dag.nodes:
            if self.expanded(scope, node):
                self.add_edges(scope.children[node.name])
                continue
            key = scope.prefix + node.name
            for binding in node.inputs.values():
                self.edge(self.sources(scope, binding), key, "data")
            if node.for_each is not None:
                self.edge(self.sources(scope, node.for_each.items), key, "data")
            self.edge(self.condition_sources(scope, node.when), key, "condition")
            for name in node.after:
                self.edge(self.exits(scope, name, None), key, "order")
            if node.exit_handler is not None:
                for name in node.exit_handler.group:
                    self.edge(self.exits(scope, name, None), key, "exit")


def pipeline_graph(
    spec: PipelineSpec, collapsed: Iterable[str] = ()
) -> tuple[tuple[GraphNode, ...], tuple[GraphEdge, ...], tuple[str, ...], tuple[str, ...]]:
    """(nodes, edges, expanded sub-pipelines, all sub-pipelines) of ``spec``; a sub-pipeline
    whose node key is in ``collapsed`` is one box."""
    builder = _Builder(spec, frozenset(collapsed))
    root = _Scope(spec.root, "")
    builder.add_nodes(root)
    builder.add_edges(root)
    edges = tuple(GraphEdge(s, t, k) for (s, t), k in builder.edges.items())
    return (
        tuple(builder.nodes.values()), edges, tuple(builder.groups),
        tuple(builder.subpipelines),
    )  # fmt: skip


# -- layout ----------------------------------------------------------------------------------------
def _width(node: GraphNode) -> float:
    """Wide enough for the label and the smaller second line (the step, or a lineage node's
    detail), within bounds (longer text is cut with an ellipsis)."""
    chars = max(len(node.label), 0.85 * len(node.step or "") + 6)
    return max(MIN_WIDTH, min(MAX_WIDTH, CHAR_WIDTH * chars + 36))


class _View:
    """What grandalf reads (w, h) and writes (xy) of a vertex."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy: tuple[float, float] = (0.0, 0.0)


class _EdgeView:
    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def setpath(self, points: list[tuple[float, float]]) -> None:
        self.points = [(float(x), float(y)) for x, y in points]


def _curve(points: list[tuple[float, float]]) -> str:
    """A smooth left-to-right path through ``points`` (horizontal tangents at each)."""
    (x0, y0), *rest = points
    d = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        mid = (x0 + x1) / 2
        d.append(f"C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(d)


@lru_cache(maxsize=LAYOUT_CACHE)
def layout(nodes: tuple[GraphNode, ...], edges: tuple[GraphEdge, ...]) -> Drawing:
    """Boxes and lines of the graph, left to right (cached by the graph's structure)."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout

    if not nodes:
        return Drawing(width=MARGIN * 2, height=MARGIN * 2, boxes=(), lines=())
    vertices = {n.key: Vertex(n.key) for n in nodes}
    for n in nodes:  # laid out top-down by grandalf, then turned: w and h swap
        vertices[n.key].view = _View(NODE_HEIGHT, _width(n))
    links = []
    for e in edges:
        link = Edge(vertices[e.source], vertices[e.target])
        link.view = _EdgeView()
        links.append((e, link))
    graph = Graph(list(vertices.values()), [link for _, link in links])
    offset = 0.0
    placed: dict[str, tuple[float, float]] = {}
    routes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for component in graph.C:  # one below the other
        sugiyama = SugiyamaLayout(component)
        sugiyama.xspace, sugiyama.yspace = NODE_GAP, LAYER_GAP
        sugiyama.init_all()
        sugiyama.draw(N=1.5)
        members = [v for v in component.sV]
        top = min(v.view.xy[0] - v.view.w / 2 for v in members)
        left = min(v.view.xy[1] - v.view.h / 2 for v in members)
        bottom = 0.0
        for v in members:  # grandalf's (x, y) centre -> our (y, x)
            cx = v.view.xy[1] - left + MARGIN
            cy = v.view.xy[0] - top + MARGIN + offset
            placed[v.data] = (cx, cy)
            bottom = max(bottom, cy + v.view.w / 2)
        for e, link in links:
            if e.source in placed and (e.source, e.target) not in routes and link.view.points:
                routes[e.source, e.target] = [
                    (y - left + MARGIN, x - top + MARGIN + offset) for x, y in link.view.points
                ]
        offset = bottom + NODE_GAP * 2 - MARGIN
    boxes = []
    for n in nodes:
        cx, cy = placed[n.key]
        w = _width(n)
        boxes.append(Box(n, cx - w / 2, cy - NODE_HEIGHT / 2, w, NODE_HEIGHT))
    by_key = {b.node.key: b for b in boxes}
    lines = []
    for e in edges:
        a, b = by_key[e.source], by_key[e.target]
        middle = routes.get((e.source, e.target), [])[1:-1]
        points = [(a.x + a.width, a.cy), *middle, (b.x - 6, b.cy)]
        lines.append(Line(e.source, e.target, e.kind, _curve(points)))
    width = max(b.x + b.width for b in boxes) + MARGIN
    height = max(b.y + b.height for b in boxes) + MARGIN
    return Drawing(width=width, height=height, boxes=tuple(boxes), lines=tuple(lines))


def draw(spec: PipelineSpec, collapsed: Iterable[str] = ()) -> Drawing:
    """The laid-out graph of ``spec``, with ``collapsed`` sub-pipelines as single boxes."""
    nodes, edges, groups, subpipelines = pipeline_graph(spec, collapsed)
    drawing = layout(nodes, edges)
    return Drawing(
        width=drawing.width, height=drawing.height, boxes=drawing.boxes, lines=drawing.lines,
        groups=groups, collapsible=subpipelines,
    )  # fmt: skip


def lineage_graph(tree: dict[str, Any], direction: str) -> tuple[
    tuple[GraphNode, ...], tuple[GraphEdge, ...], dict[str, dict[str, Any]]
]:  # fmt: skip
    """Boxes and edges of a lineage tree (:mod:`argosy.service.lineage`), arrows in the
    direction data flowed, and each box's document by key."""
    docs: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str], EdgeKind] = {}

    def key(doc: dict[str, Any]) -> str:
        ident = doc.get("id") or doc.get("sha256") or json.dumps(doc.get("value"), default=str)
        return f"{doc['kind']}:{ident}"

    def add(doc: dict[str, Any]) -> str:
        k = key(doc)
        docs.setdefault(k, doc)
        return k

    def walk(doc: dict[str, Any]) -> None:
        me = add(doc)
        task = doc.get("produced_by")
        if task is not None:
            t = add(task)
            edges.setdefault((t, me), "data")
            for inp in task.get("inputs", {}).values():
                edges.setdefault((add(inp), t), "data")
                if inp.get("kind") == "artifact":
                    walk(inp)
        for consumer in doc.get("consumed_by", []):
            t = add(consumer)
            edges.setdefault((me, t), "data")
            for out in consumer.get("outputs", []):
                edges.setdefault((t, add(out)), "data")
                walk(out)

    walk(tree)
    nodes = tuple(
        GraphNode(key=k, label=_lineage_label(d), step=_lineage_detail(d)) for k, d in docs.items()
    )
    return nodes, tuple(GraphEdge(s, t, kind) for (s, t), kind in edges.items()), docs


def _lineage_detail(doc: dict[str, Any]) -> str:
    kind = doc.get("kind")
    if kind == "task":
        return f"{doc.get('step')} · run {str(doc.get('run_id', ''))[:8]}"
    if kind == "artifact":
        return f"{str(doc.get('type', '')).rsplit('.', 1)[-1]} · {str(doc.get('sha256', ''))[:8]}"
    return str(kind)


def _lineage_label(doc: dict[str, Any]) -> str:
    kind = doc.get("kind")
    if kind == "artifact":
        return str(doc.get("ref", "")).split("/", 1)[-1]
    if kind == "task":
        return str(doc.get("node_path", ""))
    if kind == "file":
        return str(doc.get("source") or "file")[-40:]
    text = json.dumps(doc.get("value"), default=str)
    return text if len(text) <= 30 else text[:29] + "…"
