"""Output targets: where a finished build directory goes, written all or nothing.

A target is checked before any work (an output that could not be written at
the end is refused first) and written last: packed under temporary names,
verified, then renamed into place, so a failed or killed build never leaves
a half-written output. ``SlugTarball`` (slug.tgz and slug.json beside it) is
the one target today; an OCI image would be another implementation of
``OutputTarget``.
"""

from __future__ import annotations

import fcntl
import glob
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import errors, slug_size
from .pack import LayerPart, PackedSlug, pack_tree, source_date_epoch
from .release import write_json
from .slug.metadata import metadata_path_for
from .slug.sbom import SbomInProgress, sbom_path_for, warm_memo

if TYPE_CHECKING:  # readers of slugs use metadata_path_for: they need not load the builder
    from .context import BuildContext

# What the target's writer calls: slug.json for the packed slug (size, sha256), a check of the
# packed slug before it is put in place (the boot check), and its size report.
Describe = Callable[[int, str], dict[str, Any]]
Verify = Callable[[Path], None]
Measure = Callable[[Path, PackedSlug], dict[str, Any]]


class OutputTarget(Protocol):
    """Where a build's result goes."""

    @property
    def leave_out(self) -> list[Path]:
        """Paths of the app directory that are this target's outputs (not sources)."""
        ...

    @property
    def reported_as(self) -> Path:
        """The output as messages name it."""
        ...

    def check(self) -> None:
        """Refuse, before any work, an output that could not be written at the end."""
        ...

    def write(self, tree: Path, layers: Sequence[LayerPart], describe: Describe,
              verify: Verify | None = None, measure: Measure | None = None,
              ) -> tuple[PackedSlug, dict[str, Any]]:
        """Pack ``tree`` and put the result in place; return it and its metadata."""
        ...

    def prepare(self, tree: Path, layers: Sequence[LayerPart], runtime: dict[str, Any]
                ) -> Callable[[], None]:
        """Start, in the background, work ``write`` will want for ``tree`` as it is now
        (best effort: ``write`` redoes whatever is missing or stale); returns a function
        that waits for it, to be called before ``write`` and before ``tree`` goes."""
        ...


