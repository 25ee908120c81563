"""A job delivered again resumes from the first unfinished stage: what succeeded in an
earlier attempt is not redone (resumable stages), except checkout, which the files need."""

from __future__ import annotations

from tests.queue.conftest import Counter, Stack, all_finished, new_build, publish, run_workers
from tests.worker.conftest import stage_map
from worker.context import BuildContext
from worker.stage import Outcome


def flaky_push(calls: list[int]):
    def push(ctx: BuildContext) -> Outcome:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            raise ConnectionError("registry unreachable")
        return Outcome(detail="pushed")

    return push


def test_a_retry_resumes_at_the_stage_that_failed(stack: Stack):
    runtime = stack.runtime()
    build_id = new_build(stack.engine)
    publish(runtime, [build_id])
    calls: list[int] = []
    counter = Counter({"push": flaky_push(calls)})

    run_workers([runtime], counter.pipeline(resumable=True), all_finished(stack.engine, 1),
                backoff=0.2)  # fmt: skip

    assert calls == [1, 2]
    ran = {stage: counter.count(build_id, stage) for stage in ("checkout", "test", "train")}
    assert ran == {"checkout": 2, "test": 1, "train": 1}
    assert counter.count(build_id, "vertex") == 1
    stages = stage_map(stack.engine, build_id)
    assert all(stages[s]["status"] == "succeeded" for s in ("test", "train", "push", "vertex"))
    assert stages["push"]["detail"] == "pushed"


def test_stages_not_marked_resumable_run_again(stack: Stack):
    runtime = stack.runtime()
    build_id = new_build(stack.engine)
    publish(runtime, [build_id])
    counter = Counter({"push": flaky_push([])})

    run_workers([runtime], counter.pipeline(), all_finished(stack.engine, 1), backoff=0.2)

    assert {s: counter.count(build_id, s) for s in ("checkout", "test", "vertex")} == {
        "checkout": 2,
        "test": 2,
        "vertex": 1,
    }
