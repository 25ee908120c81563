"""The Builder contract (worker/builder.py), run over every builder.

Each builder is driven as the pipeline drives it: the local one with a real scikit-learn
model and its health check run as a process; Cloud Build through the real
google-cloud-build client (REST) against the fake Cloud Build server, with its source bucket
on fake-gcs-server. A `Kit` holds what differs between them: how a context is made ready,
how its health check is made to fail, and what counts as one deployment.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import joblib
import pytest
import sqlalchemy as sa
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from tests.cloudbuild import conftest as cloud
from tests.cloudbuild.conftest import (  # noqa: F401 (fixtures the Cloud Build kit requests)
    cloud_settings,
    fake,
    gcs_url,
    source_bucket,
)
from tests.cloudbuild.fake_server import Plan
from tests.support.containers import (
    BASE_IMAGE,
    need_engine,
    need_podman,
    remove_containers,
    remove_images,
)
from tests.support.required import unavailable
from tests.worker.conftest import context_for, new_build, stage_map
from trainhook.settings import Settings
from worker.builder import BUILDER_STAGES, VERTEX_REASON, Builder
from worker.cloudbuild.builder import NO_VERTEX
from worker.container.builder import ContainerBuilder
from worker.container.engine import Engine
from worker.container.registry import BINARIES, start_local_registry, stop_registry
from worker.container.release import REPO_LABEL
from worker.context import BuildContext, CacheKeys
from worker.local.builder import LocalBuilder
from worker.stage import Interrupted, StageFailed

GOOD, BETTER = {"macro_f1": 0.8}, {"macro_f1": 0.9}
ORDERED = ("build", "push", "deploy")  # vertex may run beside deploy (Cloud Build)


@dataclass
class Kit:
    """One builder and what the contract needs to drive it."""

    name: str
    builder: Builder
    settings: Settings
    engine: sa.Engine
    ready: Callable[[str, dict[str, Any]], BuildContext]  # (sha, metrics) -> a ready context
    break_health_check: Callable[[BuildContext], None]  # the next deploy of ctx fails
    deployments: Callable[[BuildContext], int]  # how many deployments were made for the repo
    fail_build: Callable[[BuildContext], bool]  # the next build stage fails; False: cannot
    without_vertex: Callable[[], Kit]  # the same builder where no Vertex AI is configured
    vertex_reason: str


# The local builder ------------------------------------------------------------------------


def _sklearn_model(folder: Path, metrics: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    texts = ["love it", "great stuff", "hate it", "awful thing"]
    vectorizer = CountVectorizer().fit(texts)
    model = LogisticRegression().fit(vectorizer.transform(texts), ["pos", "pos", "neg", "neg"])
    joblib.dump(model, folder / "model.joblib")
    joblib.dump(vectorizer, folder / "vectorizer.joblib")
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def local_kit(
    make_settings: Callable[..., Settings], url: str, engine: sa.Engine, tmp: Path
) -> Kit:
    settings = make_settings(url)

    def ready(sha: str, metrics: dict[str, Any]) -> BuildContext:
        ctx = context_for(settings, engine, new_build(engine, sha))
        ctx.source = tmp / f"src-{ctx.build.id}"
        ctx.source.mkdir()
        (ctx.source / "app.py").write_text("# the served app\n")
        ctx.model_dir = _sklearn_model(tmp / f"model-{ctx.build.id}", metrics)
        return ctx

    def break_health_check(ctx: BuildContext) -> None:
        (ctx.need_model() / "vectorizer.joblib").write_bytes(b"not a pickle")

    def deployments(ctx: BuildContext) -> int:
        releases = settings.home / "releases" / ctx.repo.slug
        return sum(1 for p in releases.iterdir() if p.is_dir() and not p.is_symlink())

    kit = Kit(
        "local", LocalBuilder(), settings, engine, ready, break_health_check, deployments,
        fail_build=lambda ctx: False, without_vertex=lambda: kit, vertex_reason=VERTEX_REASON,
    )  # fmt: skip
    return kit


# The container builder: podman or docker, a real registry process, the image run ---------

# A stdlib app (the base image has no pip packages): it refuses to start when the vectorizer
# is not a pickle (how the contract breaks a health check), and labels every text.
CONTAINER_APP = """\
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

