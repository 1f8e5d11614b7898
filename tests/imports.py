"""What a module imports, read from its source with `ast`: the layout and package tests check it against rules."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# Calls that import the module named by their first argument, when that argument is a literal.
DYNAMIC_IMPORTS = frozenset({"import_module", "__import__"})


@dataclass(frozen=True)
class Import:
    """One import in a source file: where it is and the dotted module it loads."""

    path: str
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}"


def package_of(path: str) -> str:
    """Return the dotted package a module at `path` (relative, `/`-separated) belongs to, for relative imports."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _dynamic(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in DYNAMIC_IMPORTS or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def imports_in(source: str, path: str) -> Iterator[Import]:
    """Yield every module `source` imports, at any depth (functions, `if` blocks, `try`), literal dynamic ones too.

    `from a import b` yields both `a` and `a.b`: `b` may be a submodule (`from chalice import test`).
    """
    package = package_of(path)
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            yield from (Import(path, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            yield Import(path, node.lineno, module)
            yield from (Import(path, node.lineno, f"{module}.{a.name}") for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call) and (module := _dynamic(node)):
            yield Import(path, node.lineno, module)


def is_within(module: str, names: Iterable[str]) -> bool:
    """Return whether dotted `module` is one of `names` or inside one of them (`moto.server` is in `moto`)."""
    return any(module == name or module.startswith(name + ".") for name in names)


def violations(source: str, path: str, forbidden: Iterable[str]) -> list[Import]:
    """Return the imports of `source` that load a module in `forbidden`, each once per line and top module."""
    forbidden = tuple(forbidden)
    found: dict[tuple[int, str], Import] = {}
    for imported in imports_in(source, path):
        if is_within(imported.module, forbidden):
            top = next(name for name in forbidden if is_within(imported.module, [name]))
            found.setdefault((imported.line, top), imported)
    return sorted(found.values(), key=lambda i: (i.path, i.line, i.module))