class SlugTarball:
    """A Heroku slug: a gzipped tarball, with slug.json beside it."""

    def __init__(self, slug_path: Path, layout: str, epoch: int | None,
                 metadata_path: Path | None = None, sbom_path: Path | None = None) -> None:
        self.slug_path = slug_path
        # slug.json beside the slug unless told (--metadata-output)
        self.metadata_path = (metadata_path if metadata_path is not None
                              else metadata_path_for(slug_path))
        # The CycloneDX SBOM (slug/sbom.py), beside the slug unless told (--sbom-output).
        self.sbom_path = sbom_path if sbom_path is not None else sbom_path_for(slug_path)
        self.layout = layout
        self.epoch = epoch

    @property
    def leave_out(self) -> list[Path]:
        return [path.parent.resolve() / path.name
                for path in (self.slug_path, self.metadata_path, self.sbom_path)]

    @property
    def reported_as(self) -> Path:
        return self.slug_path

    def check(self) -> None:
        check_output_paths(self.slug_path, self.metadata_path, self.sbom_path)

    def prepare(self, tree: Path, layers: Sequence[LayerPart], runtime: dict[str, Any]
                ) -> Callable[[], None]:
        """The SBOM's memo made in a thread (``sbom.warm_memo``): a build after a
        changed requirement makes a new document (the CycloneDX library loaded and
        run, ~0.2 s of CPU) while the entry-point check's interpreter runs, instead
        of after packing. Nothing when no layer is cached (no memo to keep)."""
        memo_dir = _sbom_memo_dir(layers)
        if memo_dir is None:
            return lambda: None
        thread = threading.Thread(
            target=_best_effort, name="sbom-memo", daemon=True,
            args=(warm_memo, tree, source_date_epoch(self.epoch), {"runtime": runtime},
                  memo_dir))
        thread.start()
        return thread.join

    def write(self, tree: Path, layers: Sequence[LayerPart], describe: Describe,
              verify: Verify | None = None, measure: Measure | None = None,
              ) -> tuple[PackedSlug, dict[str, Any]]:
        """Pack the slug and write slug.json under temporary names, then rename both.

        ``verify`` (the boot check) sees the packed slug before anything is renamed:
        when it raises, neither output is written. So does ``measure`` (the size
        breakdown and limit), whose result becomes slug.json's ``sizes``.

        The temporary files are locked (flock) while they are written, which is how
        a later build tells an abandoned one from one still being written, even by
        a build in another container (process ids say nothing there).
        """
        slug_path, json_path, sbom_path = self.slug_path, self.metadata_path, self.sbom_path
        _remove_abandoned_partials(slug_path.parent, (slug_path.name, json_path.name))
        if json_path.parent != slug_path.parent:
            _remove_abandoned_partials(json_path.parent, (json_path.name,))
        _remove_abandoned_partials(sbom_path.parent, (sbom_path.name,))
        suffix = f".{secrets.token_hex(6)}.partial"
        partial_slug = slug_path.with_name(f".{slug_path.name}{suffix}")
        partial_json = json_path.with_name(f".{json_path.name}{suffix}")
        partial_sbom = sbom_path.with_name(f".{sbom_path.name}{suffix}")
        held: list[int] = []
        sbom: SbomInProgress | None = None
        try:
            held += [_locked_new_file(partial_slug), _locked_new_file(partial_json),
                     _locked_new_file(partial_sbom)]
            # From the files about to be packed: what `inspect --sbom` reads from the
            # slug, its document made while the slug is packed (slug.json's runtime
            # fields, all it reads of slug.json, do not depend on the packed bytes).
            sbom = SbomInProgress(tree, source_date_epoch(self.epoch), describe(0, ""),
                                  _sbom_memo_dir(layers))
            with open(held[0], "wb", closefd=False) as handle:
                packed = pack_tree(tree, handle, layout=self.layout, mtime=self.epoch,
                                   layers=layers)
                handle.flush()
                os.fsync(handle.fileno())
            sizes = measure(partial_slug, packed) if measure is not None else None
            if verify is not None:
                verify(partial_slug)
            metadata = describe(packed.size, packed.sha256)
            # Where the cached layers' parts lie in the slug: an image takes them as
            # its runtime and dependency layers without compressing them again.
            metadata["layer_parts"] = [
                {"offset": part.start, "length": part.length, "sha256": part.sha256}
                for part in packed.parts if part.sha256]
            if sizes is not None:
                metadata["sizes"] = sizes
            write_json(partial_json, metadata)
            with open(held[2], "wb", closefd=False) as handle:
                handle.write(sbom.result(packed.sha256, metadata))
            os.replace(partial_slug, slug_path)
            os.replace(partial_json, json_path)
            os.replace(partial_sbom, sbom_path)
        except OSError as exc:
            raise errors.OUTPUT_NOT_WRITABLE.error(
                path=slug_path, reason=exc.strerror or str(exc)
            ) from exc
        finally:
            if sbom is not None:
                sbom.wait()  # nothing of this write runs past it
            for partial in (partial_slug, partial_json, partial_sbom):
                if partial.exists():
                    partial.unlink()
            for fd in held:
                os.close(fd)
        return packed, metadata


def _best_effort(work: Callable[..., None], *args: Any) -> None:
    """Run ``work``; any failure is left for the real work to meet and report."""
    try:
        work(*args)
    except Exception:  # noqa: BLE001 - the write makes it again, or reports it
        pass


def _sbom_memo_dir(layers: Sequence[LayerPart]) -> Path | None:
    """Where the SBOM made for these layers is kept: the last cached layer's packed/
    directory (its key holds every input, so any directory of the cache would do;
    this one goes when the layer goes). None when no layer was cached."""
    return layers[-1].packed_dir if layers else None


