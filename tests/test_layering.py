"""The import rules of docs/architecture.md, read from the code so they cannot rot.

Each part of ``relay`` (a top-level module, or a package taken whole) sits in a
layer; it may import its own layer and the layers below, never above. Within
the services layer the parts stay apart except where a rule below allows it.
Imports under ``if TYPE_CHECKING:`` are annotations, not dependencies, and are
not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RELAY = Path(__file__).resolve().parent.parent / "relay"

# Lowest first. A part may import parts of its own layer or of any layer before it.
LAYERS: list[tuple[str, set[str]]] = [
    # Pure: functions of their input, no I/O, no relay state.
    (
        "leaves",
        {
            "bounces",
            "clock",
            "errors",
            "events",
            "message",
            "sandbox",
            "startup",
            "strictjson",
            "template_sandbox",
            "templates",
            "threads",
            "tls",
        },
    ),
    # The vocabulary of the product: settings, keys, messages being built, policies.
    (
        "model",
        {
            "admission",
            "compose",
            "compose_direct",
            "config",
            "config_toml",
            "credentials",
            "dkim",
            "dkim_sign",
            "domains",
            "keys",
            "nodes",
            "ratelimit",
            "renderer",
            "secrets",
            "suppression",
        },
    ),
    ("store", {"store"}),
    # What runs: taking mail in, sending it out, telling applications.
    ("services", {"delivery", "inbound", "listening", "metrics", "submission", "webhooks", "webhook_http"}),
    ("api", {"api", "dashboard"}),  # the HTTP faces: the API, and the dashboard over the same code
    ("entry", {"__main__", "app", "cli", "logs", "workers"}),
]

# Inside the services layer, which part may use which (anything not listed is forbidden).
SERVICES_MAY_IMPORT: dict[str, set[str]] = {
    "delivery": {"metrics"},  # every service may count into the process's own metrics
    "submission": {"metrics"},
    "inbound": {"metrics", "submission"},  # the returned-mail listener reads DATA with the submission's reader
    "webhooks": {"metrics", "webhook_http"},  # the HTTP client webhooks are posted with
    "webhook_http": set(),
    "metrics": set(),
    "listening": set(),  # taking connections that acceptor processes leave waiting
}

# The pure leaves import only other leaves, and bounces only itself and message.
LEAVES_MAY_IMPORT: dict[str, set[str]] = {"bounces": {"message"}}

LAYER_OF = {part: index for index, (_, parts) in enumerate(LAYERS) for part in parts}

# What is on disk: relay's top-level modules and packages.
PARTS = {p.stem for p in RELAY.glob("*.py") if p.stem != "__init__"} | {
    p.name for p in RELAY.iterdir() if (p / "__init__.py").exists()
}


def part_of(module: str) -> str | None:
    """``relay.store.queue`` → ``store``; None outside relay's parts (``relay.__version__`` is a name)."""
    names = module.split(".")
    return names[1] if names[0] == "relay" and len(names) > 1 and names[1] in PARTS else None


def module_name(path: Path) -> str:
    parts = path.relative_to(RELAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    return skipped


def imports_of(path: Path) -> list[tuple[int, str]]:
    package = module_name(path).split(".")
    return imports_in(path.read_text(), package if path.name == "__init__.py" else package[:-1])


def imports_in(source: str, package: list[str]) -> list[tuple[int, str]]:
    """(line, module) for every relay import that runs, at any depth (lazy imports in functions count);
    ``package`` resolves relative imports."""
    tree = ast.parse(source)
    skipped = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module or ""]))
            if node.module is None or module == "relay":  # from relay import x: x is a part
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return [(line, m) for line, m in found if m == "relay" or m.startswith("relay.")]


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` (a part) may not import ``imported`` (a part), or None if it may."""
    if importer == imported:
        return None
    if importer not in LAYER_OF or imported not in LAYER_OF:
        return f"{importer if importer not in LAYER_OF else imported} has no layer in tests/test_layering.py"
    mine, theirs = LAYER_OF[importer], LAYER_OF[imported]
    if theirs > mine:
        return f"{LAYERS[mine][0]} may not import {LAYERS[theirs][0]}"
    if mine == theirs and importer in SERVICES_MAY_IMPORT and imported not in SERVICES_MAY_IMPORT[importer]:
        return f"the service {importer} may not import the service {imported}"
    if importer in LEAVES_MAY_IMPORT and imported not in LEAVES_MAY_IMPORT[importer]:
        return f"{importer} may import only {sorted(LEAVES_MAY_IMPORT[importer])}"
    return None


def all_violations() -> list[str]:
    out = []
    for path in sorted(RELAY.rglob("*.py")):
        importer = part_of(module_name(path))
        for line, module in imports_of(path):
            imported = part_of(module)
            if importer is None or imported is None:
                continue
            why = violation(importer, imported)
            if why:
                out.append(f"{path.relative_to(RELAY.parent)}:{line} imports {module}: {why}")
    return out


def test_every_part_of_relay_has_a_layer():
    parts = {
        p.stem if p.is_file() else p.name for p in RELAY.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    parts.discard("__init__")
    assert parts == set(LAYER_OF), "give new parts a layer here and in docs/architecture.md"


def test_no_import_runs_against_the_layers():
    assert all_violations() == []


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("store", "api", False),  # a lower layer importing a higher one
        ("bounces", "store", False),  # the pure leaf doing I/O
        ("bounces", "suppression", False),  # the leaf tied back to the policy that uses it
        ("webhooks", "delivery", False),  # two services tied together
        ("inbound", "submission", True),
        ("api", "submission", True),
        ("submission", "store", True),
    ],
)
def test_the_rule_itself(importer, imported, allowed):
    assert (violation(importer, imported) is None) is allowed


def test_imports_are_read_as_python_resolves_them():
    """Relative imports resolve against the package; lazy imports count; TYPE_CHECKING imports do not."""
    source = (
        "from typing import TYPE_CHECKING\nfrom . import queue\nfrom ..api import app\nfrom relay import clock\n"
        "if TYPE_CHECKING:\n    from relay.api.app import ApiError\n"
        "def later():\n    import relay.cli\n"
    )
    found = [m for _, m in imports_in(source, ["relay", "store"])]
    assert found == ["relay.store.queue", "relay.api", "relay.clock", "relay.cli"]


def test_serve_with_sqlite_does_not_load_the_postgresql_driver() -> None:
    # psycopg is ~10 MB in every process (the main one and each acceptor); only a PostgreSQL store or
    # `relay store copy` needs it.
    import subprocess
    import sys

    code = "import sys, relay.cli, relay.app; print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=RELAY.parent)
    assert out.stdout.strip() == "[]"
