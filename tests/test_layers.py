"""The package's layering, checked from the source: imports only go downward.

Layers, lowest first: imaging < artifacts < models < prompts < tools < retrieval < agents <
evals < the entry points (cli, server, mcp_server, ``medagent/__init__.py``). Three rules, on
every import of every file (module level, inside functions, under ``TYPE_CHECKING``):

- no upward import;
- no import of another package's private module (``medagent.X._y`` from outside ``X``);
- no agent folder importing another agent folder, and the shared agent modules import none.

Placement decisions the table below encodes:

- ``errors``, ``settings``, ``_files``, ``_asgi``, ``_hosts``, ``_ray``, ``_trace``, ``_version``:
  small shared modules every layer may use (``models.build_model`` takes a ``Settings``), so
  they import no layer themselves.
- ``testing/`` (test doubles shipped to users) sits with the entry points: it builds on models,
  and library code must never depend on test support.
- ``studio.py`` (graph factories for LangGraph Studio) builds every agent's graph: an entry
  point beside ``cli/``, not a module of ``agents/``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "medagent"

#: Shared top-level modules: importable from every layer, importing no layer.
SHARED_MODULES = frozenset(
    {"errors", "settings", "_files", "_asgi", "_hosts", "_ray", "_trace", "_version"}
)
#: Layers lowest first; a module may import its own layer and those before it.
LAYERS = (
    "shared",
    "imaging",
    "artifacts",
    "models",
    "prompts",
    "tools",
    "retrieval",
    "agents",
    "evals",
    "entry",
)
ENTRY_PACKAGES = frozenset({"cli", "server", "mcp_server", "testing"})
ENTRY_MODULES = frozenset({(), ("__main__",), ("studio",)})
#: Agent modules every agent may use; they import no agent folder.
SHARED_AGENT_MODULES = frozenset({"base", "_answers", "_page", "__init__"})


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.detail}"


def module_parts(path: Path, root: Path) -> tuple[str, ...]:
    """``medagent/agents/giant/_graph.py`` -> ("agents", "giant", "_graph"); packages drop
    ``__init__`` (``medagent/__init__.py`` -> ())."""
    parts = path.relative_to(root).with_suffix("").parts[1:]
    return parts[:-1] if parts and parts[-1] == "__init__" else parts


def layer_of(parts: tuple[str, ...]) -> str:
    """The layer a module (parts below ``medagent``) belongs to."""
    if parts in ENTRY_MODULES or (parts and parts[0] in ENTRY_PACKAGES):
        return "entry"
    if parts[0] in SHARED_MODULES:
        return "shared"
    if parts[0] not in LAYERS:
        raise AssertionError(f"medagent.{'.'.join(parts)} has no layer: add it to test_layers")
    return parts[0]


def private_package(parts: tuple[str, ...]) -> tuple[str, ...] | None:
    """The package whose private module ``parts`` names, or None when nothing is private.

    Top-level private helpers (``medagent._files``) are shared by design, so they count as
    public."""
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__") and index > 0:
            return parts[:index]
    return None


def agent_folder(parts: tuple[str, ...], packages: set[tuple[str, ...]]) -> str | None:
    """The agent folder a module lies in (``agents/giant/...`` -> "giant"), else None."""
    if len(parts) >= 2 and parts[0] == "agents" and parts[:2] in packages:
        return parts[1]
    return None


def imported_modules(
    tree: ast.Module, own: tuple[str, ...], is_package: bool, known: set[tuple[str, ...]]
) -> list[tuple[int, tuple[str, ...]]]:
    """Every ``medagent`` module a file imports, with its line, as parts below ``medagent``.

    ``from medagent.agents import giant`` names the module ``agents.giant`` when it is one."""
    found: set[tuple[int, tuple[str, ...]]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names = tuple(alias.name.split("."))
                if names[0] == PACKAGE:
                    found.add((node.lineno, names[1:]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own if is_package else own[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = base + tuple(node.module.split(".")) if node.module else base
            elif node.module and node.module.split(".")[0] == PACKAGE:
                target = tuple(node.module.split("."))[1:]
            else:
                continue
            for alias in node.names:
                submodule = (*target, alias.name)
                found.add((node.lineno, submodule if submodule in known else target))
    return sorted(found)


def check_file(
    parts: tuple[str, ...], is_package: bool, tree: ast.Module, known: set[tuple[str, ...]]
) -> list[Violation]:
    """The layer rules broken by one module's imports; ``known`` holds every module's parts."""
    packages = {module[:end] for module in known for end in range(1, len(module))}
    name = (
        "/".join((PACKAGE, *parts, "__init__.py"))
        if is_package
        else "/".join((PACKAGE, *parts)) + ".py"
    )
    own_layer = layer_of(parts) if parts else "entry"
    own_agent = agent_folder(parts, packages | ({parts} if is_package else set()))
    found: list[Violation] = []
    for line, target in imported_modules(tree, parts, is_package, known):
        target_layer = layer_of(target) if target else "entry"
        if LAYERS.index(target_layer) > LAYERS.index(own_layer):
            found.append(
                Violation(
                    name,
                    line,
                    "upward import",
                    f"{own_layer} imports medagent.{'.'.join(target)} ({target_layer})",
                )
            )
        private = private_package(target)
        if private is not None and parts[: len(private)] != private:
            found.append(
                Violation(
                    name,
                    line,
                    "private import",
                    f"medagent.{'.'.join(target)} is private to medagent.{'.'.join(private)}; "
                    "import it from the package instead",
                )
            )
        target_agent = agent_folder(target, packages)
        in_agents = own_layer == "agents"
        if in_agents and target_agent is not None and target_agent != own_agent:
            who = f"agents/{own_agent}" if own_agent else "a shared agent module"
            found.append(
                Violation(
                    name,
                    line,
                    "agent imports another agent",
                    f"{who} imports medagent.{'.'.join(target)}",
                )
            )
    return found


def source_modules(root: Path) -> list[tuple[Path, tuple[str, ...], bool]]:
    """Every module under ``root/medagent``: its file, its parts, whether it is a package."""
    return [
        (path, module_parts(path, root), path.name == "__init__.py")
        for path in sorted((root / PACKAGE).rglob("*.py"))
    ]


def check_tree(root: Path) -> list[Violation]:
    modules = source_modules(root)
    known = {parts for _, parts, _ in modules}
    violations: list[Violation] = []
    for path, parts, is_package in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        violations += check_file(parts, is_package, tree, known)
    return violations


def test_imports_follow_the_layers() -> None:
    violations = check_tree(SOURCE_ROOT)
    assert not violations, "layer rules broken:\n" + "\n".join(map(str, violations))


def _check_source(source: str, parts: tuple[str, ...], *extra: tuple[str, ...]) -> list[str]:
    known = {parts, *extra}
    return [str(v) for v in check_file(parts, False, ast.parse(source), known)]


def test_checker_catches_an_upward_import_inside_a_function() -> None:
    source = "def f():\n    from medagent.agents.giant import GiantConfig\n"
    (message,) = _check_source(source, ("models", "_factory"))
    assert message.startswith("medagent/models/_factory.py:2: upward import:")


def test_checker_catches_an_upward_import_under_type_checking() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import medagent.tools\n"
    (message,) = _check_source(source, ("imaging", "_pil"))
    assert message.startswith("medagent/imaging/_pil.py:3: upward import:")


def test_checker_catches_a_cross_package_private_import() -> None:
    source = "from medagent.models._check import check_model\n"
    (message,) = _check_source(source, ("cli", "_model"))
    assert message.startswith("medagent/cli/_model.py:1: private import:")
    assert _check_source(source, ("models", "_factory")) == []


def test_checker_resolves_private_submodules_named_in_from_imports() -> None:
    source = "from medagent.evals import _methods\n"
    (message,) = _check_source(source, ("cli", "_eval"), ("evals", "_methods"))
    assert "private import" in message


def test_checker_catches_one_agent_importing_another() -> None:
    source = "from medagent.agents.chat import build_chat_graph\n"
    chat = ("agents", "chat", "_graph")
    (message,) = _check_source(source, ("agents", "giant", "_graph"), chat)
    assert message.startswith("medagent/agents/giant/_graph.py:1: agent imports another agent:")
    assert _check_source(source, chat) == []
    assert (
        _check_source(
            "from medagent.agents.base import RunManifest\n", ("agents", "giant", "_graph")
        )
        == []
    )


def test_checker_accepts_shared_modules_from_every_layer() -> None:
    source = "from medagent.errors import InputError\nfrom medagent._files import write_json\n"
    assert _check_source(source, ("imaging", "_pil")) == []
