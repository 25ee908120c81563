"""Signature checks compare the whole MAC (or token): a value wrong in any single character,
one cut short or one with something appended, is refused on every route."""

from __future__ import annotations

import hmac
from collections.abc import Callable

import pytest

from service.forges import Forge, Unauthorized
from service.forges.gitea import Gitea
from service.forges.gitea import signature as gitea_signature
from service.forges.github import GitHub
from service.forges.github import signature as github_signature
from service.forges.gitlab import GitLab

SECRET = "It's a Secret to Everybody"
BODY = b'{"ref":"refs/heads/main","after":"' + b"1f" * 20 + b'"}'


def other_char(value: str, at: int) -> str:
    """`value` with the character at `at` replaced by another hex digit."""
    swapped = "0" if value[at] != "0" else "1"
    return value[:at] + swapped + value[at + 1 :]


def every_position(value: str, start: int = 0) -> list[str]:
    return [other_char(value, at) for at in range(start, len(value))]


def test_github_accepts_its_own_signature():
    GitHub().verify({"x-hub-signature-256": github_signature(SECRET, BODY)}, BODY, SECRET)


def test_github_refuses_a_signature_wrong_in_any_one_character():
    good = github_signature(SECRET, BODY)
    assert good == "sha256=" + hmac.new(SECRET.encode(), BODY, "sha256").hexdigest()
    for bad in [*every_position(good, len("sha256=")), good[:-1], good + "0", good[:39]]:
        with pytest.raises(Unauthorized, match=r"^signature does not match$"):
            GitHub().verify({"x-hub-signature-256": bad}, BODY, SECRET)


def test_github_refuses_a_missing_signature_by_name():
    with pytest.raises(Unauthorized, match=r"^missing X-Hub-Signature-256 header$"):
        GitHub().verify({}, BODY, SECRET)


@pytest.mark.parametrize("name", ["gitea", "forgejo"])
def test_gitea_and_forgejo_refuse_a_signature_wrong_in_any_one_character(name: str):
    header = f"x-{name}-signature"
    good = gitea_signature(SECRET, BODY)
    assert good == hmac.new(SECRET.encode(), BODY, "sha256").hexdigest()
    Gitea(name).verify({header: good}, BODY, SECRET)
    Gitea(name).verify({header: f" {good.upper()} "}, BODY, SECRET)  # case and blanks
    for bad in [*every_position(good), good[:-1], good + "0", good[:32]]:
        with pytest.raises(Unauthorized, match=r"^signature does not match$"):
            Gitea(name).verify({header: bad}, BODY, SECRET)


@pytest.mark.parametrize("name", ["gitea", "forgejo"])
def test_gitea_and_forgejo_refuse_an_unsigned_delivery_naming_both_headers(name: str):
    with pytest.raises(Unauthorized, match=r"-Signature \(or X-.*-Signature\) header"):
        Gitea(name).verify({}, BODY, SECRET)


def test_gitlab_refuses_a_token_wrong_in_any_one_character_or_length():
    GitLab().verify({"x-gitlab-token": SECRET}, BODY, SECRET)
    variants = [SECRET[:at] + "#" + SECRET[at + 1 :] for at in range(len(SECRET))]
    for bad in [*variants, SECRET[:-1], SECRET + "x", SECRET[: len(SECRET) // 2]]:
        with pytest.raises(Unauthorized, match="X-Gitlab-Token does not match"):
            GitLab().verify({"x-gitlab-token": bad}, BODY, SECRET)
    with pytest.raises(Unauthorized, match="missing X-Gitlab-Token header"):
        GitLab().verify({}, BODY, SECRET)


def test_a_signature_over_other_bytes_or_with_another_secret_is_refused():
    cases: list[tuple[Forge, str, Callable[[str, bytes], str]]] = [
        (GitHub(), "x-hub-signature-256", github_signature),
        (Gitea(), "x-gitea-signature", gitea_signature),
    ]
    for forge, header, sign in cases:
        with pytest.raises(Unauthorized):
            forge.verify({header: sign(SECRET, BODY + b" ")}, BODY, SECRET)
        with pytest.raises(Unauthorized):
            forge.verify({header: sign(SECRET + "x", BODY)}, BODY, SECRET)


def test_gitlab_refusals_say_exactly_what_is_wrong_with_the_token():
    with pytest.raises(
        Unauthorized, match=r"^missing X-Gitlab-Token header \(set the hook's secret token\)$"
    ):
        GitLab().verify({}, BODY, SECRET)
    with pytest.raises(
        Unauthorized, match=r"^X-Gitlab-Token does not match the configured secret$"
    ):
        GitLab().verify({"x-gitlab-token": SECRET + "x"}, BODY, SECRET)


def test_gitlab_matches_a_secret_holding_bytes_that_are_not_utf8_byte_for_byte():
    # An environment variable with such bytes arrives as surrogates; the header as latin-1.
    GitLab().verify({"x-gitlab-token": "s\xff"}, BODY, "s\udcff")
    with pytest.raises(Unauthorized, match="does not match"):
        GitLab().verify({"x-gitlab-token": "s\xfe"}, BODY, "s\udcff")


@pytest.mark.parametrize(
    ("name", "own", "other"), [("gitea", "Gitea", "Forgejo"), ("forgejo", "Forgejo", "Gitea")]
)
def test_gitea_and_forgejo_refusals_say_exactly_what_is_wrong(name: str, own: str, other: str):
    missing = (
        rf"^missing X-{own}-Signature \(or X-{other}-Signature\) header: set the hook's secret$"
    )
    with pytest.raises(Unauthorized, match=missing):
        Gitea(name).verify({}, BODY, SECRET)
    with pytest.raises(Unauthorized, match=r"^signature does not match$"):
        Gitea(name).verify({f"x-{name}-signature": "0" * 64}, BODY, SECRET)
