"""Process inference: the web command of an app that has no Procfile.

Django -> gunicorn on WSGI_APPLICATION (from settings, else the wsgi.py beside
settings.py); Flask -> gunicorn on the Flask object (or create_app factory);
FastAPI/Starlette -> uvicorn on the app object. Source files are parsed with
``ast``, never imported, so the app's code does not run at build time.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from .detect import AppInfo
from .log import Reporter
from .procfile import read_procfile

# uvicorn binds all interfaces on a dyno; `slugbuild run` sets HOST=127.0.0.1.
UVICORN_BIND = "--host ${HOST:-0.0.0.0} --port $PORT"
# Module files searched for Flask/FastAPI/Starlette app objects, most likely first.
_PREFERRED_MODULES = ("app", "main", "wsgi", "asgi", "application", "server", "api", "run")
_APP_CLASSES = {"Flask": "flask", "FastAPI": "fastapi", "Starlette": "starlette"}
_DISPLAY_NAMES = {"django": "Django", "flask": "Flask", "fastapi": "FastAPI",
                  "starlette": "Starlette"}
_SERVER_OF = {"django": "gunicorn", "flask": "gunicorn", "fastapi": "uvicorn",
              "starlette": "uvicorn"}
_SETTINGS_MODULE = re.compile(
    r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([A-Za-z_][\w.]*)['"]""")
_SKIPPED_DIRS = {"node_modules", "tests", "test", "venv", "env", "staticfiles", "static"}


@dataclass(frozen=True)
class InferredProcess:
    """A process type slugbuild chose because the app did not declare one."""

    process_type: str
    command: str
    framework: str
    server: str
    source: str
    server_installed: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "process_type": self.process_type,
            "framework": self.framework,
            "server": self.server,
            "source": self.source,
            "server_installed": self.server_installed,
        }


def infer_web_process(
    app_dir: Path, info: AppInfo, installed: Iterable[str]
) -> InferredProcess | None:
    """The web process for ``app_dir``, or None when no framework entry point is found."""
    names = {canonicalize_name(name) for name in installed}
    found = _django(app_dir, info.manage_py) if info.manage_py else None
    if found is None:
        found = _app_object(app_dir)
    if found is None:
        return None
    framework, command, source = found
    server = _SERVER_OF[framework]
    return InferredProcess("web", command, framework, server, source, server in names)


def discover_process_types(
    build_dir: Path, info: AppInfo, installed: Iterable[str], reporter: Reporter
) -> tuple[dict[str, str], InferredProcess | None]:
    """Process types from the Procfile; without one, the inferred web process."""
    reporter.step("Discovering process types")
    process_types = read_procfile(build_dir)
    inferred = None
    if process_types:
        reporter.detail("Procfile declares types -> " + ", ".join(sorted(process_types)))
    elif (build_dir / "Procfile").is_file():
        reporter.warn("The Procfile declares no process types.")
    else:
        inferred = infer_web_process(build_dir, info, installed)
        if inferred is None:
            reporter.warn("No Procfile found and no Django, Flask or FastAPI app to start: "
                          "the slug declares no process types. Add a Procfile, e.g. "
                          "`web: gunicorn myapp:app`.")
        else:
            process_types = {"web": inferred.command}
            reporter.detail(f"No Procfile: inferred the web process of the "
                            f"{_DISPLAY_NAMES[inferred.framework]} app ({inferred.source}) -> "
                            f"web: {inferred.command}")
            if not inferred.server_installed:
                reporter.warn(f"The inferred web process needs {inferred.server}, which is "
                              f"not installed: add `{inferred.server}` to "
                              f"{info.lock_file or 'requirements.txt'}, or add a Procfile.")
    if "release" in process_types:
        reporter.detail(f"Release command: {process_types['release']}")
    return process_types, inferred



