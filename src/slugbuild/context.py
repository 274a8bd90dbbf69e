"""The build context: what every stage of one build receives.

One ``BuildContext`` per ``compile_app`` call. It holds the build's inputs
(app, config vars, layout, constraints), its places (the build directory and
the scratch directory in the cache), and the bookkeeping the stages share:
which cached layers were placed into the build directory and where (packed
as ready-made parts, checked for changes before packing), and the paths of
this machine that no file of the slug may name.

Buildpacks (the built-in Python and Node steps, and external ones) share one
interface, ``Buildpack``: each gets a ``BuildpackTurn`` (what the buildpacks
before it left) and returns a ``BuildpackRun`` (what slug.json and .release
need to know of it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import errors, platform_info, slug_size
from .cache import Cache, Layer, LayerChanged, Restored, TreeCheck, default_cache_dir
from .layer_artifact import ArtifactInvalid, ensure_tree, kept_part_name, part_listing
from .layer_overlay import OverlayRun, mechanism, overlay_wanted, step_started
from .layer_view import LayerView, ViewConflict
from .log import Reporter, current_stage
from .pack import LayerPart, layer_part_name, prepare_layer_part
from .proc import check_deadline
from .release import ReleaseInfo
from .stack_compat import STACK_RECORD, keep_stack_record, stack_record_kept
from .step_jail import CacheSeal

PYTHON_HOME = ".heroku/python"  # where the runtime and packages go
# How often a layer whose files another build changed while this one read them is
# made again before the build gives up (cache-layer-changing).
RESTORE_ATTEMPTS = 3
T = TypeVar("T")


class CacheStore(Protocol):
    """What a build asks of its store of layers (runtime, dependencies, system packages,
    data). ``cache.Cache``, a local directory, is the one store today; a store backed
    by an OCI registry would be another."""

    @property
    def root(self) -> Path:
        """A local directory for what never leaves the machine (locks, tool caches)."""
        ...

    def lookup_verified(self, kind: str, name: str, key: str,
                        extra_check: TreeCheck | None = None
                        ) -> tuple[Layer | None, list[str]]:
        """The layer ``kind/name`` made under ``key``, if there and intact."""
        ...

    def new_layer(self, kind: str, name: str, key: str, inputs: dict[str, Any],
                  check: TreeCheck | None = None, draft: dict[str, Any] | None = None,
                  ) -> AbstractContextManager[Path]:
        """A tree to fill; published as the layer when the block ends without error."""
        ...

    def restore(self, layer: Layer, target: Path, copy: bool = False) -> Restored:
        """The layer's files placed at ``target`` (hard links, or copies)."""
        ...

    def check_restored(self, layer: Layer) -> set[tuple[int, int]] | None:
        """The placed files' inodes if none was changed in place (else discarded)."""
        ...

    def still_pristine(self, layer: Layer) -> bool:
        """Whether the layer's files are as published."""
        ...

    def discard(self, layer: Layer) -> None:
        ...

    def release_links(self, layer: Layer, mounted: Path) -> None:
        """The build is done with the hard links to ``layer`` it placed at ``mounted``."""
        ...

    def lock(self, kind: str, name: str) -> AbstractContextManager[None]:
        """Held while ``kind/name`` is looked up and made: one build makes it."""
        ...

    def exclusive_links(self) -> AbstractContextManager[bool]:
        """The link lock, if free: whether this build may hard-link layers."""
        ...

    def scratch_dir(self, label: str) -> Path:
        """A new private directory, removed by the store if its build dies."""
        ...


if TYPE_CHECKING:
    def _local_directory_is_a_store(cache: Cache) -> CacheStore:
        return cache  # mypy checks cache.Cache against the protocol here


