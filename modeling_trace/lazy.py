"""Lazy package attributes (PEP 562): a package lists `name -> submodule` and imports a submodule only when one of
its names is first used, so importing the package stays cheap (`trace --help` never imports torch)."""

from __future__ import annotations

import importlib


def lazy_attributes(package: str, names: dict[str, str], namespace: dict):
    """`(__getattr__, __dir__)` for the package `package` whose public `names` map to submodules (relative, e.g.
    `".loops"`, or absolute); a resolved name is cached in the package's `namespace` (its `globals()`)."""

    def __getattr__(name):
        if name in names:
            module = names[name]
            value = getattr(importlib.import_module(module, package if module.startswith(".") else None), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
