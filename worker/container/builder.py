"""The container builder: the repository's Dockerfile built by docker or podman from the same
context as the Cloud Build source (worker/bundle.py), pushed to an OCI registry, and the pushed
digest run, health-checked and smoke-tested before it replaces the container serving now."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trainhook.deployconfig import DeployConfig
from trainhook.jsonfiles import read_json
from trainhook.models import utcnow
from trainhook.releases import Releases
from worker.builder import MachineBuilder, version_of
from worker.bundle import bundle_entries, write_bundle
from worker.container.engine import Engine
from worker.container.registry import answers, is_loopback, registry_for
from worker.container.release import Containers, Target, deliver
from worker.context import BuildContext
from worker.local.healthcheck import PROBE_TEXTS
from worker.local.release import unpack_bundle
from worker.stage import Outcome, StageFailed, skipped
from worker.stalegate import supersede_if_stale

BUILD_TIMEOUT = 1800.0
PUSH_TIMEOUT = 600.0
CA_TARGET = "/etc/ssl/certs/ca-certificates.crt"
SMOKE_TEXTS = 3
SMOKE_TEXT_CHARS = 500  # a smoke test, not a load test: one huge cell is cut short


def image_name(ctx: BuildContext) -> str:
    """The repository's image name in a registry (lower case, as OCI names must be)."""
    return re.sub(r"[^a-z0-9._-]+", "-", ctx.repo.slug.lower()).strip("-._")


def local_tag(ctx: BuildContext) -> str:
    return f"localhost/trainhook/{image_name(ctx)}:{version_of(ctx)}"


def pushed_digest(output: str, tag: str) -> str:
    """The digest `docker push` printed for `tag` (`TAG: digest: sha256:… size: N`), or ''.
    Read from the push itself first: `RepoDigests` names a Docker Hub image without its
    registry (`org/model@…` for `docker.io/org/model`), so it cannot be matched by prefix."""
    found = re.findall(rf"^{re.escape(tag)}: digest: (sha256:[0-9a-f]{{64}})\b", output, re.M)
    return found[-1] if found else ""


def image_labels(ctx: BuildContext) -> dict[str, str]:
    """OCI labels: which commit, where from, when, and which build and cache keys made it."""
    url = urlsplit(ctx.repo.clone_url)
    # A clone URL may carry credentials; a label is readable by anyone who pulls the image.
    source = urlunsplit(url._replace(netloc=url.hostname or "")) if url.scheme else ""
    return {
        "org.opencontainers.image.revision": ctx.build.sha,
        "org.opencontainers.image.source": source or ctx.repo.name,
        "org.opencontainers.image.created": utcnow().isoformat(),
        "trainhook.build": str(ctx.build.id),
        "trainhook.model-key": ctx.keys.model if ctx.keys else "",
        "trainhook.deps-key": ctx.keys.deps if ctx.keys else "",
    }


def smoke_texts(ctx: BuildContext, count: int = SMOKE_TEXTS) -> tuple[str, ...]:
    """A few texts from the build's own training data (its first rows with a text) for the
    smoke test, so the check speaks the model's language; the fixed probe texts when the data
    is not a CSV in the checkout (gs://, an LFS pointer, the generated sample) or has none."""
    path = ctx.data.path if ctx.data is not None else None
    if not path or "://" in path or ctx.source is None:
        return PROBE_TEXTS
    target = ctx.source / path
    # The texts go to the repository's own container: a data path that is, or passes
    # through, a symlink out of the checkout must not carry a host file's lines to it.
    if not target.resolve().is_relative_to(ctx.source.resolve()):
        return PROBE_TEXTS
    texts: list[str] = []
    try:
        with target.open(newline="", encoding="utf-8", errors="replace") as stream:
            for row in csv.DictReader(stream):
                text = (row.get(ctx.repo.text_column) or "").strip()
                if text:
                    texts.append(text[:SMOKE_TEXT_CHARS])
                if len(texts) == count:
                    break
    except (OSError, csv.Error):
        return PROBE_TEXTS
    return tuple(texts) if len(texts) == count else PROBE_TEXTS