with open("vectorizer.joblib", "rb") as stream:
    if stream.read(1) != b"\\x80":
        sys.exit("vectorizer.joblib is not a pickle")


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer(200 if self.path == "/healthz" else 404, {"status": "ok"})

    def do_POST(self):
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
        self.answer(200, {"labels": ["pos" for _ in texts]})


HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""
CONTAINER_DOCKERFILE = """\
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /app
COPY . ./
CMD ["python3", "app.py"]
"""


@pytest.fixture(scope="module")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not any(shutil.which(b) for b in BINARIES):
        unavailable("CONTAINERS", "no distribution registry binary (docker-registry) installed")
    home = tmp_path_factory.mktemp("registry-home")
    process = start_local_registry(home)
    assert process is not None
    yield (home / "oci-registry" / "address").read_text().strip()
    stop_registry(process)


def container_kit(
    make_settings: Callable[..., Settings], url: str, engine: sa.Engine, tmp: Path, registry: str,
    images: Engine | None = None,
) -> Kit:  # fmt: skip
    """The container builder over `images` (podman by default)."""
    images = images or need_podman()
    # A name of its own: its images and containers are this test's to remove, never those of
    # a run of the same test beside it.
    name = f"octo-org/social-score-api-{secrets.token_hex(4)}"
    settings = make_settings(url, name=name, env={
        "TRAINHOOK_BUILDER": images.name, "TRAINHOOK_REGISTRY": registry,
        "TRAINHOOK_BASE_IMAGE": BASE_IMAGE,
    })  # fmt: skip

    def ready(sha: str, metrics: dict[str, Any]) -> BuildContext:
        ctx = context_for(settings, engine, new_build(engine, sha, repo=name))
        ctx.source = tmp / f"src-{ctx.build.id}"
        ctx.source.mkdir()
        (ctx.source / "app.py").write_text(CONTAINER_APP)
        (ctx.source / "Dockerfile").write_text(CONTAINER_DOCKERFILE)
        ctx.model_dir = _sklearn_model(tmp / f"model-{ctx.build.id}", metrics)
        return ctx

    def break_health_check(ctx: BuildContext) -> None:
        (ctx.need_model() / "vectorizer.joblib").write_bytes(b"not a pickle")

    def deployments(ctx: BuildContext) -> int:
        return len(list((settings.home / "containers" / ctx.repo.slug / "images").iterdir()))

    def fail_build(ctx: BuildContext) -> bool:
        (ctx.need_source() / "Dockerfile").write_text(CONTAINER_DOCKERFILE + "RUN false\n")
        return True

    kit = Kit(
        "container", ContainerBuilder(images), settings, engine, ready, break_health_check,
        deployments, fail_build=fail_build, without_vertex=lambda: kit,
        vertex_reason=VERTEX_REASON,
    )  # fmt: skip
    return kit


# Cloud Build -------------------------------------------------------------------------------


