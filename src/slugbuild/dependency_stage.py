"""The dependency stage: when and where the dependency layer is installed.

The stage decides this itself; the Python buildpack only tells it when the
runtime layer is in place and asks for the result after the pre_compile hook.

- In its own tree (the usual way: no pre_compile hook, no earlier buildpack
  put a runtime prefix in place): the install needs nothing of the build
  directory, so it runs in a background thread while the runtime layer is
  placed. It starts at once when an interpreter of the runtime is runnable
  already (the cached runtime layer's, or the local prefix the layer is copied
  from), else as soon as the runtime layer is made (a downloaded runtime). Its
  log is held back and shown when the build reaches the dependency stage, so
  it reads in the same order as a build without it.
- Into the build's prefix (after a pre_compile hook or an earlier buildpack,
  which may change what it installs): after the hook, on the prefix as they
  left it. On a cold build the installer downloads meanwhile (``Prefetch``).

The requirements are read and checked (every ``-r``/``-c`` file present and
well-formed) with the rest of the project analysis (``analyse_dependencies``),
so bad input fails before any long work.
"""

from __future__ import annotations

import contextvars
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

from .cache import Layer, LayerChanged, Restored
from .context import PYTHON_HOME, RESTORE_ATTEMPTS, BuildContext
from .dependencies import (
    DependencyInstall,
    DependencyLayer,
    Prefetch,
    find_or_install,
    place_dependency_layer,
    read_host_paths,
    snapshot,
)
from .detect import AppInfo
from .hooks import PRE_COMPILE
from .installers import Installer, installer_for
from .log import Reporter
from .proc import kill_running_tools
from .runtime import RuntimeOffer, interpreter_before_layer, runtime_manifest


class BackgroundInstall:
    """The dependency layer installed into its own tree in a thread; its log held
    back until the build reaches it (``result``), then written live.

    The thread runs in a copy of the caller's context: the build's time limit
    (proc.build_limits) holds in it too.
    """

    def __init__(self, stage: DependencyStage, python: Path,
                 prefetch: Prefetch | None) -> None:
        self.reporter = stage.build.reporter
        self.held = self.reporter.deferred()
        # The interpreter's prefix (a cached layer, or the local one it is copied from)
        # is the slug's .heroku/python: the log names it so, not by its host path.
        self.reporter.show_path_as(python.parent.parent, f"/app/{PYTHON_HOME}")
        self.thread = ThreadPoolExecutor(max_workers=1)
        timer = stage.build.timer

        def install() -> DependencyInstall:
            with timer.stage("dependency_layer_apart"):
                return stage.find_or_install(python, self.held, prefetch=prefetch)

        self.future: Future[DependencyInstall] = self.thread.submit(
            contextvars.copy_context().run, install)

    def result(self) -> DependencyInstall:
        """The layer (or the error that stopped it): what it printed so far, then
        the rest of its log as it comes while this waits."""
        self.held.release()
        with self.reporter.waiting("installing dependencies"):
            return self.future.result()

    def close(self) -> None:
        """Wait for it: a build that failed meanwhile must not leave it running."""
        self.thread.shutdown(wait=True)


@dataclass(frozen=True)
class DependencyAnalysis:
    """What the app's dependencies are and where they will be installed, learned with
    the rest of the project analysis (``analyse_dependencies``)."""

    package_manager: str
    lock_file: str
    installer: Installer
    # In its own tree (no pre_compile hook, no runtime prefix left by an earlier
    # buildpack), else into the build's prefix.
    own_tree: bool


def analyse_dependencies(build: BuildContext, info: AppInfo,
                         runtime: RuntimeOffer) -> DependencyAnalysis:
    """The installer for the app's package manager and runtime, and, when nothing
    can change them before the install, every requirements file read and checked:
    bad input fails here, before the runtime layer is placed."""
    # Set once detection passed require_package_manager.
    assert info.package_manager is not None and info.lock_file is not None
    installer = installer_for(info.package_manager, runtime.version)
    # Installed in its own tree unless a pre_compile hook or an earlier buildpack
    # may change what it installs: its requirements, or the runtime's prefix.
    own_tree = (not (build.build_dir / "bin" / PRE_COMPILE).is_file()
                and not (build.build_dir / PYTHON_HOME).exists())
    if own_tree:
        installer.plan(build.build_dir, info.lock_file, build.config_vars)
    return DependencyAnalysis(info.package_manager, info.lock_file, installer, own_tree)


