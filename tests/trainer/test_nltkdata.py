"""NLTK data: found, downloaded through NLTK's own downloader from a local index, or degraded."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import nltk
import pytest

from trainer.nltkdata import (
    NLTK_PACKAGES,
    NltkStatus,
    english_stopwords,
    ensure_nltk_data,
    nltk_cache_key_material,
)

WORDS = ["i", "me", "the", "a", "not", "no", "don't", "nor", "ourselves"]


def build_index(folder: Path, *, corrupt: str | None = None) -> str:
    """A local NLTK index (file:// URL) serving a stopwords zip; `corrupt` breaks it."""
    folder.mkdir(parents=True, exist_ok=True)
    words = ("\n".join(WORDS) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("stopwords/", b"")
        archive.writestr("stopwords/english", words)
    data = buffer.getvalue()
    md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    if corrupt == "checksum":
        data = data[:-1] + bytes([data[-1] ^ 1])  # same size, other bytes
    if corrupt == "zip":
        data = b"not a zip file at all" + b"\0" * (len(data) - 21)
        md5, sha = hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    (folder / "stopwords.zip").write_bytes(data)
    url = (folder / "stopwords.zip").as_uri()
    (folder / "index.xml").write_text(
        '<?xml version="1.0"?><nltk_data><packages>\n'
        f' <package id="stopwords" name="Stopwords Corpus" subdir="corpora" unzip="1" url="{url}"'
        f' size="{len(data)}" unzipped_size="{len(words)}" checksum="{md5}"'
        f' sha256_checksum="{sha}"/>\n'
        "</packages><collections/></nltk_data>\n",
        encoding="utf-8",
    )
    return (folder / "index.xml").as_uri()


@pytest.fixture(autouse=True)
def restore_nltk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Downloads add directories to nltk.data.path; keep that from leaking between tests.
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))


def test_a_missing_package_is_downloaded_from_the_index(tmp_path: Path) -> None:
    status = ensure_nltk_data(["stopwords"], tmp_path / "nltk", build_index(tmp_path / "srv"))
    assert status.present == ("stopwords",) and status.downloaded == ("stopwords",)
    assert not status.degraded
    assert (tmp_path / "nltk" / "corpora" / "stopwords" / "english").is_file()


def test_a_second_call_is_a_noop_that_never_reads_the_index(tmp_path: Path) -> None:
    index = build_index(tmp_path / "srv")
    ensure_nltk_data(["stopwords"], tmp_path / "nltk", index)
    for served in (tmp_path / "srv").iterdir():
        served.unlink()  # any download attempt would now fail
    again = ensure_nltk_data(["stopwords"], tmp_path / "nltk", index)
    assert again == NltkStatus(str(tmp_path / "nltk"), ("stopwords",), ("stopwords",))


def test_a_download_with_a_bad_checksum_is_degraded_with_the_reason(tmp_path: Path) -> None:
    index = build_index(tmp_path / "srv", corrupt="checksum")
    status = ensure_nltk_data(["stopwords"], tmp_path / "nltk", index)
    assert status.degraded and status.present == ()
    assert "sha256 mismatch" in status.missing["stopwords"]


def test_a_download_that_is_not_a_zip_is_degraded_with_the_reason(tmp_path: Path) -> None:
    status = ensure_nltk_data(
        ["stopwords"], tmp_path / "nltk", build_index(tmp_path / "s", corrupt="zip")
    )
    assert status.degraded and "download failed" in status.missing["stopwords"]
    assert not (tmp_path / "nltk" / "corpora" / "stopwords").exists()


def test_an_unreachable_index_is_degraded_with_the_reason(tmp_path: Path) -> None:
    gone = (tmp_path / "no-such-dir" / "index.xml").as_uri()
    status = ensure_nltk_data(["stopwords"], tmp_path / "nltk", gone)
    assert status.degraded and status.missing["stopwords"].startswith("download failed")
    assert status.to_dict()["degraded"] is True


def test_an_unknown_package_is_degraded_not_raised(tmp_path: Path) -> None:
    status = ensure_nltk_data(["nonesuch"], tmp_path / "nltk", build_index(tmp_path / "srv"))
    assert status.missing.keys() == {"nonesuch"}


def test_stopwords_come_from_nltk_data_when_present_and_keep_negations(tmp_path: Path) -> None:
    status = ensure_nltk_data(["stopwords"], tmp_path / "nltk", build_index(tmp_path / "srv"))
    words, source = english_stopwords(status)
    assert source == "nltk"
    assert words == {"i", "me", "the", "a", "ourselves"}  # not, no, don't, nor are kept


def test_stopwords_fall_back_to_scikit_learn_when_degraded() -> None:
    words, source = english_stopwords(NltkStatus(None, ("stopwords",), missing={"stopwords": "x"}))
    assert source == "sklearn" and "the" in words and "not" not in words and "no" not in words


def test_cache_key_material_is_the_sorted_packages_and_nltk_version() -> None:
    material = json.loads(nltk_cache_key_material())
    assert material == {"nltk_version": nltk.__version__, "packages": sorted(NLTK_PACKAGES)}
    assert nltk_cache_key_material() == nltk_cache_key_material()
