"""The local builder: bundle in the artifact dir, a registry dir, releases with a symlink."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from trainhook.jsonfiles import read_json
from worker.builder import MachineBuilder, version_of
from worker.bundle import bundle_entries, write_bundle
from worker.context import BuildContext, Bundle
from worker.local.release import LocalRegistry, Releases
from worker.repocode import isolation_note, runner_for, sandbox_spec
from worker.stage import Outcome, StageFailed, skipped
from worker.stalegate import supersede_if_stale

HEALTH_TIMEOUT = 120.0
HEALTH_SCRIPT = Path(__file__).with_name("healthcheck.py")
HEALTH_FILES = ("model.joblib", "vectorizer.joblib", "model_manifest.json")


class LocalBuilder(MachineBuilder):
    """Runs the builder stages as local files and processes (see `Builder`). Idempotent:
    the bundle is deterministic, the push skips a digest already stored, the deploy reuses
    an unpacked release of the same digest."""

    def __init__(self, note: str | None = None) -> None:
        # Why this builder runs instead of a container engine (TRAINHOOK_BUILDER=local on a
        # machine without one): said in every deploy detail, so the build page says it too.
        self.note = note

    def deployed_metrics(self, ctx: BuildContext) -> dict[str, Any] | None:
        return Releases(ctx.settings.home / "releases", ctx.repo.slug).current_metrics()

    def _info(self, ctx: BuildContext) -> dict[str, Any]:
        # The model's own record says which trainer made it (a cached model may be older).
        meta = read_json(ctx.model_dir / "meta.json") if ctx.model_dir else {}
        return {
            "repo": ctx.repo.name,
            "sha": ctx.build.sha,
            "build_id": ctx.build.id,
            "model_key": ctx.keys.model if ctx.keys else meta.get("key"),
            "model_build_id": meta.get("build_id"),
            "trainer_version": meta.get("trainer_version"),
        }

    def build(self, ctx: BuildContext) -> Outcome:
        version = version_of(ctx)
        dest = ctx.settings.artifacts_path / "bundles" / ctx.repo.slug / f"{version}.tar.gz"
        entries = bundle_entries(
            ctx.need_source(), ctx.need_model(), {**self._info(ctx), "version": version}
        )
        ctx.bundle = write_bundle(entries, dest, version)
        ctx.log("build", "".join(f"{name}\n" for name in sorted(entries)))
        return Outcome(detail=f"bundle {_describe(ctx.bundle)}, {len(entries)} files")

    def push(self, ctx: BuildContext) -> Outcome:
        bundle = _need_bundle(ctx)
        registry = LocalRegistry(ctx.settings.home / "registry")
        _, action = registry.push(ctx.repo.slug, bundle, self._info(ctx))
        return Outcome(detail=f"{bundle.version} sha256:{bundle.digest[:16]} {action}")

    def deploy(self, ctx: BuildContext) -> Outcome:
        bundle = _need_bundle(ctx)
        registry_copy = ctx.settings.home / "registry" / ctx.repo.slug / bundle.path.name
        releases = Releases(ctx.settings.home / "releases", ctx.repo.slug)
        release = releases.unpack(registry_copy, bundle.version, bundle.digest)
        # Only the model files, never the checkout beside them in the release (see
        # worker/local/healthcheck.py), in the repository's sandbox.
        spec = sandbox_spec(
            ctx,
            files=tuple((n, release / n) for n in HEALTH_FILES if (release / n).is_file()),
            readonly=(HEALTH_SCRIPT,),
            workdir="/release",
        )
        result = runner_for(ctx, spec).run(
            [sys.executable, "-I", str(HEALTH_SCRIPT), "."],
            timeout=HEALTH_TIMEOUT,
            on_output=lambda text: ctx.log("deploy", text),
        )
        if not result.ok:
            why = "timed out" if result.timed_out else f"exited with {result.returncode}"
            current = releases.current_version() or "none"
            raise StageFailed(
                f"health check of {bundle.version} {why}; current release unchanged "
                f"({current}):\n{result.last_lines(5)}"
            )
        labels = _labels(result.tail)
        # Checked again at the last moment: a newer commit of the branch may have been
        # deployed since this build's checkout (two workers, the older one slower).
        stale = supersede_if_stale(ctx, ctx.mirror) if ctx.mirror is not None else None
        if stale:
            return skipped(f"{stale}; current release unchanged ({releases.current_version()})")
        previous = releases.switch(release.name)
        pruned = releases.prune()
        ctx.log("deploy", f"current -> {release.name} (was {previous or 'none'})\n")
        if pruned:
            ctx.log("deploy", "pruned old releases: " + ", ".join(pruned) + "\n")
        unsandboxed = f" ({note})" if (note := isolation_note(ctx)) and not ctx.repo.sandbox else ""
        said = f"{self.note}; " if self.note else ""
        return Outcome(
            detail=f"{said}{release.name} is current (was {previous or 'none'}); "
            f"health check{unsandboxed} scored {len(labels)} texts: {', '.join(labels)}"
        )


def _need_bundle(ctx: BuildContext) -> Bundle:
    if ctx.bundle is None:
        raise RuntimeError("no bundle: the build stage has not run")
    return ctx.bundle


def _describe(bundle: Bundle) -> str:
    return f"{bundle.version}.tar.gz {bundle.size} bytes sha256:{bundle.digest}"


def _labels(output: str) -> list[str]:
    for line in reversed(output.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("labels"), list):
            return [str(label) for label in value["labels"]]
    raise StageFailed("health check printed no labels")
