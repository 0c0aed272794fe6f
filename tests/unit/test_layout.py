"""The package's dependency rules: imports point one way, only one module
imports docker-py, and no module imports a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parents[2] / "backend"
# A subpackage may import the ones listed after it, never one before it.
# `auth` (identities, sign-in, audit) sits beside storage: the web layer and
# the runs may know who is calling; auth knows nothing of either.
LAYERS = ["web", "runs", "auth", "storage", "engines"]


def imports_of(path: Path) -> set[str]:
    """Absolute names of the backend modules and third-party packages imported."""
    package = path.relative_to(BACKEND.parent).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            names.add(module)
    return names


def modules() -> list[Path]:
    return sorted(BACKEND.rglob("*.py"))


def test_only_the_docker_engines_import_docker() -> None:
    importers = [
        str(path.relative_to(BACKEND))
        for path in modules()
        if any(name == "docker" or name.startswith("docker.") for name in imports_of(path))
    ]
    assert importers == ["engines/docker.py", "engines/swarm.py"]


def test_no_layer_imports_one_above_it() -> None:
    wrong = []
    for path in modules():
        parts = path.relative_to(BACKEND).parts
        if len(parts) < 2 or parts[0] not in LAYERS:
            continue
        above = LAYERS[: LAYERS.index(parts[0])]
        for name in imports_of(path):
            if any(name.startswith(f"backend.{layer}") for layer in above):
                wrong.append(f"{'/'.join(parts)} imports {name}")
    assert wrong == []


def test_the_shared_modules_import_no_layer() -> None:
    wrong = []
    for path in BACKEND.glob("*.py"):
        if path.name == "cli.py":  # the entry point builds the app
            continue
        for name in imports_of(path):
            if any(name.startswith(f"backend.{layer}") for layer in LAYERS):
                wrong.append(f"{path.name} imports {name}")
    assert wrong == []
