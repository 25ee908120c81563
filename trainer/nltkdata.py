"""NLTK data the trainer needs: declared, found or downloaded, or a clear degraded mode.

Tokenising (TweetTokenizer) and stemming (Snowball) need no NLTK data. Stopword removal, an
option, uses NLTK's `stopwords` corpus; when it is missing and cannot be downloaded, training
falls back to scikit-learn's built-in English list and says so (`NltkStatus.degraded`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# The NLTK data packages the trainer may need; the worker hashes this list (with the NLTK
# version) as the "nltk" cache level, so change it only with the code that uses it.
NLTK_PACKAGES: list[str] = ["stopwords"]
# Where each package lives inside an NLTK data directory (from the NLTK index).
_SUBDIRS = {"stopwords": "corpora"}
# Negations carry sentiment, so they are never removed as stopwords.
NEGATIONS = frozenset(
    [
        "no",
        "nor",
        "not",
        "never",
        "none",
        "nothing",
        "nobody",
        "nowhere",
        "neither",
        "cannot",
        "ain",
        "aren",
        "couldn",
        "didn",
        "doesn",
        "don",
        "hadn",
        "hasn",
        "haven",
        "isn",
        "mightn",
        "mustn",
        "needn",
        "shan",
        "shouldn",
        "wasn",
        "weren",
        "won",
        "wouldn",
    ]
)


@dataclass(frozen=True)
class NltkStatus:
    """Which NLTK packages are usable from `directory`, and why the others are not."""

    directory: str | None
    required: tuple[str, ...]
    present: tuple[str, ...] = ()
    downloaded: tuple[str, ...] = ()
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def degraded(self) -> bool:
        """True when a required package is missing (training uses fallbacks)."""
        return bool(self.missing)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, as recorded in metrics.json under "nltk"."""
        return {
            "degraded": self.degraded,
            "directory": self.directory,
            "required": list(self.required),
            "present": list(self.present),
            "downloaded": list(self.downloaded),
            "missing": dict(self.missing),
        }


def nltk_version() -> str:
    """The installed NLTK's version, read from its distribution metadata: importing nltk
    takes seconds (it pulls in scipy), and cache keys are computed before any training."""
    from importlib import metadata

    try:
        return metadata.version("nltk")
    except metadata.PackageNotFoundError:  # not installed as a distribution (a source tree)
        import nltk

        return str(nltk.__version__)


def nltk_cache_key_material() -> str:
    """Canonical JSON of the sorted package list and the NLTK version, for cache keys."""
    material = {"nltk_version": nltk_version(), "packages": sorted(NLTK_PACKAGES)}
    return json.dumps(material, sort_keys=True, separators=(",", ":"))


def package_path(package: str, directory: str | Path) -> Path | None:
    """The installed location (directory or zip) of `package` under `directory`, or None."""
    root = Path(directory)
    subdirs = [_SUBDIRS[package]] if package in _SUBDIRS else []
    if root.is_dir() and not subdirs:
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
    for subdir in subdirs:
        for candidate in (root / subdir / package, root / subdir / f"{package}.zip"):
            if candidate.exists():
                return candidate
    return None


def ensure_nltk_data(
    packages: Sequence[str], directory: str | Path, index_url: str | None = None
) -> NltkStatus:
    """Make `packages` available in `directory`, downloading what is missing.

    Uses NLTK's own downloader with `index_url` (NLTK's default index when None). Never
    raises for a failed download: the package is reported in `missing` with the reason.
    A second call with everything present touches neither the network nor the index.
    """
    directory = Path(directory)
    required = tuple(dict.fromkeys(packages))
    present = [p for p in required if package_path(p, directory) is not None]
    todo = [p for p in required if p not in present]
    if not todo:
        return NltkStatus(str(directory), required, tuple(present))
    downloaded: list[str] = []
    missing: dict[str, str] = {}
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reasons = {p: f"cannot create {directory}: {exc.strerror or exc}" for p in todo}
        return NltkStatus(str(directory), required, tuple(present), (), reasons)
    from nltk.downloader import Downloader

    _authorise_file_index(index_url)
    downloader = Downloader(server_index_url=index_url) if index_url else Downloader()
    for package in todo:
        errors = io.StringIO()
        try:
            downloader.download(
                package,
                download_dir=str(directory),
                quiet=True,
                raise_on_error=True,
                print_error_to=errors,
            )
        except Exception as exc:  # the downloader raises many kinds; all mean "not available"
            missing[package] = f"download failed: {' '.join(str(exc).split())}"
            continue
        if package_path(package, directory) is None:
            missing[package] = "download reported success but the package is not installed"
        else:
            downloaded.append(package)
    present.extend(downloaded)
    return NltkStatus(str(directory), required, tuple(present), tuple(downloaded), missing)


def find_nltk_data(packages: Sequence[str]) -> NltkStatus:
    """Look for `packages` in NLTK's usual data directories, without downloading."""
    import nltk

    required = tuple(dict.fromkeys(packages))
    missing: dict[str, str] = {}
    found: dict[str, str] = {}
    for package in required:
        for directory in nltk.data.path:
            if isinstance(directory, str) and package_path(package, directory) is not None:
                found[package] = directory
                break
        else:
            missing[package] = "not found in NLTK's data path and no --nltk-data directory given"
    directory = next(iter(found.values()), None)
    return NltkStatus(directory, required, tuple(found), (), missing)


def english_stopwords(status: NltkStatus) -> tuple[frozenset[str], str]:
    """English stopwords without negations, and their source ("nltk" or "sklearn").

    Read from the NLTK `stopwords` package when `status` has it, else scikit-learn's
    ENGLISH_STOP_WORDS (the offline fallback).
    """
    words: set[str] | None = None
    if status.directory is not None and "stopwords" in status.present:
        words = _read_nltk_list(package_path("stopwords", status.directory), "english")
    source = "nltk"
    if words is None:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        words, source = set(ENGLISH_STOP_WORDS), "sklearn"
    return frozenset(w for w in words if not _is_negation(w)), source


def _is_negation(word: str) -> bool:
    word = word.lower().replace("\u2019", "'")
    return word.endswith("n't") or word.replace("'", "") in NEGATIONS


def _read_nltk_list(location: Path | None, name: str) -> set[str] | None:
    if location is None:
        return None
    try:
        if location.suffix == ".zip":
            with zipfile.ZipFile(location) as archive:
                text = archive.read(f"{location.stem}/{name}").decode("utf-8")
        else:
            text = (location / name).read_text(encoding="utf-8")
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    return {line.strip().lower() for line in text.splitlines() if line.strip()}


def _authorise_file_index(index_url: str | None) -> None:
    """Let NLTK read a `file://` index the caller configured.

    NLTK only opens local files inside its data path; an index named explicitly by the
    operator is trusted configuration, so its directory is added for this process.
    """
    if not index_url or not index_url.startswith("file://"):
        return
    import nltk

    folder = str(Path(unquote(urlparse(index_url).path)).parent)
    if folder not in nltk.data.path:
        nltk.data.path.append(folder)
