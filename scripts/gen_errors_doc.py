"""Write docs/errors.md from slugbuild.errors.CATALOG.

    python scripts/gen_errors_doc.py           # (re)write docs/errors.md
    python scripts/gen_errors_doc.py --check   # exit 1 if docs/errors.md is out of date

Everything on the page comes from the code:
- each error kind, in definition order, with its title and templates (CATALOG);
- its stage, from the ``# --- name ---`` comment group it sits under in errors.py
  (STAGE_OVERRIDES corrects kinds filed under the wrong group);
- where it is raised, from the ``errors.NAME.error(...)`` calls in src/slugbuild;
- which commands can meet it, from the raising function (COMMANDS_BY_FUNCTION,
  default ``slugbuild compile``).
The output holds no time, path or other machine-dependent text, so it is stable.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "slugbuild"
OUTPUT = ROOT / "docs" / "errors.md"

sys.path.insert(0, str(SRC))

from slugbuild import errors  # noqa: E402

_GROUP = re.compile(r"^# ---\s+(?P<name>.+?)\s+-+\s*$")

# Kinds errors.py files under a group other than the stage that raises them.
STAGE_OVERRIDES: dict[str, str] = {}

ALL_COMMANDS = ("compile", "run", "inspect", "publish", "lock", "detect", "runtimes", "image",
                "rebase")
# Raising functions reached from more (or other) commands than `slugbuild compile`.
COMMANDS_BY_FUNCTION = {
    "config_vars._without_equals": ("compile", "run"),  # --env and --env-file
    "detect.detect": ("compile", "detect"),
    "procfile._fail": ("compile", "run"),  # parse_procfile also reads a slug's Procfile
    "config_vars.read_env_file": ("run",),
    # .release of a slug is read back by run and inspect too (slug_release)
    "release.parse_release_yaml.invalid": ("compile", "run", "inspect"),
    "slug.inspect.describe_slug": ("inspect", "publish"),
    # the boot check of `compile` reads the packed slug's release as `run` does
    "slug.run.read_release": ("run", "compile"),
    "runtime.resolve.parse_sources": ("compile", "runtimes"),
    "lock.lock_app": ("lock",),
    "lock._lock_input": ("lock",),
    "lock._check_inside_app": ("lock",),
    "lock._pyproject_requirement": ("lock",),
    # The net under every command (cli.main and the library's entry points).
    "errors.from_os_error": ALL_COMMANDS,
    "errors.from_exception": ALL_COMMANDS,
    "cli._check_paths": ALL_COMMANDS,
    "cli._internal_error": ALL_COMMANDS,
    "cli_help.CommandParser.error": ALL_COMMANDS,
}
DEFAULT_COMMANDS = ("compile",)
# Modules whose every raising function serves these commands (a function listed
# above wins): the slug readers.
COMMANDS_BY_MODULE = {
    "slug.archive": ("run", "inspect", "publish"),
    "slug.run": ("run",),
    "slug.inspect": ("inspect", "publish"),
    "slug.publish": ("publish",),
    "oci": ("compile", "image", "rebase"),
}


def commands_of(site: str) -> tuple[str, ...]:
    """The commands that can meet an error raised in ``site`` (``module.function``)."""
    if site in COMMANDS_BY_FUNCTION:
        return COMMANDS_BY_FUNCTION[site]
    module = next((m for m in COMMANDS_BY_MODULE if site.startswith(m + ".")), None)
    return COMMANDS_BY_MODULE[module] if module else DEFAULT_COMMANDS


def stage_groups(source: str) -> dict[str, str]:
    """Variable name of each ErrorKind -> the comment group it is defined under."""
    comments = {}
    for number, line in enumerate(source.splitlines(), start=1):
        match = _GROUP.match(line)
        if match:
            comments[number] = match.group("name")
    groups = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        func = node.value.func
        if not (isinstance(func, ast.Name) and func.id == "ErrorKind"):
            continue
        above = [n for n in comments if n < node.lineno]
        group = comments[max(above)] if above else "general"
        for target in node.targets:
            if isinstance(target, ast.Name):
                groups[target.id] = group
    return groups


class _RaiseFinder(ast.NodeVisitor):
    """Records ``errors.NAME.error`` references with their enclosing class/function."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.stack: list[str] = []
        self.found: set[tuple[str, str]] = set()

    def _visit_scope(self, node: ast.AST) -> None:
        self.stack.append(node.name)  # type: ignore[attr-defined]
        self.generic_visit(node)
        self.stack.pop()

    visit_ClassDef = _visit_scope
    visit_FunctionDef = _visit_scope
    visit_AsyncFunctionDef = _visit_scope

    def visit_Attribute(self, node: ast.Attribute) -> None:
        inner = node.value
        if (
            node.attr == "error"
            and isinstance(inner, ast.Attribute)
            and isinstance(inner.value, ast.Name)
            and inner.value.id == "errors"
        ):
            self.found.add((inner.attr, ".".join([self.module, *self.stack])))
        elif (  # errors.py's own helpers (from_os_error...) name the kinds directly
            self.module == "errors" and self.stack and node.attr == "error"
            and isinstance(inner, ast.Name) and inner.id.isupper()
        ):
            self.found.add((inner.id, ".".join([self.module, *self.stack])))
        self.generic_visit(node)


