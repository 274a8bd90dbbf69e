"""The buildpacks of a build, chosen once and run in order.

Every buildpack is a ``context.Buildpack``: an external one (buildpack_runner),
the built-in Python stages (python_buildpack) or the built-in Node step. No
buildpack named: the Python stages run alone. Heroku's multi-buildpack rules
hold between them: each runs on the same build directory, and what one
exports is in the environment of the later ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .buildpack_runner import BuildpackRef, ExternalBuildpack, buildpacks_for, exported_variables
from .context import BuildContext, Buildpack, BuildpackRun, BuildpackTurn
from .node_assets import NATIVE_NODE_NAMES, NODE_STEP_DESCRIPTION, is_heroku_nodejs, run_node_build
from .python_buildpack import PythonBuild, PythonBuildpack
from .runtime import RuntimeOptions


class NodeStep:
    """The built-in Node step (npm ci and the package.json build script)."""

    def __init__(self, shown: str, runtime_options: RuntimeOptions | None = None) -> None:
        self.shown = shown
        self.runtime_options = runtime_options

    def analyse(self, build: BuildContext, turn: BuildpackTurn) -> None:
        """Its input is checked when it runs (run_node_build)."""

    def run(self, build: BuildContext, turn: BuildpackTurn) -> BuildpackRun:
        with build.timer.stage("node_build"):
            offline = (self.runtime_options or RuntimeOptions.from_env()).offline
            npm_cache = build.cache.root / "npm"
            npm_cache.mkdir(exist_ok=True)
            run_node_build(build.build_dir, build.config_vars, npm_cache,
                           build.reporter, build.cache, offline=offline,
                           exports=exported_variables(
                               turn.exports, build.seal.step("the export files")),
                           runner=build.seal.step("npm", [npm_cache]),
                           scripts=(build.seal.step("npm's scripts"),
                                    build.scratch / "npm-scripts"))
        return BuildpackRun({"buildpack": self.shown, "description": NODE_STEP_DESCRIPTION})


@dataclass
class Buildpacks:
    """The buildpacks to run, in order, and the built-in Python stages among them."""

    order: list[Buildpack]
    python: PythonBuildpack | None
    listed: bool  # named by the user (else: the Python stages alone)


def choose_buildpacks(app_dir: Path, given: Sequence[str] | None, repo_root: Path | None,
                      node_build: bool, runtime_options: RuntimeOptions | None) -> Buildpacks:
    """``--buildpack`` values, else the app's lists (buildpack_runner.buildpacks_for);
    ``node_build`` puts the built-in Node step in place of Heroku's Node.js buildpack,
    or first. Names of Heroku's Python buildpack mean the built-in Python stages."""
    refs = buildpacks_for(app_dir, list(given) if given else None, repo_root=repo_root)
    if node_build:
        # The built-in step stands in for Heroku's Node.js buildpack where one is listed.
        refs = [BuildpackRef("slugbuild:node", ref.base) if is_heroku_nodejs(ref.spec)
                else ref for ref in refs]
        if not any(ref.spec in NATIVE_NODE_NAMES for ref in refs):
            refs = [BuildpackRef("slugbuild:node"), *(refs or [BuildpackRef("python")])]
    if not refs:
        python = PythonBuildpack(runtime_options=runtime_options)
        return Buildpacks([python], python, listed=False)
    python_stages: PythonBuildpack | None = None
    order: list[Buildpack] = []
    for ref in refs:
        if ref.spec in NATIVE_NODE_NAMES:
            order.append(NodeStep(ref.shown, runtime_options))
        elif ref.native:
            # Listed again, it only says so: the stages run once.
            listed_again = PythonBuildpack(ref.shown, ref.spec, runtime_options,
                                           first=python_stages)
            python_stages = python_stages or listed_again
            order.append(listed_again)
        else:
            order.append(ExternalBuildpack(ref))
    return Buildpacks(order, python_stages, listed=True)


def analyse_up_front(build: BuildContext, buildpacks: Buildpacks) -> None:
    """The first buildpack's project analysis, before any other work: nothing can
    change the app before it runs, so bad input fails before the long stages."""
    buildpacks.order[0].analyse(build, _turn(buildpacks, 0, [], {}, []))


def run_buildpacks(build: BuildContext, buildpacks: Buildpacks,
                   system_env: dict[str, str]) -> list[BuildpackRun]:
    """Run each buildpack in turn; what each left, in order."""
    exports: list[Path] = []
    runs: list[BuildpackRun] = []
    for position, buildpack in enumerate(buildpacks.order):
        run = buildpack.run(build, _turn(buildpacks, position, exports, system_env, runs))
        if run is not None:
            runs.append(run)
    return runs


def _turn(buildpacks: Buildpacks, position: int, exports: list[Path],
          system_env: dict[str, str], runs: list[BuildpackRun]) -> BuildpackTurn:
    return BuildpackTurn(
        position, exports, system_env,
        before=[run.description for run in runs if run.description is not None],
        after=[later.shown for later in buildpacks.order[position + 1:]],
        listed=buildpacks.listed)


def python_result(buildpacks: Buildpacks) -> PythonBuild | None:
    """What the built-in Python stages produced (None: they did not run)."""
    return buildpacks.python.result if buildpacks.python is not None else None