class StageTimer:
    """Seconds per stage (BuildResult.timings); a stage starts by checking the deadline."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, deadline: bool = True) -> Iterator[None]:
        if deadline:
            check_deadline(f"the {name} stage")  # stages that run no tool stop here
        start = time.perf_counter()
        named = current_stage.set(name)  # the stage the log's events name
        try:
            yield
        finally:
            current_stage.reset(named)
            self.timings[name] = round(time.perf_counter() - start, 3)


@dataclass(frozen=True)
class PlacedLayer:
    """A cached layer whose files were put into the build directory at ``mount``.

    ``placed.copies`` holds the build's own copies of its files (None: hard links).
    """

    layer: Layer
    mount: str
    placed: Restored

    def part(self, cache: Cache, view_links: frozenset[str] = frozenset()) -> LayerPart:
        """The layer as a ready-made part of the packed slug (``view_links``: the
        build directory's links of a view, when the layer is shown by one)."""
        listing = None
        if _part_only(self.layer):  # its entries from its index, not its tree
            listing = tuple(part_listing(self.layer).scanned())
        return LayerPart(self.mount, self.layer.tree, self.layer.packed_parts,
                         copies=self.placed.copies, symlinks=self.placed.symlinks,
                         unchanged=partial(cache.still_pristine, self.layer),
                         view_links=view_links if self.placed.view else None,
                         listing=listing)


@dataclass
class BuildContext:
    """Everything the stages share; one per compile_app call."""

    app_dir: Path
    build_dir: Path
    scratch: Path
    cache: Cache
    platform: platform_info.Platform
    config_vars: dict[str, str]
    reporter: Reporter
    timer: StageTimer
    layout: str = "herokuish"
    epoch: int | None = None  # source_date_epoch as given to compile_app
    constraints: str | None = None  # pins from an earlier slug.json (--constraints-from)
    # Whether layers are copied into build_dir (another build holds the cache's
    # link lock) rather than hard-linked (see cache.Cache.exclusive_links).
    copy_layers: bool = False
    # Cached layers placed into build_dir, in order (fresh ones included).
    placed_layers: list[PlacedLayer] = field(default_factory=list)
    # The Aptfile's packages unpacked into .apt/ (name, version, architecture).
    system_packages: list[dict[str, str]] = field(default_factory=list)
    # Compresses the placed layers' slug parts (and removes scratch) while the
    # build goes on; shut down before the layers are checked.
    background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1))
    # Files of a layer that name a path of the machine that made it (found when it
    # was made), by layer path: reported by every build that uses the layer.
    layer_host_paths: dict[Path, list[tuple[Path, str]]] = field(default_factory=dict)
    # Other paths of this machine no file may name: the local prefix the runtime
    # was copied from.
    host_paths: list[str] = field(default_factory=list)
    # The compressed slug size allowed (slug_size.size_limit).
    size_cap: slug_size.SizeLimit = field(
        default_factory=lambda: slug_size.SizeLimit(slug_size.HEROKU_SLUG_LIMIT, False, ""))
    # Top-level directories collectstatic created (its output, in the size breakdown).
    static_dirs: list[str] = field(default_factory=list)
    # Compressed sizes of the placed layers' slug parts, as they are prepared.
    part_sizes: list[Future[int]] = field(default_factory=list)
    # Layers hard-linked by a step other than place_layer, and where (released at close).
    linked_elsewhere: list[tuple[Layer, Path]] = field(default_factory=list)
    # What the build holds until it ends: the cache's link lock.
    held: ExitStack = field(default_factory=ExitStack)
    # Whether cached layers may be shown by a view (layer_view.py) until a step needs
    # their files; the views by mount.
    use_views: bool = False
    views: dict[str, LayerView] = field(default_factory=dict)
    # Set when an overlay's namespace or mount failed at a step: the later steps
    # materialise without trying again.
    overlay_failed: bool = False
    # What the steps that run code slugbuild did not write may write of the cache
    # (step_jail.py): the build's scratch, nothing else unless named.
    seal: CacheSeal = field(init=False)

    def __post_init__(self) -> None:
        self.seal = CacheSeal(self.cache.root, self.scratch,
                              partial(self.cache.scratch_dir, "seal"), self.reporter)

    def take_link_lock(self) -> None:
        """Hold the cache's link lock if free, until ``close``: while this build may
        hard-link cached files, no other build does (they copy), so no build step
        elsewhere can write them. Without it, layers are copied (``copy_layers``)."""
        self.copy_layers = not self.held.enter_context(self.cache.exclusive_links())

    def release_links_at_close(self, mounted: Path) -> Callable[[Layer], None]:
        """What notes a layer whose files a step hard-linked at ``mounted`` outside
        ``place_layer`` (a reused collectstatic output): ``close`` hands them back."""
        return lambda layer: self.linked_elsewhere.append((layer, mounted))

    def close(self) -> None:
        """End the build's background work, hand its hard links back to the cache,
        release the link lock, dispose of the scratch directory and the layers made
        for this build alone."""
        self.background.shutdown(wait=True, cancel_futures=True)
        for entry in self.placed_layers:  # while the link lock is held
            if entry.placed.copies is None and not entry.placed.view:
                self.cache.release_links(entry.layer, self.build_dir / entry.mount)
        for layer, mounted in self.linked_elsewhere:
            self.cache.release_links(layer, mounted)
        self.held.close()
        self.cache.release_uses()
        self.seal.close()
        # Deleted by a detached process (cache.Cache.dispose): not on the build's time.
        self.cache.dispose(self.scratch)
        for entry in self.placed_layers:
            if not entry.layer.published:  # installed for this build alone
                self.cache.dispose(entry.layer.path)

    @property
    def machine_paths(self) -> list[str]:
        """What no file of the slug may name: this build's directories, the cache
        (installer caches, sdist builds) and the runtime's local prefix."""
        return [str(self.build_dir), str(self.scratch), str(self.cache.root),
                *self.host_paths]

    def place_layer(self, layer: Layer, mount: str, placed: Restored | None = None,
                    host_paths: list[tuple[Path, str]] | None = None) -> None:
        """Note a layer put at ``mount``; start compressing its slug part.
        ``placed``: the build's own copies of its files (None: hard links).
        ``host_paths``: its files that name a path of the machine that made it."""
        entry = PlacedLayer(layer, mount, placed or Restored())
        self.placed_layers.append(entry)
        self.part_sizes.append(self.background.submit(
            prepare_layer_part, entry.part(self.cache), self.layout, self.epoch))
        if entry.placed.view and not _part_only(layer):  # read by stack_requirements
            # (a part-only layer's record came with its part, else viewed_tree writes
            # its tree first: no tree is read here that is not there)
            self.background.submit(keep_stack_record, layer.tree,
                                   layer.packed_parts / STACK_RECORD)
        if host_paths is not None:
            self.layer_host_paths[layer.path] = host_paths

    def show_layer(self, layer: Layer, mount: str) -> Restored:
        """Put the layer at ``mount`` for reading: by a view when views are allowed and
        the layers there do not overlap, else placed (``cache.restore``). Its
        ``place_layer`` is the caller's."""
        if layer.lazy and not self._viewable(layer, mount):
            self.tree_of(layer)
        if self.use_views and (mount in self.views or not self._placed_at(mount)):
            view = self.views.setdefault(mount, LayerView(self.build_dir, mount))
            try:
                view.add(layer.tree, part_listing(layer) if _part_only(layer) else None)
                return Restored(view=True)
            except (ViewConflict, OSError, ArtifactInvalid):
                self.materialise()
        self.tree_of(layer)
        return self.cache.restore(layer, self.build_dir / mount, copy=self.copy_layers)

    def _viewable(self, layer: Layer, mount: str) -> bool:
        """Whether a part-only layer can be shown as it is: by a view, with its kept
        part the one this slug's layout and mount need."""
        return self.use_views and kept_part_name(layer) == layer_part_name(
            self.layout, mount, self.epoch)

    def tree_of(self, layer: Layer) -> Layer:
        """``layer`` with its tree written (layer_artifact.ensure_tree): the one way a
        build gets a part-only layer's files. A part or record found wrong discards
        the layer and is LayerChanged (the caller makes it again, as for a layer
        changed while read)."""
        if not _part_only(layer):
            return layer
        try:
            return ensure_tree(self.cache, layer)
        except (ArtifactInvalid, OSError) as exc:
            raise LayerChanged(f"{layer.path.name}: {exc}") from exc

    def _placed_at(self, mount: str) -> bool:
        return any(entry.mount == mount for entry in self.placed_layers) \
            or (self.build_dir / mount).exists()

    def materialise(self, copy: bool = False) -> None:
        """Replace every view by its layers' files (a step is about to run a program of
        the slug or write into it): restored as hard links or copies (``copy``: copies
        whatever the link lock, for a build whose steps write into the prefix), in the
        order the layers were placed. Views are not used again in this build."""
        self.use_views = False
        if not self.views:
            return
        for view in self.views.values():
            view.remove()
        self.views.clear()
        for index, entry in enumerate(self.placed_layers):
            if not entry.placed.view:
                continue
            try:
                layer = self.tree_of(entry.layer)
                placed = self.cache.restore(layer, self.build_dir / entry.mount,
                                            copy=self.copy_layers or copy)
            except LayerChanged as changed:
                self.layer_changed(entry.layer, changed, RESTORE_ATTEMPTS - 1)  # raises
                raise
            self.placed_layers[index] = PlacedLayer(layer, entry.mount, placed)

    def step_layers(self, step: str) -> StepLayers:
        """How ``step`` (it runs a program of the slug) reaches the layers: in place
        through an overlay when they are shown by a view, else materialised."""
        return StepLayers(self, step)

    def overlay(self) -> OverlayRun | None:
        """An overlay of the viewed layers' cached trees for one step (layer_overlay.py),
        or None: no view, the overlay turned off or not allowed here, or the mount
        holds more than the layers."""
        if not self.views or not overlay_wanted() or self.overlay_failed:
            return None
        found = mechanism(self.scratch)
        if found is None:
            return None
        layers: list[tuple[str, list[Path]]] = []
        read_only: list[Path] = []
        for mount, view in self.views.items():
            if not view.holds_only_layers():
                return None
            viewed = [entry.layer for entry in self.placed_layers
                      if entry.placed.view and entry.mount == mount]
            # A layer pulled from the cache registry may be kept as its part only
            # (issue 17): its tree is written before it is a lower layer; if that
            # fails, the layers are materialised instead (which reports it).
            try:
                viewed = [self.tree_of(layer) for layer in viewed]
            except LayerChanged:
                return None
            if not all(layer.tree.is_dir() for layer in viewed):
                return None
            layers.append((mount, [layer.tree for layer in reversed(viewed)]))
            read_only += [layer.path for layer in viewed]
        return OverlayRun.prepare(self.build_dir, self.scratch, found, layers, read_only)

    def view_links(self) -> frozenset[str]:
        """The views' links in the build directory (relative paths): not the slug's."""
        return frozenset(rel for view in self.views.values() for rel in view.links)

    def layer_changed(self, layer: Layer | None, changed: LayerChanged,
                      attempt: int) -> None:
        """A layer's file changed while this build copied or hashed it: another build,
        holding the link lock, edited it in place (through uv's cache, for a layer just
        installed). Discard the layer (it is made again), or give up."""
        if layer is not None and layer.published:
            self.cache.discard(layer)
        name = layer.path.name if layer is not None else "being made"
        if attempt + 1 == RESTORE_ATTEMPTS:
            raise errors.CACHE_LAYER_CHANGING.error(layer=name, path=str(changed),
                                                    attempts=RESTORE_ATTEMPTS)
        self.reporter.warn(f"A file of the cached layer {name} ({changed}) changed while "
                           f"this build read it (another build sharing the cache wrote "
                           f"into it in place); the layer was discarded and is made again.")

    @contextmanager
    def naming_app_dir(self) -> Iterator[None]:
        """Errors about the staged tree name the user's app directory, not its copy."""
        try:
            yield
        except errors.SlugbuildError as error:
            staged, shown = str(self.build_dir), str(self.app_dir)
            texts = (error.title, error.found, error.action, error.output or "")
            if not any(staged in text for text in texts):
                raise
            raise error.replacing(staged, shown) from error