def raise_sites() -> dict[str, list[str]]:
    """Variable name of each ErrorKind -> sorted ``module.function`` that raise it."""
    sites: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):  # subpackages too (installers/)
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        finder = _RaiseFinder(module.removesuffix(".__init__"))
        finder.visit(ast.parse(path.read_text(), filename=str(path)))
        for name, where in finder.found:
            sites.setdefault(name, set()).add(where)
    return {name: sorted(where) for name, where in sites.items()}


def code_span(text: str) -> str:
    """``text`` as inline code, with a fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def code_block(text: str) -> list[str]:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", *text.splitlines(), fence]


def templates(kind: errors.ErrorKind) -> list[str]:
    """What was found and what to do; for a kind with variants, each variant's found
    text (and its own action where it has one), then the action they share."""
    if not kind.variants:
        return ["", "What was found:", "", *code_block(kind.found),
                "", "What to do:", "", *code_block(kind.action)]
    lines: list[str] = []
    forms: list[str | None] = [None] if kind.found else []
    forms += list(kind.variants)
    shared = False
    for form in forms:
        found, action = kind.templates(form)
        own = form is not None and kind.variants[form].action is not None
        lines += ["", f"### {kind.code}: " + (f'`variant="{form}"`' if form else "no variant"),
                  "", "What was found:", "", *code_block(found)]
        if own:
            lines += ["", "What to do:", "", *code_block(action)]
        shared = shared or not own
    if shared:
        lines += ["", f"### {kind.code}: what to do", "",
                  "Unless the variant says otherwise:", "", *code_block(kind.action)]
    return lines


def render() -> str:
    source = (PACKAGE / "errors.py").read_text()
    groups = stage_groups(source)
    sites = raise_sites()
    variable_of = {
        value.code: name
        for name, value in vars(errors).items()
        if isinstance(value, errors.ErrorKind)
    }
    lines = [
        "<!-- Generated by scripts/gen_errors_doc.py from src/slugbuild/errors.py."
        " Do not edit by hand. -->",
        "",
        "# Errors",
        "",
        "Every error slugbuild reports to a user is one of the kinds below (`errors.CATALOG`).",
        "Each has a stable code, a title, what was found and what to do. The command line",
        "prints it on stderr in herokuish style and exits with status 1:",
        "",
        "```text",
        " !     Error [<code>]: <title>",
        " !",
        " !     <what was found>",
        " !",
        " !     Output (last lines):      (only when a tool failed: its last 30 lines)",
        " !       <tool output>",
        " !",
        " !     <what to do>",
        " !     Documented in docs/errors.md#<code>",
        "```",
        "",
        "With `--json`, a failed command also prints `{\"error\": {\"code\", \"title\", "
        "\"found\", \"action\", \"output\", \"docs\"}}` on stdout (the message above still "
        "goes to stderr).",
        "",
        "The Python API raises a subclass of `slugbuild.SlugbuildError` with the attributes",
        "`code`, `title`, `found`, `action` and `output` (also as `as_dict()`; `render()` gives",
        "the text above), and the values the templates were filled with in `fields` and as",
        "attributes of the same names. Each kind has its own class (`errors.KIND.exception`,",
        "named after the code: `ProcfileMalformedError`), derived from the class of its area,",
        "so a program can catch a whole area or one kind:",
        "",
        "| area class | area | kinds |",
        "| --- | --- | --- |",
        *(f"| `errors.{area.__name__}` | {area.area} | "
          f"{sum(k.area is area for k in errors.CATALOG.values())} |" for area in errors.AREAS),
        "",
        "Templates are shown as written: `{name}` is filled in when the error is raised,",
        "`{name!r}` with the value's `repr()`. A kind whose cause can be one of several",
        "things has variants: the same code and title, each with its own text.",
        "",
        "| code | title | area | stage | commands |",
        "| --- | --- | --- | --- | --- |",
    ]
    sections: list[str] = []
    for code, kind in errors.CATALOG.items():
        variable = variable_of.get(code, "")
        stage = STAGE_OVERRIDES.get(code) or groups.get(variable, "general")
        where = sites.get(variable, [])
        commands: list[str] = []
        for site in where:
            for command in commands_of(site):
                if command not in commands:
                    commands.append(command)
        command_text = ", ".join(f"`slugbuild {c}`" for c in commands) or "none (not raised)"
        title = kind.title.replace("|", "\\|")
        area = f"`{kind.area.__name__}`"
        lines.append(f"| [`{code}`](#{code}) | {title} | {area} | {stage} | {command_text} |")
        names = list(kind.fields)
        sections += [
            "",
            f"## {code}",
            "",
            f"Title: {code_span(kind.title)}",
            "",
            "| | |",
            "| --- | --- |",
            f"| Stage | {stage} |",
            f"| Commands | {command_text} |",
            f"| Raised in | {', '.join(code_span(s) for s in where) or 'nowhere yet'} |",
            f"| Constant | `errors.{variable}` |",
            f"| Class | `errors.{kind.exception.__name__}` (a `{kind.area.__name__}`) |",
            f"| Placeholders | {', '.join(code_span(n) for n in names) or 'none'} |",
            *templates(kind),
        ]
    return "\n".join(lines + sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/errors.md from errors.CATALOG.")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/errors.md is out of date instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.is_file() else None
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date; "
                  "run: python scripts/gen_errors_doc.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