def check_output_paths(slug_path: Path, json_path: Path, sbom_path: Path | None = None
                       ) -> None:
    """Refuse, before any work, outputs that could not be written at the end."""
    outputs = (slug_path, json_path) + ((sbom_path,) if sbom_path is not None else ())
    for path in outputs:
        if path.is_dir():
            raise errors.OUTPUT_NOT_WRITABLE.error(
                variant="is-directory", path=path, suggested=path / "slug.tgz")
        if path.is_symlink() or (path.exists() and not path.is_file()):
            # The output is renamed into place: a device (-o /dev/null), a fifo or a
            # link there would be replaced by a regular file, not written through.
            raise errors.OUTPUT_NOT_WRITABLE.error(variant="not-regular-file", path=path)
    if os.path.abspath(slug_path) == os.path.abspath(json_path):
        raise errors.OUTPUT_NOT_WRITABLE.error(variant="metadata-is-slug", path=slug_path)
    if sbom_path is not None and os.path.abspath(sbom_path) in (
            os.path.abspath(slug_path), os.path.abspath(json_path)):
        raise errors.OUTPUT_NOT_WRITABLE.error(variant="sbom-is-other-output", path=sbom_path)
    for path in dict.fromkeys(outputs):
        if not path.parent.is_dir():
            raise errors.OUTPUT_NOT_WRITABLE.error(variant="no-directory", path=path)
        try:  # access() says yes to root on a read-only filesystem: really write
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".slugbuild-probe-"):
                pass
        except OSError as exc:
            raise errors.OUTPUT_NOT_WRITABLE.error(
                variant="directory-not-writable", path=path, reason=exc.strerror or exc
            ) from exc



def _locked_new_file(path: Path) -> int:
    """Create ``path`` and hold an exclusive flock on it (a descriptor to close)."""
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # removed by a cleaner between the open and the lock: again


def _remove_abandoned_partials(directory: Path, names: tuple[str, ...]) -> None:
    """Delete ``.NAME.*.partial`` files that builds of these outputs left when killed:
    those nobody holds a lock on. Only for the ``names`` this build writes: other
    files are not ours to judge."""
    for name in names:
        for partial in directory.glob(f".{glob.escape(name)}.*.partial"):
            try:
                fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.path.samestat(os.fstat(fd), os.stat(partial)):
                    partial.unlink()
            except OSError:
                pass  # being written (locked), or gone meanwhile
            finally:
                os.close(fd)


def write_output(build: BuildContext, target: OutputTarget, layers: Sequence[LayerPart],
                 describe: Describe, boot_timeout: float | None
                 ) -> tuple[PackedSlug, dict[str, Any]]:
    """Write ``target`` from the build directory: measured against the size limit and,
    with ``boot_timeout``, boot-checked before it is put in place."""

    def verify(packed_slug: Path) -> None:
        # Loaded only for a boot check: it brings the slug runner (sockets, processes).
        from .slug.boot_check import check_boot

        assert boot_timeout is not None
        with build.timer.stage("boot_check"):
            build.reporter.step("Checking that the slug boots (web process, "
                                f"{boot_timeout:g} s at most)...")
            booted = check_boot(packed_slug, config_vars=build.config_vars,
                                timeout=boot_timeout, workdir=build.scratch / "boot-check",
                                reported_as=target.reported_as)
            build.reporter.detail(f"web answered `{booted.status_line}` after "
                                  f"{booted.seconds:.1f} s")

    def measure(packed_slug: Path, packed: PackedSlug) -> dict[str, Any]:
        with build.timer.stage("slug_size"):
            return slug_size.report(packed_slug, build.layout, build.size_cap, build.reporter,
                                    tuple(build.static_dirs), parts=packed.parts)

    return target.write(build.build_dir, layers, describe,
                        verify if boot_timeout is not None else None, measure)
