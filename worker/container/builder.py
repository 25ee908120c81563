"""The container builder: the repository's Dockerfile built by docker or podman from the same
context as the Cloud Build source (worker/bundle.py), pushed to an OCI registry, and the pushed
digest run, health-checked and smoke-tested before it replaces the container serving now."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trainhook.models import utcnow
from worker.builder import BUILDER_STAGES
from worker.bundle import bundle_entries, write_bundle
from worker.container.engine import Engine
from worker.container.registry import answers, is_loopback, registry_for
from worker.context import BuildContext
from worker.local.builder import VERTEX_REASON, version_of
from worker.local.healthcheck import PROBE_TEXTS
from worker.local.release import unpack_bundle
from worker.stage import Outcome, StageFailed, skipped
from worker.stalegate import supersede_if_stale

BUILD_TIMEOUT = 1800.0
PUSH_TIMEOUT = 600.0
HEALTH_TIMEOUT = 120.0
HEALTH_PATH = "/healthz"
PREDICT_PATH = "/predict"
LOG_LINES = 20
REPO_LABEL = "trainhook.repo"
# Podman's default rlimits can exceed a host's hard limits, and then nothing starts.
PODMAN_RUN = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
CA_TARGET = "/etc/ssl/certs/ca-certificates.crt"


def image_name(ctx: BuildContext) -> str:
    """The repository's image name in a registry (lower case, as OCI names must be)."""
    return re.sub(r"[^a-z0-9._-]+", "-", ctx.repo.slug.lower()).strip("-._")


def local_tag(ctx: BuildContext) -> str:
    return f"localhost/trainhook/{image_name(ctx)}:{version_of(ctx)}"


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


class Releases:
    """`home/containers/<slug>/`: one record per pushed version and `current.json`, the
    release serving now (written atomically, so a crash leaves the old one or the new one)."""

    def __init__(self, home: Path, slug: str) -> None:
        self.folder = home / "containers" / slug

    def record(self, version: str) -> dict[str, Any] | None:
        return _read_json(self.folder / "images" / f"{version}.json")

    def save(self, version: str, record: dict[str, Any]) -> None:
        _write_json(self.folder / "images" / f"{version}.json", record)

    def current(self) -> dict[str, Any] | None:
        return _read_json(self.folder / "current.json")

    def switch(self, record: dict[str, Any]) -> None:
        _write_json(self.folder / "current.json", record)