def cloud_kit(
    settings_for: Callable[..., Settings], server: Any, engine: sa.Engine, tmp: Path,
    vertex: bool = True,
) -> Kit:  # fmt: skip
    settings = settings_for(vertex=vertex)
    builder = cloud.make_builder(settings)

    def ready(sha: str, metrics: dict[str, Any]) -> BuildContext:
        ctx = context_for(settings, engine, new_build(engine, sha))
        ctx.source = tmp / f"src-{ctx.build.id}"
        (ctx.source / "pipelines").mkdir(parents=True)
        (ctx.source / "app.py").write_text("# the served app\n")
        (ctx.source / "pipelines" / "train.json").write_text("{}\n")
        ctx.model_dir = cloud.model_dir(tmp / f"model-{ctx.build.id}", metrics)
        ctx.keys = CacheKeys(deps="d" * 64, nltk="n" * 64, model="m" * 64)
        ctx.metrics = dict(metrics)
        return ctx

    def break_health_check(ctx: BuildContext) -> None:
        # The deploy step's rollout or health check fails (and `rollout undo` runs).
        server.plan = Plan(outcomes={"deploy": "FAILURE"})

    def fail_build(ctx: BuildContext) -> bool:
        server.plan = Plan(outcomes={"build": "FAILURE"})
        return True

    return Kit(
        "cloudbuild", builder, settings, engine, ready, break_health_check,
        deployments=lambda ctx: sum(1 for b in server.builds.values() if b.terminal),
        fail_build=fail_build,
        without_vertex=lambda: cloud_kit(settings_for, server, engine, tmp / "nv", vertex=False),
        vertex_reason=NO_VERTEX,
    )  # fmt: skip


@pytest.fixture(params=["local", "container", "container-docker", "cloudbuild"])
def kit(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], sqlite_url: str,
    sqlite_engine: sa.Engine, tmp_path: Path,
) -> Iterator[Kit]:  # fmt: skip
    if request.param == "local":
        yield local_kit(make_settings, sqlite_url, sqlite_engine, tmp_path)
    elif request.param.startswith("container"):
        images = (
            need_engine("docker", request.getfixturevalue("docker_daemon"))
            if request.param == "container-docker"
            else need_podman()
        )
        registry = request.getfixturevalue("oci_registry")
        built = container_kit(make_settings, sqlite_url, sqlite_engine, tmp_path, registry, images)
        yield built
        slug = built.settings.repos[0].slug
        remove_containers(built.builder.engine, f"{REPO_LABEL}={slug}")  # type: ignore[attr-defined]
        remove_images(built.builder.engine, slug.lower())  # type: ignore[attr-defined]
    else:
        fake_server = request.getfixturevalue("fake")
        yield cloud_kit(request.getfixturevalue("cloud_settings"), fake_server, sqlite_engine,
                        tmp_path)  # fmt: skip


def statuses(ctx: BuildContext) -> dict[str, str]:
    return dict(ctx.recorder.done)


# The contract ------------------------------------------------------------------------------


def test_it_reports_the_four_builder_stages_in_order(kit: Kit):
    ctx = kit.ready("1" * 40, GOOD)

    kit.builder(ctx)

    assert tuple(kit.builder.stages) == BUILDER_STAGES
    assert statuses(ctx) == {"build": "succeeded", "push": "succeeded", "deploy": "succeeded",
                             "vertex": statuses(ctx)["vertex"]}  # fmt: skip
    assert statuses(ctx)["vertex"] in ("succeeded", "skipped")
    stages = stage_map(kit.engine, ctx.build.id)
    for before, after in pairwise(ORDERED):
        assert stages[before]["finished_at"] <= stages[after]["started_at"], (before, after)
    assert stages["vertex"]["finished_at"] >= stages["push"]["finished_at"]


def test_nothing_is_deployed_before_the_first_build(kit: Kit):
    ctx = kit.ready("2" * 40, GOOD)
    assert kit.builder.deployed_metrics(ctx) is None


def test_a_healthy_model_is_deployed_and_its_metrics_are_what_the_gate_reads_next(kit: Kit):
    first = kit.ready("3" * 40, GOOD)
    kit.builder(first)
    assert kit.builder.deployed_metrics(first) == GOOD

    second = kit.ready("4" * 40, BETTER)
    kit.builder(second)
    assert kit.builder.deployed_metrics(second) == BETTER
    assert kit.deployments(second) == 2


