"""The worker: claims queued builds and runs them through the stage pipeline.

Entry points: `worker.loop.Worker` (one job loop, safe to run many in threads or processes)
and `worker.loop.run_worker_process` (`trainhook worker [--burst]`). The pipeline is a list
of steps (`worker.pipeline.Pipeline`, `worker.stage.Step`); the builder stages sit behind
`worker.builder.Builder`, with `worker.local.builder.LocalBuilder` as the embedded default.
"""