class StepLayers:
    """The cached layers as one build step that runs a program of the slug sees them.

    ``argv`` decides, when the step is about to start: through an overlay of the
    layers' cached trees in a private mount namespace (nothing the step does can
    change a cached file; what it writes in the prefix is applied to materialised
    layers afterwards, ``finish``), or the layers materialised first, as before.
    The log says which. Either way the step runs with the cache sealed
    (step_jail.py; in the overlay's namespace when there is one).
    """

    def __init__(self, build: BuildContext, step: str) -> None:
        self.build = build
        self.step = step
        self.run: OverlayRun | None = None
        # The wrapper's status file of the command ``argv`` last gave (None: unwrapped).
        self.status: Path | None = None

    def __enter__(self) -> StepLayers:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is None:
            self.finish()
        elif self.run is not None:
            self.run.remove()
            self.run = None

    @property
    def sealed(self) -> bool:
        """Whether the step's view of the prefix is an overlay: the build directory's
        prefix cannot change (``prefix_written`` says what it wrote there)."""
        return self.run is not None

    def argv(self, argv: Sequence[str | Path]) -> list[str | Path]:
        """The command to run for ``argv``, the layers ready for it."""
        if self.run is None and self.build.views:
            self.run = self.build.overlay()
            reporter = self.build.reporter
            if self.run is not None:
                reporter.detail(f"The cached layers are read in place through an overlay "
                                f"({self.run.mechanism.name}, read-only)")
            else:
                reporter.detail("The cached layers are placed into the build first (no "
                                "private overlay here, or SLUGBUILD_LAYER_OVERLAY=0)")
        if self.run is not None:
            command = self.run.argv(argv, self.build.seal.mounts())
            self.status = self.run.status
            return command
        self.build.materialise()
        wrapped = self.build.seal.command(argv)
        self.status = wrapped[1] if wrapped is not None else None
        return wrapped[0] if wrapped is not None else list(argv)

    def run_step(self, argv: Sequence[str | Path], start: Callable[[list[str | Path]], T]) -> T:
        """``start`` (it runs a command and returns or raises what the step gave) for
        ``argv``, the layers ready. The overlay and the seal never fail a step: when
        the namespace or a mount failed before the step started (told by the
        wrapper's start mark, not by the exit code: the step may exit 125 too), the
        log says why in one line and the step runs again without the overlay (the
        layers materialised), then without the seal."""
        command = self.argv(argv)
        run, status = self.run, self.status
        try:
            result = start(command)
        except Exception as failure:
            if status is not None and step_started(status):
                self.build.seal.explain_read_only(self.step, failure)
                raise
            if isinstance(failure, errors.SlugbuildError) or status is None:
                raise
        else:
            if status is None or step_started(status):
                return result
        if run is None:  # the seal alone
            self.build.seal.setup_failed(self.step, status)
            self.status = None
            return start(list(argv))
        self.build.overlay_failed = True
        self.build.reporter.warn(
            f"The overlay of the cached layers could not be set up for {self.step} "
            f"({run.failure()}); the layers are placed into the build instead.")
        run.remove()
        self.run = None
        return self.run_step(argv, start)

    def prefix_written(self) -> bool:
        """Whether the step wrote into the layers' mount (through the overlay)."""
        return self.run is not None and self.run.written()

    def finish(self) -> None:
        """After the step: what it wrote in the prefix applied onto materialised layers."""
        run, self.run = self.run, None
        if run is None:
            return
        try:
            if run.written():
                # Copies, not hard links: the steps after it (which may write there
                # again) then never reach a cached file either.
                self.build.reporter.detail(
                    f"{self.step} wrote into .heroku/python: the cached layers were "
                    f"copied into the build and its changes applied to the copies")
                self.build.materialise(copy=True)
                run.apply()
        finally:
            run.remove()


