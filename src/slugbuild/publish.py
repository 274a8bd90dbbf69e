"""``slugbuild publish``: deploy a slug to a Heroku app through the Platform API.

Three requests, as Heroku documents "Creating Slugs from Scratch":
create the slug (process types, ``SHA256:`` checksum, stack, description),
PUT the tarball to the blob URL the API returns, then create a release of
that slug. The token comes from HEROKU_API_KEY and is never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests

from . import errors
from .inspect_slug import describe_slug
from .log import Reporter
from .release import BUILDPACK_DESCRIPTION

DEFAULT_API_URL = "https://api.heroku.com"
ACCEPT = "application/vnd.heroku+json; version=3"
TIMEOUT = (10, 300)


def publish_slug(
    slug: Path,
    app: str,
    *,
    api_url: str | None = None,
    token: str | None = None,
    stack: str | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Create slug, upload it, release it; return the release object from the API."""
    reporter = reporter or Reporter()
    token = token or os.environ.get("HEROKU_API_KEY")
    if not token:
        raise errors.PUBLISH_NO_TOKEN.error()
    description = describe_slug(Path(slug))
    if description["layout"] != "heroku":
        raise errors.PUBLISH_WRONG_LAYOUT.error(path=slug)
    base = (api_url or os.environ.get("SLUGBUILD_HEROKU_API_URL") or DEFAULT_API_URL).rstrip("/")
    session = requests.Session()
    session.headers.update({"Accept": ACCEPT, "Authorization": f"Bearer {token}"})

    body: dict[str, Any] = {
        "process_types": description["process_types"],
        "checksum": description["checksum"],
        "buildpack_provided_description": BUILDPACK_DESCRIPTION,
    }
    chosen_stack = stack or description.get("stack")
    if chosen_stack and chosen_stack.startswith("heroku-"):
        body["stack"] = chosen_stack
    elif chosen_stack:
        reporter.warn(f"Stack {chosen_stack!r} is not a Heroku stack; the app's stack is used.")
    reporter.step(f"Creating slug on {app}")
    created = _call(session, "POST", f"{base}/apps/{app}/slugs", json=body)
    blob = created.get("blob") or {}
    reporter.step(f"Uploading {description['size']:,} bytes")
    with open(slug, "rb") as handle:
        # An empty Content-Type, as the signed upload URL expects.
        _call(requests, blob.get("method", "put").upper(), blob["url"], data=handle,
              headers={"Content-Type": ""}, expect_json=False)
    reporter.step(f"Releasing slug {created['id']}")
    release = _call(session, "POST", f"{base}/apps/{app}/releases", json={"slug": created["id"]})
    reporter.detail(f"Released v{release.get('version', '?')} of {app}")
    return release


def _call(client, method: str, url: str, expect_json: bool = True, **kwargs) -> dict[str, Any]:
    shown = url.split("?", 1)[0]  # signed URLs carry credentials in the query
    try:
        response = client.request(method, url, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise errors.PUBLISH_UNREACHABLE.error(method=method, url=shown, reason=exc) from exc
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text[:200])
        except ValueError:
            message = response.text[:200] or response.reason
        raise errors.PUBLISH_API_ERROR.error(
            method=method, url=shown, status=response.status_code, message=message
        )
    if not expect_json:
        return {}
    try:
        return response.json()
    except ValueError as exc:
        raise errors.PUBLISH_API_ERROR.error(
            method=method, url=shown, status=response.status_code, message="not JSON"
        ) from exc
