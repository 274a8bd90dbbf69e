"""Everything that reads a built slug: ``run``, ``inspect``, ``publish``, the boot check.

None of it imports the builder (the pipeline, its stages and providers): a
machine that only runs or publishes slugs needs none of that, and a reader
cannot come to depend on how a slug happens to be built. What both sides need
lives in small shared modules: ``slug.metadata`` (slug.json's place, package
metadata), ``release`` (reading ``.release``), ``errors``, ``redact``.

- ``archive``: reading a slug tarball safely (every entry checked, bounded).
- ``inspect``: what a slug holds (``slugbuild inspect``).
- ``run``: start a process type from a slug as a dyno would (``slugbuild run``).
- ``boot_check``: prove a packed slug's web process answers HTTP.
- ``publish``: deploy a slug through the Heroku Platform API.
"""