class DependencyStage:
    """The dependency layer of one build, from the decision where to install it to
    the layer placed in the build. Use as a context manager around the runtime
    layer, the pre_compile hook and ``result``: on the way out it stops whatever
    it still runs."""

    def __init__(self, build: BuildContext, analysis: DependencyAnalysis, runtime: RuntimeOffer,
                 cached_runtime: Layer | None, exports: Mapping[str, str]) -> None:
        self.build = build
        self.exports = exports  # what earlier buildpacks exported, for the installer
        self.runtime = runtime
        self.package_manager, self.lock_file = analysis.package_manager, analysis.lock_file
        self.installer = analysis.installer
        self.own_tree = analysis.own_tree
        self.background: BackgroundInstall | None = None
        self.prefetch: Prefetch | None = None
        self.prefix_snapshot: dict[str, tuple[int, ...]] | None = None
        # Writes a part-only runtime layer's tree before an install runs its Python.
        self.before_install: Callable[[], object] | None = None
        ready = None
        if self.own_tree:
            # An interpreter of the runtime runnable now: the cached layer's, else the
            # local prefix the layer is copied from (None: still to be downloaded).
            ready = (cached_runtime.tree / "bin" / runtime.python_name
                     if cached_runtime is not None else
                     interpreter_before_layer(build.cache, runtime, build.platform))
        if ready is None and cached_runtime is None:
            # A cold build: let the installer download while the runtime is prepared.
            self.prefetch = Prefetch.start(
                app_dir=build.build_dir, lock_file=self.lock_file,
                package_manager=self.package_manager, config_vars=build.config_vars,
                cache=build.cache, reporter=build.reporter, python_version=runtime.version,
                scratch=build.scratch / "prefetch", constraints=build.constraints,
                exports=exports)
        if ready is not None and cached_runtime is not None and cached_runtime.lazy:
            self.before_install = partial(build.tree_of, cached_runtime)
        if ready is not None:
            self.background = BackgroundInstall(self, ready, None)

    def __enter__(self) -> DependencyStage:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is not None:
            kill_running_tools()  # a background install must not keep a failed build waiting
        if self.background is not None:
            self.background.close()
        if self.prefetch is not None:
            self.prefetch.stop()
            # Its throwaway install is thousands of files: removed while the build goes on.
            self.build.background.submit(shutil.rmtree, self.prefetch.scratch,
                                         ignore_errors=True)

    def runtime_placed(self, runtime_layer: Layer) -> None:
        """The runtime layer is in the build: start the install in its own tree with
        the layer's interpreter (a downloaded runtime), or note the prefix as the
        runtime left it (what a hook changes there then keys the layer)."""
        if runtime_layer.lazy:  # part-only: its interpreter exists once an install needs it
            self.before_install = partial(self.build.tree_of, runtime_layer)
        if self.own_tree and self.background is None:
            self.background = BackgroundInstall(
                self, runtime_layer.tree / "bin" / self.runtime.python_name, self.prefetch)
        elif self.background is None:
            self.prefix_snapshot = snapshot(self.build.build_dir / PYTHON_HOME, runtime_layer)

    def result(self) -> DependencyLayer:
        """The dependency layer, in the build, with its packages listed."""
        build = self.build
        python_home = build.build_dir / PYTHON_HOME
        python = python_home / "bin" / self.runtime.python_name
        for attempt in range(RESTORE_ATTEMPTS):
            install = None
            try:
                if self.background is not None and attempt == 0:
                    install = self.background.result()
                elif self.background is not None:
                    with build.reporter.waiting("installing dependencies"):
                        install = self.find_or_install(python, build.reporter)
                else:
                    with build.reporter.waiting("installing dependencies"):
                        install = self.find_or_install(
                            python, build.reporter,
                            prefetch=self.prefetch if attempt == 0 else None,
                            into_prefix=python_home)
                layer, placed = place_dependency_layer(
                    install, python_home, self.runtime.python_name, build.cache,
                    build.reporter, self.lock_file, copy=build.copy_layers,
                    show=partial(build.show_layer, mount=PYTHON_HOME))
                break
            except LayerChanged as changed:
                build.layer_changed(install.layer if install else None, changed, attempt)
        build.place_layer(layer.layer, PYTHON_HOME, placed or Restored(),
                          host_paths=read_host_paths(layer.layer))
        return layer

    def find_or_install(self, python: Path, reporter: Reporter, **where: Any
                        ) -> DependencyInstall:
        """The cached layer, or a fresh one installed with ``python``."""
        build = self.build
        return find_or_install(
            app_dir=build.build_dir, lock_file=self.lock_file, python=python,
            python_name=self.runtime.python_name,
            runtime=runtime_manifest(self.runtime, build.platform), installer=self.installer,
            config_vars=build.config_vars, cache=build.cache, reporter=reporter,
            source_dir=build.app_dir, constraints=build.constraints,
            prefix_snapshot=self.prefix_snapshot, copy=build.copy_layers, exports=self.exports,
            before_install=self.before_install, seal=build.seal, **where)

