"""Every public name of the package says what it is: each module, each public function and class, and each public
method or property a public class defines has a docstring.

A module's public names are its ``__all__`` when it has one, else the functions and classes defined in it whose names
do not start with an underscore. The text a dataclass or named tuple writes for itself when it has no docstring
(``Name(field, ...)``) is no docstring. A method or property that overrides one documented by a base class counts as
documented (the base's docstring is the one help() shows). The test only imports the package.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import Any

import ilastik_widget


def _modules() -> list[ModuleType]:
    names = [ilastik_widget.__name__]
    names += [
        info.name
        for info in pkgutil.walk_packages(ilastik_widget.__path__, ilastik_widget.__name__ + ".")
        if info.name.rsplit(".", 1)[-1] != "__main__"
    ]
    return [importlib.import_module(name) for name in names]


def _is_ours(obj: Any) -> bool:
    return (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith(ilastik_widget.__name__)


def _public_names(module: ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_") and _is_ours(obj) and obj.__module__ == module.__name__
    ]


def _class_doc(cls: type) -> str | None:
    """The class's own docstring; None for none, and for the ``Name(field, ...)`` text of a dataclass or named
    tuple without one."""
    doc = vars(cls).get("__doc__")
    generated = dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields"))
    if not doc or (generated and doc.startswith(cls.__name__ + "(")):
        return None
    return doc


def _function_of(attr: Any) -> Any:
    """The function behind a class attribute (a method, property, class or static method), or None."""
    if isinstance(attr, property):
        return attr.fget
    if isinstance(attr, (classmethod, staticmethod)):
        return attr.__func__
    if isinstance(attr, functools.cached_property):
        return attr.func
    return attr if inspect.isfunction(attr) else None


def _documented_by_a_base(cls: type, name: str) -> bool:
    for base in cls.__mro__[1:]:
        function = _function_of(vars(base).get(name))
        if function is not None and function.__doc__:
            return True
    return False


def _undocumented_members(cls: type) -> list[str]:
    missing = []
    for name, attr in vars(cls).items():
        function = _function_of(attr)
        if name.startswith("_") or function is None or function.__doc__:
            continue
        if not _documented_by_a_base(cls, name):
            missing.append(name)
    return missing


def _undocumented() -> list[str]:
    missing: list[str] = []
    seen: set[int] = set()
    for module in _modules():
        if not module.__doc__:
            missing.append(f"module {module.__name__}")
        for name in _public_names(module):
            obj = getattr(module, name)
            if not _is_ours(obj) or id(obj) in seen:
                continue  # constants, and names a module re-exports from elsewhere are checked once
            seen.add(id(obj))
            qualified = f"{obj.__module__}.{obj.__qualname__}"
            if not (_class_doc(obj) if inspect.isclass(obj) else obj.__doc__):
                missing.append(qualified)
            if inspect.isclass(obj):
                missing += [f"{qualified}.{member}" for member in _undocumented_members(obj)]
    return missing


def test_every_public_name_has_a_docstring():
    missing = _undocumented()
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


def test_the_check_sees_a_missing_docstring():
    class Documented:
        """A class."""

        def method(self) -> None:
            """A method."""

        @property
        def size(self) -> int:
            """A size."""
            return 0

    class Subclass(Documented):
        """A subclass whose overrides keep the base's docstrings."""

        def method(self) -> None:
            pass

        @property
        def size(self) -> int:
            return 1

        def undocumented(self) -> None:
            pass

        @staticmethod
        def helper() -> None:
            pass

        @property
        def shape(self) -> tuple[int, ...]:
            return ()

    @dataclasses.dataclass
    class Record:
        name: str

    assert _undocumented_members(Documented) == []
    assert sorted(_undocumented_members(Subclass)) == ["helper", "shape", "undocumented"]
    assert _class_doc(Subclass) and not _class_doc(Record)
