"""Every third-party module archq imports is declared in pyproject.toml, and the Dockerfile copies every package
pyproject installs: an undeclared import works only while something else happens to pull it in."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _installed_packages() -> list[str]:
    """The top-level packages pyproject installs (its `packages.find` include patterns, without the globs)."""
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(pattern.rstrip("*") for pattern in patterns)


def _imported_modules() -> dict[str, Path]:
    """Each top-level module imported by archq's own code, with one file that imports it."""
    found: dict[str, Path] = {}
    for package in _installed_packages():
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], path)
    return found


def _declared(requirements: list[str]) -> set[str]:
    return {_normalize(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_declared_dependency():
    declared = _declared(PYPROJECT["project"]["dependencies"])
    for extra in PYPROJECT["project"].get("optional-dependencies", {}).values():
        declared |= _declared([r for r in extra if not r.startswith("archq")])
    distributions = packages_distributions()
    own = set(_installed_packages())
    undeclared = {}
    for module, path in _imported_modules().items():
        if module in sys.stdlib_module_names or module in own or module == "__future__":
            continue
        dists = {_normalize(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            undeclared[module] = str(path.relative_to(ROOT))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_dockerfile_copies_every_installed_package():
    copied = set(re.findall(r"^COPY (?:--\S+ )*(\w+) ", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    assert set(_installed_packages()) <= copied, f"missing from the Dockerfile: {set(_installed_packages()) - copied}"


def _closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, with what they require in turn (extras left out)."""
    seen: set[str] = set()
    todo = [_normalize(re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]) for r in requirements]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for requirement in distribution(name).requires or []:
            if "extra ==" not in requirement:
                todo.append(_normalize(re.split(r"[\[<>=!~; (]", requirement, maxsplit=1)[0]))
    return seen


def test_the_client_commands_need_only_the_base_install():
    """`pip install archq` (no extras) is enough for the HTTP client: a laptop compiles nothing."""

    def modules_after(imports: str) -> set[str]:
        probe = f"import sys{imports}; print(' '.join({{m.split('.')[0] for m in sys.modules}}))"
        run = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT)
        return set(run.stdout.split())

    # What the interpreter loads before any import of ours (site hooks) is not the client's doing.
    imported = modules_after(", client.cli, client.commands, client.http, client.output, client.ssh") - modules_after(
        ""
    )
    imported -= set(_installed_packages())
    allowed = _closure(PYPROJECT["project"]["dependencies"])
    distributions = packages_distributions()
    outside = {
        module: distributions[module]
        for module in imported
        if module in distributions and not {_normalize(d) for d in distributions[module]} & allowed
    }
    assert not outside, f"the client imports modules of distributions outside the base install: {outside}"