class ContainerBuilder(MachineBuilder):
    """Runs the builder stages with a container engine (see `Builder`). Idempotent: the same
    build gives the same tag and version, a version already serving is left serving."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.containers = Containers(engine)

    def deployed_metrics(self, ctx: BuildContext) -> dict[str, Any] | None:
        current = Releases(ctx.settings.home, ctx.repo.slug).current()
        metrics = current.get("metrics") if current else None
        return metrics if isinstance(metrics, dict) else None

    # build ---------------------------------------------------------------------------------

    def build(self, ctx: BuildContext) -> Outcome:
        version = version_of(ctx)
        info = {"repo": ctx.repo.name, "sha": ctx.build.sha, "build_id": ctx.build.id}
        entries = bundle_entries(ctx.need_source(), ctx.need_model(), {**info, "version": version})
        dest = ctx.settings.artifacts_path / "bundles" / ctx.repo.slug / f"{version}.tar.gz"
        ctx.bundle = write_bundle(entries, dest, version)
        # The context is the bundle unpacked by our own checked unpacker: byte for byte what
        # the Cloud Build source holds, and no checkout symlink leads out of it.
        ctx.settings.work_dir.mkdir(parents=True, exist_ok=True)
        context = Path(tempfile.mkdtemp(prefix=f"image-{ctx.build.id}-", dir=ctx.settings.work_dir))
        ctx.cleanup.callback(shutil.rmtree, context, True)
        unpack_bundle(ctx.bundle.path, context)
        dockerfile = context / ctx.repo.dockerfile
        if not dockerfile.is_file() or dockerfile.is_symlink():
            raise StageFailed(
                f"no {ctx.repo.dockerfile} in the checkout: the container builder builds the "
                "repository's Dockerfile (repository key `dockerfile`)"
            )
        args = ["build", "-f", str(dockerfile), "-t", local_tag(ctx)]
        if self.engine.name == "podman":
            # The Dockerfile's RUN steps are repository code: they run under the OCI runtime,
            # in namespaces of their own. `--isolation chroot` shares the host's pid namespace
            # and /proc, so a RUN step as root could read the worker's environment (seen:
            # /proc/1/cmdline of the host from a RUN step).
            args += ["--isolation", "oci"]
        for key, value in image_labels(ctx).items():
            args += ["--label", f"{key}={value}"]
        if ctx.settings.base_image:
            args += ["--build-arg", f"BASE_IMAGE={ctx.settings.base_image}"]
        ca = ctx.settings.build_ca_bundle
        if ca is not None and self.engine.name == "podman":
            args += ["-v", f"{ca}:{CA_TARGET}:ro"]
        elif ca is not None:
            ctx.log("build", "TRAINHOOK_BUILD_CA_BUNDLE is mounted into podman builds only\n")
        code, tail = self._stream(ctx, "build", [*args, str(context)], BUILD_TIMEOUT)
        if code != 0:
            raise StageFailed(f"image build exited with {code}:\n{tail}")
        image_id = self._output(["image", "inspect", "--format", "{{.Id}}", local_tag(ctx)])
        return Outcome(
            detail=f"{local_tag(ctx)} ({image_id[:19]}) from {ctx.repo.dockerfile}, "
            f"{len(entries)} files in the context"
        )

    # push ----------------------------------------------------------------------------------

    def push(self, ctx: BuildContext) -> Outcome:
        registry = registry_for(ctx.settings)
        if registry is None:
            raise StageFailed(
                "no registry: set TRAINHOOK_REGISTRY, or install the distribution registry "
                "(`docker-registry`) so that `trainhook up` starts one"
            )
        if is_loopback(registry) and not answers(registry.split("/", 1)[0]):
            raise StageFailed(f"the registry at {registry} does not answer; nothing was pushed")
        version = version_of(ctx)
        ref = f"{registry}/{image_name(ctx)}:{version}"
        tls = ["--tls-verify=false"] if is_loopback(registry) else []
        if self.engine.name == "podman":
            with tempfile.TemporaryDirectory() as tmp:
                digestfile = Path(tmp) / "digest"
                code, tail = self._stream(
                    ctx, "push",
                    ["push", *tls, "--digestfile", str(digestfile), local_tag(ctx), ref],
                    PUSH_TIMEOUT,
                )  # fmt: skip
                digest = digestfile.read_text().strip() if code == 0 else ""
        else:
            self._output(["tag", local_tag(ctx), ref])
            code, tail = self._stream(ctx, "push", ["push", ref], PUSH_TIMEOUT)
            digest = pushed_digest(tail, version) if code == 0 else ""
            if code == 0 and not digest:
                digests = self._output(
                    ["image", "inspect", "--format", "{{json .RepoDigests}}", ref]
                )
                found = [d for d in json.loads(digests or "[]") if d.startswith(f"{registry}/")]
                digest = found[0].rsplit("@", 1)[-1] if found else ""
        if code != 0 or not digest.startswith("sha256:"):
            raise StageFailed(f"push to {registry} failed (exit {code}); nothing deployed:\n{tail}")
        metrics = read_json(ctx.need_model() / "metrics.json")
        releases = Releases(ctx.settings.home, ctx.repo.slug)
        before = releases.record(version) or {}
        record = {
            "version": version,
            "created": before.get("created") or utcnow().isoformat(),
            "build_id": ctx.build.id,
            "sha": ctx.build.sha,
            "image": f"{registry}/{image_name(ctx)}@{digest}",
            "digest": digest,
            "metrics": metrics,
        }
        releases.save(version, record)
        return Outcome(detail=f"{record['image']}")

    # deploy --------------------------------------------------------------------------------

    def deploy(self, ctx: BuildContext) -> Outcome:
        releases = Releases(ctx.settings.home, ctx.repo.slug)
        version = version_of(ctx)
        record = releases.record(version)
        if record is None:
            raise RuntimeError(
                f"no pushed image recorded for {version}: the push stage has not run"
            )
        target = Target(record, ctx.repo.deploy or DeployConfig(), smoke_texts(ctx))

        def stale() -> str | None:
            # Checked at the last moment: a newer commit of the branch may have been
            # deployed since this build's checkout (two workers, the older one slower).
            return supersede_if_stale(ctx, ctx.mirror) if ctx.mirror is not None else None

        switched, detail = deliver(
            self.containers, releases, target, lambda line: ctx.log("deploy", line),
            os.environ, before_switch=stale,
        )  # fmt: skip
        return Outcome(detail=detail) if switched else skipped(detail)

    # the engine ----------------------------------------------------------------------------

    def _stream(
        self, ctx: BuildContext, stage: str, args: list[str], timeout: float
    ) -> tuple[int, str]:
        """Run the engine, its output streamed into the stage log; (exit code, last lines)."""
        return self.containers.stream(args, lambda line: ctx.log(stage, line), timeout)

    def _output(self, args: list[str]) -> str:
        return self.containers.output(args)