class ContainerBuilder:
    """Runs the builder stages with a container engine (see `Builder`). Idempotent: the same
    build gives the same tag and version, a version already serving is left serving."""

    stages: tuple[str, ...] = BUILDER_STAGES

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, ctx: BuildContext) -> None:
        ctx.recorder.run_stage("build", lambda: self.build(ctx))
        ctx.recorder.run_stage("push", lambda: self.push(ctx))
        ctx.recorder.run_stage("deploy", lambda: self.deploy(ctx))
        ctx.recorder.run_stage("vertex", lambda: skipped(VERTEX_REASON))

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
            digest = ""
            if code == 0:
                digests = self._output(
                    ["image", "inspect", "--format", "{{json .RepoDigests}}", ref]
                )
                found = [d for d in json.loads(digests or "[]") if d.startswith(f"{registry}/")]
                digest = found[0].rsplit("@", 1)[-1] if found else ""
        if code != 0 or not digest.startswith("sha256:"):
            raise StageFailed(f"push to {registry} failed (exit {code}); nothing deployed:\n{tail}")
        metrics = _read_json(ctx.need_model() / "metrics.json")
        record = {
            "version": version,
            "build_id": ctx.build.id,
            "sha": ctx.build.sha,
            "image": f"{registry}/{image_name(ctx)}@{digest}",
            "digest": digest,
            "metrics": metrics,
        }
        Releases(ctx.settings.home, ctx.repo.slug).save(version, record)
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
        current = releases.current() or {}
        if current.get("digest") == record["digest"] and self._running(current.get("container")):
            return Outcome(detail=f"{version} already serving at {current.get('url')}")
        image = record["image"]
        registry = image.split("/", 1)[0]
        tls = ["--tls-verify=false"] if is_loopback(registry) else []
        if self.engine.name == "podman":
            code, tail = self._stream(ctx, "deploy", ["pull", *tls, image], PUSH_TIMEOUT)
        else:
            code, tail = self._stream(ctx, "deploy", ["pull", image], PUSH_TIMEOUT)
        if code != 0:
            raise StageFailed(f"pulling {image} failed; current release unchanged:\n{tail}")
        port = _free_port()
        run = ["run", "-d", "--network", "host", "-e", f"PORT={port}"]
        if self.engine.name == "podman":
            run += list(PODMAN_RUN)
        run += [
            "--label",
            f"{REPO_LABEL}={ctx.repo.slug}",
            "--label",
            f"trainhook.version={version}",
        ]
        container = self._output([*run, image])
        url = f"http://127.0.0.1:{port}"
        problem = self._check(ctx, container, url)
        if problem is not None:
            logs = self._logs(container)
            self._remove(container)
            raise StageFailed(
                f"{problem}; current release unchanged ({current.get('version') or 'none'}); "
                f"the new container's last lines:\n{logs}"
            )
        stale = supersede_if_stale(ctx, ctx.mirror) if ctx.mirror is not None else None
        if stale:
            self._remove(container)
            return skipped(f"{stale}; current release unchanged ({current.get('version')})")
        releases.switch({**record, "container": container, "url": url, "port": port})
        old = current.get("container")
        if old and old != container:
            self._remove(old)
        return Outcome(
            detail=f"{image} serving at {url} in container {container[:12]} "
            f"(was {current.get('version') or 'none'}); health and smoke test passed"
        )

    def _check(self, ctx: BuildContext, container: str, url: str) -> str | None:
        """None when the container answers its health path and labels the probe texts,
        else what went wrong."""
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while True:
            if not self._running(container):
                return "health check failed: the new container exited before it was healthy"
            try:
                with urllib.request.urlopen(url + HEALTH_PATH, timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                return f"health check {HEALTH_PATH} failed for {HEALTH_TIMEOUT:.0f} s"
            time.sleep(0.5)
        body = json.dumps({"texts": list(PROBE_TEXTS)}).encode()
        request = urllib.request.Request(
            url + PREDICT_PATH, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                labels = json.loads(response.read()).get("labels")
        except (OSError, ValueError, AttributeError) as exc:
            return f"smoke test POST {PREDICT_PATH} failed: {exc}"
        if not isinstance(labels, list) or len(labels) != len(PROBE_TEXTS):
            return f"smoke test POST {PREDICT_PATH} gave no labels for {len(PROBE_TEXTS)} texts"
        ctx.log("deploy", f"smoke test labels: {', '.join(map(str, labels))}\n")
        return None

    # the engine ----------------------------------------------------------------------------

    def _stream(
        self, ctx: BuildContext, stage: str, args: list[str], timeout: float
    ) -> tuple[int, str]:
        """Run the engine, its output streamed into the stage log; (exit code, last lines)."""
        tail: deque[str] = deque(maxlen=LOG_LINES)
        deadline = time.monotonic() + timeout
        with subprocess.Popen(
            self.engine.cmd(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace",
        ) as process:  # fmt: skip
            assert process.stdout is not None
            for line in process.stdout:
                tail.append(line)
                ctx.log(stage, line)
                if time.monotonic() > deadline:
                    process.kill()
                    tail.append(f"timed out after {timeout:.0f} s\n")
                    break
            code = process.wait()
        return code, "".join(tail)

    def _output(self, args: list[str]) -> str:
        result = subprocess.run(
            self.engine.cmd(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()[-500:]}")
        return result.stdout.strip()

    def _running(self, container: Any) -> bool:
        if not isinstance(container, str) or not container:
            return False
        try:
            state = self._output(["inspect", "--format", "{{.State.Running}}", container])
        except RuntimeError:
            return False
        return state == "true"

    def _logs(self, container: str) -> str:
        result = subprocess.run(
            self.engine.cmd("logs", "--tail", str(LOG_LINES), container),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return (result.stdout + result.stderr).strip() or "(no output)"

    def _remove(self, container: str) -> None:
        subprocess.run(
            self.engine.cmd("rm", "-f", container), stdin=subprocess.DEVNULL,
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(value, stream, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
