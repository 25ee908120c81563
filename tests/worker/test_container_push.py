"""The digest a docker push reports: what the release records and every deploy runs."""

from __future__ import annotations

from worker.container.builder import pushed_digest

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def test_a_docker_hub_push_is_recorded_by_the_digest_the_push_printed():
    # Docker Hub images appear in RepoDigests without their registry (`org/model@…`), so
    # the push's own output is the one place that names the pushed digest.
    output = (
        "The push refers to repository [docker.io/org/model]\n"
        "5f70bf18a086: Layer already exists\n"
        f"v7-abc123: digest: {DIGEST} size: 1573\n"
    )
    assert pushed_digest(output, "v7-abc123") == DIGEST


def test_a_digest_printed_for_another_tag_is_not_taken():
    output = f"v6-old: digest: {OTHER} size: 1573\n"
    assert pushed_digest(output, "v7-abc123") == ""
    assert pushed_digest(output, "v6") == ""


def test_a_push_that_printed_no_digest_gives_none():
    assert pushed_digest("error: denied\n", "v7-abc123") == ""
    assert pushed_digest(f"v7-abc123: digest: {DIGEST[:-2]} size: 1\n", "v7-abc123") == ""