def _django(app_dir: Path, manage_py: str) -> tuple[str, str, str] | None:
    project = (app_dir / manage_py).parent
    chdir = project.relative_to(app_dir).as_posix()
    prefix = "gunicorn" if chdir == "." else f"gunicorn --chdir {chdir}"
    settings = _settings_module(app_dir / manage_py) or _lone_settings_module(project)
    target: str | None = None
    source = ""  # where ``target`` was found, set with it
    if settings:
        for path in _module_files(project, settings):
            value = _string_assignment(path, "WSGI_APPLICATION")
            if value:
                target, source = value, f"WSGI_APPLICATION in {path.relative_to(app_dir)}"
                break
        if target is None:
            wsgi = settings.rsplit(".", 1)[0] + ".wsgi" if "." in settings else "wsgi"
            wsgi_path = project / (wsgi.replace(".", "/") + ".py")
            if wsgi_path.is_file():
                target = wsgi + ".application"
                source = f"{wsgi_path.relative_to(app_dir)} beside the settings"
    if target is None:
        return None
    module, _, attr = target.rpartition(".")
    spec = module if attr == "application" else f"{module}:{attr}"
    return "django", f"{prefix} {spec}", source


def _settings_module(manage_py: Path) -> str | None:
    try:
        match = _SETTINGS_MODULE.search(manage_py.read_text(errors="replace"))
    except OSError:
        return None
    return match.group(1) if match else None


def _lone_settings_module(project: Path) -> str | None:
    """``pkg.settings`` when exactly one package beside manage.py has a settings.py."""
    found = sorted(p.parent.name for p in project.glob("*/settings.py")
                   if (p.parent / "__init__.py").is_file())
    return f"{found[0]}.settings" if len(found) == 1 else None


def _module_files(root: Path, module: str) -> list[Path]:
    """The file of ``module`` under ``root``; for a package, all of its modules."""
    base = root.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return [base.with_suffix(".py")]
    if (base / "__init__.py").is_file():
        return [base / "__init__.py", *sorted(p for p in base.glob("*.py")
                                               if p.name != "__init__.py")]
    return []


def _string_assignment(path: Path, name: str) -> str | None:
    tree = _parse(path)
    for node in tree.body if tree else []:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)):
            return node.value.value
    return None


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # deeply nested code: RecursionError or MemoryError


def _candidate_modules(app_dir: Path) -> list[tuple[str, Path]]:
    """(module name, file) of top-level modules and packages, likeliest first."""
    found: list[tuple[str, Path]] = []
    for path in sorted(app_dir.glob("*.py")):
        found.append((path.stem, path))
    for package in sorted(p for p in app_dir.iterdir() if p.is_dir()):
        if package.name.startswith(".") or package.name in _SKIPPED_DIRS:
            continue
        if (package / "__init__.py").is_file():
            found.append((package.name, package / "__init__.py"))
            for stem in _PREFERRED_MODULES:
                if (package / f"{stem}.py").is_file():
                    found.append((f"{package.name}.{stem}", package / f"{stem}.py"))

    def rank(item: tuple[str, Path]) -> tuple[int, int, str]:
        last = item[0].rsplit(".", 1)[-1]
        preferred = _PREFERRED_MODULES.index(last) if last in _PREFERRED_MODULES else 99
        return (item[0].count("."), preferred, item[0])

    return sorted(found, key=rank)


def _app_object(app_dir: Path) -> tuple[str, str, str] | None:
    for module, path in _candidate_modules(app_dir):
        tree = _parse(path)
        if tree is None or not module.replace(".", "").replace("_", "").isalnum():
            continue
        found = _find_app(tree)
        if found:
            framework, spec = found
            rel = path.relative_to(app_dir).as_posix()
            if _SERVER_OF[framework] == "uvicorn":
                return framework, f"uvicorn {module}:{spec} {UVICORN_BIND}", rel
            return framework, f"gunicorn '{module}:{spec}'" if "(" in spec else \
                f"gunicorn {module}:{spec}", rel
    return None


def _find_app(tree: ast.Module) -> tuple[str, str] | None:
    """(framework, object or factory call) of the first app made at module level."""
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Call):
            framework = _APP_CLASSES.get(_call_name(node.value))
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if framework and names:
                return framework, names[0]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in ("create_app", "make_app"):
            if any(_APP_CLASSES.get(_call_name(n)) == "flask" for n in ast.walk(node)
                   if isinstance(n, ast.Call)):
                return "flask", f"{node.name}()"
    return None


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""