def viewed_tree(build: BuildContext, layer: Layer) -> Path:
    """The tree of a layer shown by a view, for stack_compat: a part-only layer's is
    written first unless its kept ELF record (stack_compat.STACK_RECORD, from the
    same artifact as its part) answers without it."""
    if _part_only(layer) and not stack_record_kept(layer.packed_parts / STACK_RECORD):
        try:
            build.tree_of(layer)
        except LayerChanged as changed:
            build.layer_changed(layer, changed, RESTORE_ATTEMPTS - 1)  # raises
            raise
    return layer.tree


def _part_only(layer: Layer) -> bool:
    """Whether the layer's tree is still to be written (looked up part-only, and no
    step of this or another build has had it written since)."""
    return layer.lazy and not layer.tree.is_dir()


def open_cache(cache_dir: Path | None, app_dir: Path) -> Cache:
    """The build cache (``cache_dir``, else the default), refused when it holds the app."""
    root = cache_dir if cache_dir is not None else default_cache_dir()
    if app_dir.resolve().is_relative_to(root.resolve()):
        raise errors.CACHE_DIR_UNUSABLE.error(variant="holds-app", path=root)
    return Cache(root)


@dataclass
class BuildpackTurn:
    """What a buildpack gets from the ones before it (Heroku's multi-buildpack rules)."""

    position: int
    # The earlier buildpacks' ``export`` files, sourced before each of this one's
    # tools; a buildpack that leaves one appends it.
    exports: list[Path]
    # The variables that let build steps find the Aptfile's packages (none without one).
    system_env: dict[str, str]
    # slug.json's entries of the buildpacks that ran before, and the names after.
    before: list[dict[str, str]]
    after: list[str]
    # Whether the buildpacks were named (--buildpack, .buildpacks, app.json): without
    # any, the built-in Python stages run alone and are not listed in slug.json.
    listed: bool = True


@dataclass
class BuildpackRun:
    """What one buildpack's run left for the release metadata."""

    # slug.json's ``buildpacks`` entry (None: the built-in Python stages alone).
    description: dict[str, str] | None
    # What its bin/release declared (process types, config var defaults, add-ons).
    release: ReleaseInfo | None = None


class Buildpack(Protocol):
    """One buildpack of the build: external (Heroku's buildpack API) or built in."""

    @property
    def shown(self) -> str:
        """Its name as logs and slug.json show it (credentials hidden)."""
        ...

    def analyse(self, build: BuildContext, turn: BuildpackTurn) -> None:
        """Look at the app and fail on bad input before long work. Called before any
        buildpack runs for the first one (nothing changes the app before it)."""
        ...

    def run(self, build: BuildContext, turn: BuildpackTurn) -> BuildpackRun | None:
        """Build the app in ``build.build_dir``; None when it had nothing to do."""
        ...
