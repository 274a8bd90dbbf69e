"""What ``slugbuild COMMAND --help`` says beyond the options, and how usage errors end.

Every command's help shows each option's default, the environment variables the
command reads, examples, and where the documentation is (docs/cli.md). A usage
error prints the usage of the command it concerns (``slugbuild compile
--bad-flag`` prints compile's) and one catalogue message with its code, and
exits 2 as argparse does.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from . import errors
from .errors import SlugbuildError

USAGE_EXIT = 2
DOCS = "docs/cli.md"

# (variable, the commands that read it, what it does): the help's "Environment:" part.
ENVIRONMENT: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("SLUGBUILD_CACHE_DIR", ("compile", "runtimes", "plan", "image", "rebase", "runtime"),
     "cache directory (else "
     "$XDG_CACHE_HOME/slugbuild, else ~/.cache/slugbuild)"),
    ("SLUGBUILD_PYTHON_PATH", ("compile", "plan", "runtime"), "runtimes to consider first"),
    ("PYENV_ROOT", ("compile", "runtimes", "plan", "runtime"),
     "pyenv root searched for local runtimes"),
    ("SLUGBUILD_PYTHON_SOURCE", ("compile", "runtimes", "plan", "runtime"),
     "runtime sources, as --python-source"),
    ("SLUGBUILD_PYTHON_REGISTRY", ("compile", "runtimes", "plan"),
     "published runtimes, as --python-registry"),
    ("SLUGBUILD_OFFLINE", ("compile", "runtimes", "plan", "runtime"), "1: as --offline"),
    ("SLUGBUILD_PYTHON_DOWNLOAD_URL", ("compile", "runtimes", "plan", "runtime"),
     "runtime index, as --python-download-url"),
    ("SLUGBUILD_HEROKU_PYTHON_URL", ("compile", "runtimes"),
     "base URL of the heroku runtime source"),
    ("SLUGBUILD_ALLOW_EOL_PYTHON", ("compile", "runtimes", "plan"), "1: as --allow-eol-python"),
    ("SLUGBUILD_PYTHON_PATCH_FALLBACK", ("compile",), "1: as --python-patch-fallback"),
    ("SLUGBUILD_BUILD_TIMEOUT", ("compile",), "build time limit in seconds (default 900)"),
    ("SLUGBUILD_MAX_SLUG_SIZE", ("compile", "publish"), "slug size limit, as --max-slug-size"),
    ("SOURCE_DATE_EPOCH", ("compile",), "mtime of the slug's entries"),
    ("STACK", ("compile",), "stack name recorded in slug.json"),
    ("SLUGBUILD_HEARTBEAT_SECONDS", ("compile",),
     "seconds of silence before a 'still ...' line in a non-terminal log (default 30)"),
    ("NO_COLOR", ("compile", "publish", "lock"), "set: no colour with --color auto"),
    ("TERM", ("compile", "publish", "lock"), "dumb: no colour and no spinner with --color auto"),
    ("SLUGBUILD_MAX_SLUG_ENTRIES", ("run", "inspect", "publish"),
     "limits on slugs read (also SLUGBUILD_MAX_UNPACKED_SIZE, SLUGBUILD_MAX_METADATA_SIZE)"),
    ("HEROKU_API_KEY", ("publish",), "the Platform API token (required)"),
    ("SLUGBUILD_HEROKU_API_URL", ("publish",), "Platform API base URL, as --api-url"),
    ("SLUGBUILD_PUBLISH_TIMEOUT", ("publish",), "seconds the publish may take (default 900)"),
    ("REGISTRY_AUTH_FILE", ("compile", "image", "rebase", "runtime"),
     "registry auth file read first (podman's auth.json format)"),
    ("DOCKER_CONFIG", ("compile", "image", "rebase", "runtime"),
     "directory of Docker's config.json (default ~/.docker), read for registry logins"),
    ("SLUGBUILD_VERBOSE", ("compile", "run", "inspect", "publish", "lock", "detect",
                           "runtimes", "plan", "buildpack", "image", "rebase"), "1: as --verbose"),
    ("SLUGBUILD_SHOW_SECRETS", ("compile", "run", "inspect", "publish", "lock", "detect",
                                "runtimes", "plan", "image", "rebase"),
     "1: config var values shown unmasked"),
)

EXAMPLES: dict[str, tuple[str, ...]] = {
    "compile": (
        "slugbuild compile ./myapp",
        "slugbuild compile ./myapp -o build/myapp.tgz --env DJANGO_SETTINGS_MODULE=prod",
        "slugbuild compile ./myapp --layout heroku --json > result.json",
        "slugbuild compile ./myapp -o myapp.tgz --json --metadata-output meta/myapp.json "
        "> myapp.json",
    ),
    "run": ("slugbuild run slug.tgz", "slugbuild run slug.tgz worker --env-file .env",
            "slugbuild run slug.tgz -- python manage.py migrate"),
    "inspect": ("slugbuild inspect slug.tgz", "slugbuild inspect slug.tgz --sizes --json",
                "slugbuild inspect slug.tgz --sbom > slug.cdx.json"),
    "plan": ("slugbuild plan ./myapp", "slugbuild plan ./myapp --json | jq .layers"),
    "publish": ("HEROKU_API_KEY=... slugbuild publish slug.tgz --heroku-app myapp",),
    "runtimes": ("slugbuild runtimes", "slugbuild runtimes --offline --json"),
    "runtime": ("slugbuild runtime publish docker://registry.example.com/team/runtimes "
                "--python 3.12",
                "slugbuild runtime publish ./published-runtimes --python 3.13.0",
                "slugbuild compile ./myapp --python-registry "
                "docker://registry.example.com/team/runtimes"),
    "lock": ("slugbuild lock ./myapp", "slugbuild lock ./myapp --upgrade --generate-hashes"),
    "detect": ("slugbuild detect ./myapp", "slugbuild detect ./repo --app-base backend --json"),
    "buildpack": ("slugbuild buildpack path",
                  "slugbuild buildpack install /tmp/buildpacks/00_python"),
    "image": (
        "slugbuild image slug.tgz --image oci:out/app:v1 --run-image oci:stacks/bookworm",
        "slugbuild image slug.tgz --image docker-archive:app.tar:team/app:v1 --run-image ...",
        "echo \"$TOKEN\" | slugbuild image slug.tgz --image docker://registry.example.com/"
        "team/app:v1 --run-image ... --registry-user ci --registry-password-stdin",
    ),
    "rebase": ("slugbuild rebase docker://registry.example.com/team/app:v1 "
               "--run-image docker://registry.example.com/base/run:v2",),
}


def epilog(command: str) -> str:
    """The text under a command's options: environment, examples, documentation."""
    lines = []
    read = [(name, effect) for name, commands, effect in ENVIRONMENT if command in commands]
    if read:
        lines.append("environment:")
        lines += [f"  {name:<32} {effect}" for name, effect in read]
        lines.append("")
    if EXAMPLES.get(command):
        lines.append("examples:")
        lines += [f"  {example}" for example in EXAMPLES[command]]
        lines.append("")
    lines.append(f"documentation: {DOCS}#slugbuild-{command} (errors: {errors.ERRORS_DOC})")
    return "\n".join(lines)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless it already names one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is argparse.SUPPRESS
                or default is False or default == [] or not action.option_strings
                and action.nargs is None):
            return text
        return f"{text} (default: {default})" if text else f"(default: {default})"


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are catalogue errors (``usage-error``, exit 2),
    printed under the usage of the command they concern."""

    def error(self, message: str) -> NoReturn:
        usage_error(self, errors.USAGE_ERROR.error(prog=self.prog, message=message))


class UsageExit(SystemExit):
    """The exit of a usage error (status 2), carrying the error for ``--json``."""

    def __init__(self, error: SlugbuildError) -> None:
        super().__init__(USAGE_EXIT)
        self.error = error


def usage_error(parser: argparse.ArgumentParser, error: SlugbuildError) -> NoReturn:
    """Print ``parser``'s usage and ``error``, and exit 2 (a usage error)."""
    parser.print_usage(sys.stderr)
    print(error.render(), file=sys.stderr, flush=True)
    raise UsageExit(error)
