"""Image references: where an image is read from or written to.

The three transports users of skopeo, podman and `pack` know, with their syntax:

- ``oci:DIR[:TAG]``: an OCI image layout directory (the path ends at the first
  ``:``, as skopeo reads it);
- ``docker-archive:FILE[:NAME[:TAG]]``: the tar ``docker load`` and ``podman load``
  read;
- ``docker://HOST[:PORT]/REPO[:TAG|@sha256:…]``: a registry. A first component
  without a ``.`` or ``:`` that is not ``localhost`` is a Docker Hub name, as
  Docker reads it (``docker://python:3.12`` is ``docker.io/library/python:3.12``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import errors

TRANSPORTS = ("oci", "docker-archive", "docker")
DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"

# The distribution project's grammar (reference/regexp.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_MAX_NAME = 255


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference.

    ``transport`` is ``oci``, ``docker-archive`` or ``docker``. ``path`` is set
    for the first two; ``host`` (``HOST[:PORT]``) and ``repository`` for a
    registry (``repository`` is also the image name inside a docker-archive).
    ``tag`` and ``digest`` are ``None`` when the reference names none.
    """

    transport: str
    path: Path | None
    host: str | None
    repository: str | None
    tag: str | None
    digest: str | None

    @property
    def is_registry(self) -> bool:
        return self.transport == "docker"

    @property
    def reference(self) -> str:
        """What to ask a registry for: the digest if given, else the tag (or ``latest``)."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str | None) -> ImageReference:
        """The same place with another tag (and no digest)."""
        return ImageReference(self.transport, self.path, self.host, self.repository, tag, None)

    def __str__(self) -> str:
        if self.transport == "oci":
            return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")
        if self.transport == "docker-archive":
            name = f":{self.repository}" if self.repository else ""
            return f"docker-archive:{self.path}{name}" + (f":{self.tag}" if self.tag else "")
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return f"docker://{self.host}/{self.repository}{suffix}"


def parse_image_reference(text: str) -> ImageReference:
    """The reference ``text`` names; ``image-reference-invalid`` when it names none."""
    scheme, colon, rest = text.partition(":")
    if not colon or scheme not in TRANSPORTS:
        raise errors.IMAGE_REFERENCE_INVALID.error(
            variant="scheme", reference=text,
            schemes=", ".join(f"`{name}:`" for name in TRANSPORTS))
    if scheme == "oci":
        return _parse_layout(text, rest)
    if scheme == "docker-archive":
        return _parse_archive(text, rest)
    if not rest.startswith("//"):
        raise errors.IMAGE_REFERENCE_INVALID.error(
            variant="scheme", reference=text,
            schemes=", ".join(f"`{name}:`" for name in TRANSPORTS) + "; a registry is "
            "written `docker://HOST/REPO`")
    return parse_registry_name(rest[2:], text)


def _parse_layout(text: str, rest: str) -> ImageReference:
    path, _, tag = rest.partition(":")
    if not path:
        raise errors.IMAGE_REFERENCE_INVALID.error(variant="empty-path", reference=text,
                                                   what="layout directory")
    if tag and not _TAG.fullmatch(tag):
        raise errors.IMAGE_REFERENCE_INVALID.error(variant="tag", reference=text, tag=tag)
    return ImageReference("oci", Path(path), None, None, tag or None, None)


def _parse_archive(text: str, rest: str) -> ImageReference:
    path, _, name = rest.partition(":")
    if not path:
        raise errors.IMAGE_REFERENCE_INVALID.error(variant="empty-path", reference=text,
                                                   what="archive file")
    repository: str | None = None
    tag: str | None = None
    if name:
        named = parse_registry_name(name, text, hub_default=False)
        if named.digest:
            raise errors.IMAGE_REFERENCE_INVALID.error(
                variant="digest-not-allowed", reference=text, what="a docker-archive")
        repository = named.repository if named.host is None \
            else f"{named.host}/{named.repository}"
        tag = named.tag or DEFAULT_TAG
    return ImageReference("docker-archive", Path(path), None, repository, tag, None)


def parse_registry_name(name: str, text: str | None = None, *,
                        hub_default: bool = True) -> ImageReference:
    """``[HOST[:PORT]/]REPO[:TAG][@DIGEST]`` as a ``docker`` reference.

    With ``hub_default`` a name without a host is a Docker Hub one (and a
    one-component Hub name is under ``library/``); without it the host stays
    ``None`` (a name inside a docker-archive).
    """
    text = name if text is None else text
    digest: str | None = None
    if "@" in name:
        name, _, digest = name.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise errors.IMAGE_REFERENCE_INVALID.error(variant="digest", reference=text,
                                                       digest=digest)
    first, slash, remainder = name.partition("/")
    host: str | None = None
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        host, name = first, remainder
        if not _HOST.fullmatch(host):
            raise errors.IMAGE_REFERENCE_INVALID.error(variant="host", reference=text, host=host)
    tag: str | None = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise errors.IMAGE_REFERENCE_INVALID.error(variant="tag", reference=text, tag=tag)
    if not name:
        raise errors.IMAGE_REFERENCE_INVALID.error(variant="name", reference=text, name=name,
                                                   reason="it is empty")
    if not _NAME.fullmatch(name):
        reason = "uppercase letters are not allowed" if name.lower() != name and \
            _NAME.fullmatch(name.lower()) else "only lowercase letters, digits and `._-` " \
            "between them, in components separated by `/`"
        raise errors.IMAGE_REFERENCE_INVALID.error(variant="name", reference=text, name=name,
                                                   reason=reason)
    if host is None and hub_default:
        host = DOCKER_HUB
        if "/" not in name:
            name = f"library/{name}"
    full = f"{host}/{name}" if host else name
    if len(full) > _MAX_NAME:
        raise errors.IMAGE_REFERENCE_INVALID.error(
            variant="name", reference=text, name=name,
            reason=f"longer than {_MAX_NAME} characters with its host")
    return ImageReference("docker", None, host, name, tag, digest)
