"""The command line's image parts: ``compile --image``, ``image`` and ``rebase``.

cli.py holds only their parser blocks and a dispatch line; the options shared
by the three (run image, registry credentials) are added here.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .. import errors
from ..arguments import request_timeout
from ..log import Reporter
from ..slug_size import human
from .options import RegistryOptions

if TYPE_CHECKING:
    from .assemble import ImageResult
    from .reference import ImageReference


def add_registry_options(parser: argparse.ArgumentParser) -> None:
    """--registry-user, --registry-password-stdin, --insecure-registry, --registry-timeout."""
    parser.add_argument("--registry-user", metavar="USER",
                        help="registry user (the password is read from standard input with "
                             "--registry-password-stdin); default: the Docker/podman auth "
                             "files ($REGISTRY_AUTH_FILE, ~/.docker/config.json)")
    parser.add_argument("--registry-password-stdin", action="store_true",
                        help="read the registry password (or token) from standard input")
    parser.add_argument("--insecure-registry", action="store_true",
                        help="use plain HTTP for a registry that is not on this machine "
                             "(loopback registries always may)")
    parser.add_argument("--registry-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="seconds each registry request may take (default: 30)")


def add_image_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """--image and --run-image (and the registry options) for compile and image."""
    parser.add_argument("--image", metavar="REF", required=required,
                        help="write an OCI image: oci:DIR[:TAG], docker-archive:FILE[:NAME:TAG] "
                             "or docker://HOST[:PORT]/REPO[:TAG]")
    parser.add_argument("--run-image", metavar="REF",
                        help="the image the slug's layers go on (the stack: an OS with the "
                             "libraries the slug needs), from a layout, an archive or a "
                             "registry")
    add_registry_options(parser)


def registry_options(args: argparse.Namespace, stdin: TextIO | None = None) -> RegistryOptions:
    password: str | None = None
    if args.registry_password_stdin:
        password = read_password(stdin or sys.stdin)
    return RegistryOptions(user=args.registry_user, password=password,
                           insecure=args.insecure_registry,
                           timeout=request_timeout(args.registry_timeout))


# Bytes of standard input read as the registry password: tokens (a cloud's registry
# tokens are a few KiB) fit many times over; `yes | slugbuild ...` does not fill memory.
PASSWORD_LIMIT = 64 * 1024


def read_password(stdin: TextIO) -> str:
    """The password piped to ``--registry-password-stdin`` (one trailing newline
    dropped, as ``docker login --password-stdin``), read as UTF-8 up to PASSWORD_LIMIT
    bytes: more, bytes that are not UTF-8, or a NUL are ``registry-credentials-invalid``."""
    source = getattr(stdin, "buffer", None)
    if source is not None:
        raw: bytes = source.read(PASSWORD_LIMIT + 1)
    else:  # a text stream (tests, the API): its characters, bounded the same way
        raw = stdin.read(PASSWORD_LIMIT + 1).encode("utf-8", "surrogateescape")
    reason = None
    if len(raw) > PASSWORD_LIMIT:
        reason = f"it is longer than {PASSWORD_LIMIT // 1024} KiB"
    elif b"\0" in raw:
        reason = "it holds a NUL byte"
    else:
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            reason = "it is not UTF-8 text"
    raise errors.REGISTRY_CREDENTIALS_INVALID.error(variant="password-unreadable",
                                                    reason=reason)


def _report(result: ImageResult, reporter: Reporter, verb: str) -> None:
    uploaded = result.stats.bytes_uploaded
    pushed = (f"; {result.stats.blobs_uploaded} blob(s), {human(uploaded)} uploaded, "
              f"{result.stats.blobs_mounted} mounted") if result.reference.startswith(
                  "docker://") else ""
    reporter.step(f"Image {verb} {result.reference} ({len(result.layers)} layers, manifest "
                  f"{result.manifest_digest[:19]}…{pushed})")


@dataclass(frozen=True)
class ImagePlan:
    """``compile --image``'s image, checked (and its password read) before the build."""

    image: ImageReference
    run_image: ImageReference | None
    registry: RegistryOptions
    cache_dir: Path | None


def plan_image(args: argparse.Namespace) -> ImagePlan | None:
    """Before ``compile`` does any work: the references parsed, the password read
    (None without --image)."""
    if not args.image:
        return None
    from .reference import parse_image_reference  # its patterns: only with --image

    return ImagePlan(parse_image_reference(args.image),
                     parse_image_reference(args.run_image) if args.run_image else None,
                     registry_options(args), args.cache_dir)


def compile_image(plan: ImagePlan | None, slug: Path, metadata: Path, reporter: Reporter
                  ) -> dict[str, Any] | None:
    """After ``compile``: the image planned (None without one), from the slug and the
    slug.json the build wrote."""
    if plan is None:
        return None
    reporter.step("Building the image...")
    if plan.run_image is None:
        reporter.warn("No --run-image: the image holds only the slug (no operating system), "
                      "a base to copy from, not one to run.")
    from .assemble import build_image  # the image code, only for an image (start-up)

    result = build_image(slug, plan.image, run_image=plan.run_image, cache_dir=plan.cache_dir,
                         registry=plan.registry, metadata=metadata)
    _report(result, reporter, "written to")
    return result.as_dict()


def image_command(args: argparse.Namespace, reporter: Reporter) -> int:
    """``slugbuild image SLUG --image REF [--run-image REF]``."""
    if not args.run_image:
        reporter.warn("No --run-image: the image holds only the slug (no operating system), "
                      "a base to copy from, not one to run.")
    from .assemble import build_image

    result = build_image(args.slug, args.image, run_image=args.run_image,
                         cache_dir=args.cache_dir, registry=registry_options(args),
                         metadata=args.metadata)
    return _done(args, result, reporter, "written to")


def rebase_command(args: argparse.Namespace, reporter: Reporter) -> int:
    """``slugbuild rebase IMAGE --run-image NEW [--image OUT]``."""
    from .assemble import rebase_image

    result = rebase_image(args.source_image, args.run_image, output=args.image,
                          cache_dir=args.cache_dir, registry=registry_options(args))
    return _done(args, result, reporter, "rebased into")


def _done(args: argparse.Namespace, result: ImageResult, reporter: Reporter, verb: str) -> int:
    _report(result, reporter, verb)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0


def check_image_layout(args: argparse.Namespace) -> str:
    """The slug layout for ``compile``: ``heroku`` with --image unless one was named
    (a heroku slug's layer parts are image layers as they are)."""
    if args.layout is not None:
        return str(args.layout)
    return "heroku" if getattr(args, "image", None) else "herokuish"
