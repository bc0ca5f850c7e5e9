"""Issue 16: the guest agent's parts are composed, not spread over mixins. A class reads through `self` only
what it (or a class it derives from) defines: its methods, class attributes, the attributes its own methods
assign, dataclass fields. A "mixin" that reaches attributes its subclass sets (as Runtime's ControlsMixin and
RecoveryMixin and NetworkManager's Wiring did) fails this; what a part needs is passed to its constructor."""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import pkgutil
from pathlib import Path

import pymachine_agent


def _classes() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(pymachine_agent.__path__, "pymachine_agent."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        found += [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == info.name]
    return found


@functools.cache
def _parsed(path: str) -> ast.Module:
    return ast.parse(Path(path).read_text(), path)


@functools.cache
def _class_node(cls: type) -> ast.ClassDef | None:
    """The class's definition, from its module's source parsed once (inspect.getsource parses it per call)."""
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # a builtin base (object, Exception...): dir() covers it
        return None
    if path is None or not Path(path).exists():
        return None
    body: list[ast.stmt] = _parsed(path).body
    node = None
    for part in cls.__qualname__.split("."):
        node = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return node


def _self_attributes(cls: type, ctx: type[ast.expr_context]) -> set[str]:
    """Names of `self.<name>` in the class's own methods (nested classes excluded) in the given context."""
    names: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not top:
                continue
            if (
                isinstance(child, ast.Attribute)
                and isinstance(child.value, ast.Name)
                and child.value.id == "self"
                and isinstance(child.ctx, ctx)
            ):
                names.add(child.attr)
            visit(child, False)

    node = _class_node(cls)
    if node is not None:
        visit(node, True)
    return names


def _defined(cls: type) -> set[str]:
    names: set[str] = set(dir(cls))
    for klass in cls.__mro__:
        names |= _self_attributes(klass, ast.Store)
        if dataclasses.is_dataclass(klass) or (issubclass(klass, tuple) and hasattr(klass, "_fields")):
            names |= set(vars(klass).get("__annotations__", {}))
    return names


def unreached(cls: type) -> list[str]:
    """Attributes the class reads through self that neither it nor its bases define."""
    return sorted(_self_attributes(cls, ast.Load) - _defined(cls))


class _PartOf:  # the shape this test forbids: reads what the class that mixes it in sets
    def verb(self) -> int:
        return self.count + 1  # type: ignore[attr-defined]


class _Whole(_PartOf):
    def __init__(self) -> None:
        self.count = 1


def test_the_check_sees_a_mixin() -> None:
    assert unreached(_PartOf) == ["count"]
    assert unreached(_Whole) == []


def test_no_agent_class_reads_what_another_class_defines() -> None:
    stray = {f"{c.__module__}.{c.__qualname__}": unreached(c) for c in _classes()}
    stray = {name: attrs for name, attrs in stray.items() if attrs}
    assert not stray, f"classes reaching attributes they do not define (pass them in instead): {stray}"


def test_no_mixin_bases_and_no_borrowed_self() -> None:
    mixins, borrowed = [], []
    for cls in _classes():
        mixins += [f"{cls.__qualname__}({b.__name__})" for b in cls.__bases__ if b.__name__.endswith("Mixin")]
        for name, fn in vars(cls).items():
            params = list(inspect.signature(fn).parameters.values()) if inspect.isfunction(fn) else []
            # `def f(self: OtherClass)`: the type-checker trick of a method written for another class
            if params and params[0].name == "self" and params[0].annotation is not inspect.Parameter.empty:
                borrowed.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    assert not mixins, mixins
    assert not borrowed, borrowed


def test_runtime_and_network_manager_are_compositions() -> None:
    from pymachine_agent.network import NetworkManager
    from pymachine_agent.runtime import Runtime

    assert Runtime.__mro__ == (Runtime, object)
    assert NetworkManager.__mro__ == (NetworkManager, object)