def test_a_failing_health_check_fails_deploy_and_keeps_the_previous_deployment(kit: Kit):
    good = kit.ready("5" * 40, GOOD)
    kit.builder(good)
    bad = kit.ready("6" * 40, BETTER)
    kit.break_health_check(bad)

    with pytest.raises(StageFailed):
        kit.builder(bad)

    assert statuses(bad)["deploy"] == "failed"
    assert statuses(bad)["build"] == statuses(bad)["push"] == "succeeded"
    detail = stage_map(kit.engine, bad.build.id)["deploy"]["detail"]
    assert detail and "fail" in detail.lower()
    assert kit.builder.deployed_metrics(bad) == GOOD


def test_a_failing_build_stage_deploys_nothing_and_runs_no_later_stage(kit: Kit):
    ctx = kit.ready("7" * 40, GOOD)
    if not kit.fail_build(ctx):
        pytest.skip(f"{kit.name}: no build failure a test can cause without breaking its input")

    with pytest.raises(StageFailed):
        kit.builder(ctx)

    assert statuses(ctx)["build"] == "failed"
    assert all(statuses(ctx).get(s) in (None, "skipped") for s in ("push", "deploy"))
    assert kit.builder.deployed_metrics(ctx) is None


def test_running_it_twice_for_the_same_build_is_idempotent(kit: Kit):
    ctx = kit.ready("8" * 40, GOOD)
    kit.builder(ctx)
    first = stage_map(kit.engine, ctx.build.id)

    # A retried job: the same build, its stages recorded by the first run.
    ctx.recorder.done.clear()
    kit.builder(ctx)

    again = stage_map(kit.engine, ctx.build.id)
    assert {s: again[s]["status"] for s in BUILDER_STAGES} == {
        s: first[s]["status"] for s in BUILDER_STAGES
    }
    assert kit.deployments(ctx) == 1
    assert kit.builder.deployed_metrics(ctx) == GOOD


def test_vertex_is_skipped_with_a_reason_when_it_is_not_configured(kit: Kit):
    plain = kit.without_vertex()
    ctx = plain.ready("9" * 40, GOOD)

    plain.builder(ctx)

    assert statuses(ctx)["vertex"] == "skipped"
    assert stage_map(plain.engine, ctx.build.id)["vertex"]["detail"] == plain.vertex_reason
    assert statuses(ctx)["deploy"] == "succeeded"


def test_a_worker_stopping_before_it_starts_interrupts_it_and_deploys_nothing(kit: Kit):
    ctx = kit.ready("a" * 40, GOOD)

    def stop() -> None:
        raise Interrupted("worker stopping")

    ctx.recorder.guard = stop
    with pytest.raises(Interrupted):
        kit.builder(ctx)

    assert kit.builder.deployed_metrics(ctx) is None
    assert all(statuses(ctx).get(s) != "succeeded" for s in ORDERED)


def test_a_dockerfile_run_step_cannot_see_the_workers_processes(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    sqlite_engine: sa.Engine,
    tmp_path: Path,
    oci_registry: str,
):
    """A RUN step is repository code: it must not see the worker's processes (with
    `--isolation chroot` it shares the host's pid namespace and /proc, and does)."""
    token = secrets.token_hex(8)  # new each run: no cached layer answers for it
    witness = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", f"worker-only-{token}"]
    )
    built: Kit | None = None
    try:
        built = container_kit(make_settings, sqlite_url, sqlite_engine, tmp_path, oci_registry)
        ctx = built.ready("7" * 40, GOOD)
        # The marker is put together in the shell and handed to grep in a file, so no command
        # line of the RUN step holds it whole: only the witness process's does.
        (ctx.need_source() / "Dockerfile").write_text(
            CONTAINER_DOCKERFILE
            + f'RUN m=worker-only; printf %s "$m-{token}" >/tmp/m; '
            + "! grep -qsFf /tmp/m /proc/*/cmdline\n"
        )

        built.builder(ctx)
    finally:
        witness.kill()
        witness.wait()
        # It deploys too: the container it left running is this test's to remove.
        if built is not None:
            slug = built.settings.repos[0].slug
            remove_containers(need_podman(), f"{REPO_LABEL}={slug}")
            remove_images(need_podman(), slug.lower())

    assert statuses(ctx)["build"] == "succeeded"
