"""Tweet normalisation and character n-grams: the callables a served vectorizer unpickles.

The fitted vectorizer is scikit-learn's own: a `FeatureUnion` of two `TfidfVectorizer`s,
word 1-2 grams with `TweetNormalizer` as the tokenizer and character 2-5 grams with
`CharNgrams` as the analyzer. Both callables are top-level classes of this module, which
imports only the standard library, NLTK and this package, so unpickling stays light.

Work is memoised per distinct whitespace-separated chunk of text: a chunk is tokenised
(TweetTokenizer), normalised and stemmed once, and its character n-grams are generated once.
(Tokenising per chunk differs from tokenising the whole text only for the rare token that
spans whitespace, such as ". . .", and is the same at training and serving time.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from nltk.stem.snowball import EnglishStemmer
from nltk.tokenize.casual import TweetTokenizer

from trainhook_runtime.versions import RUNTIME_VERSION, check_runtime_version

USER_TOKEN = "<user>"
URL_TOKEN = "<url>"
HANDLE_MODES = ("placeholder", "strip", "keep")
_URL_RE = re.compile(r"^(?:https?://|www\.)", re.IGNORECASE)
# TweetTokenizer's reduce_len rule: runs of 3+ equal characters become 3. Applied here with a
# precompiled pattern because nltk 3.10 re-validates that regex on every call (~half of the
# tokenising time); the tokens are identical (checked on every chunk of the airline tweets).
_ELONGATED = re.compile(r"(.)\1{2,}")
# Caches are cleared when they reach this many entries, so a long-running API cannot grow
# without bound; outputs never depend on the cache state.
CACHE_LIMIT = 500_000


class TweetNormalizer:
    """Callable turning a text into normalised tokens (a list of strings).

    TweetTokenizer (with its reduce_len rule) runs on each whitespace-separated chunk; tokens
    are lowercased, handles become `<user>` (or are stripped or kept), URLs become `<url>`,
    stopwords are dropped and the rest is Snowball-stemmed, each distinct token exactly once.
    """

    def __init__(
        self,
        *,
        lowercase: bool = True,
        handles: str = "placeholder",
        stem: bool = True,
        stopwords: Iterable[str] = (),
    ) -> None:
        if handles not in HANDLE_MODES:
            raise ValueError(f"handles must be one of {HANDLE_MODES}, not {handles!r}")
        self.lowercase = lowercase
        self.handles = handles
        self.stem = stem
        self.stopwords = frozenset(stopwords)
        self._setup()

    def _setup(self) -> None:
        # preserve_case=True skips TweetTokenizer's per-token emoticon regex; we lowercase
        # ourselves, so ":D" becomes ":d" consistently at training and serving time.
        self._tokenizer = TweetTokenizer(
            preserve_case=True, reduce_len=False, match_phone_numbers=False
        )
        self._stemmer = EnglishStemmer()
        self._chunks: dict[str, tuple[str, ...]] = {}
        self._tokens: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        # The caches are rebuilt on demand; pickling them would bloat the artifact.
        # runtime_version is checked on load, so that a pickle from an incompatible runtime
        # fails with both versions named instead of an AttributeError deep in transform.
        return {
            "lowercase": self.lowercase,
            "handles": self.handles,
            "stem": self.stem,
            "stopwords": sorted(self.stopwords),
            "runtime_version": RUNTIME_VERSION,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        check_runtime_version(str(state.get("runtime_version", "0")), "vectorizer.joblib")
        self.lowercase = state["lowercase"]
        self.handles = state["handles"]
        self.stem = state["stem"]
        self.stopwords = frozenset(state["stopwords"])
        self._setup()

    def __call__(self, text: str) -> list[str]:
        """Return the normalised tokens of `text`."""
        out: list[str] = []
        for chunk in text.split():
            out.extend(self.chunk_tokens(chunk))
        return out

    def chunk_tokens(self, chunk: str) -> tuple[str, ...]:
        """Return the normalised tokens of one whitespace-free chunk (memoised)."""
        tokens = self._chunks.get(chunk)
        if tokens is None:
            if len(self._chunks) >= CACHE_LIMIT:
                self._chunks.clear()
            tokens = self._chunks[chunk] = self._normalise_chunk(chunk)
        return tokens

    def unseen(self, chunks: Iterable[str]) -> list[str]:
        """The chunks of `chunks` whose tokens are not cached yet."""
        return [chunk for chunk in chunks if chunk not in self._chunks]

    def prime(self, chunks: Sequence[str], tokens: Sequence[tuple[str, ...]]) -> None:
        """Fill the chunk cache with results computed elsewhere (e.g. in worker processes)."""
        self._chunks.update(zip(chunks, tokens, strict=True))

    def raw_tokens(self, chunk: str) -> list[str]:
        """TweetTokenizer's tokens of one chunk (reduce_len rule applied), not yet normalised."""
        chunk = _ELONGATED.sub(r"\1\1\1", chunk)
        if chunk.isascii() and chunk.isalpha():
            # TweetTokenizer keeps a run of ASCII letters whole; a third of all chunks
            # take this shortcut (equivalence is tested).
            return [chunk]
        return self._tokenizer.tokenize(chunk)

    def _normalise_chunk(self, chunk: str) -> tuple[str, ...]:
        out = []
        for raw in self.raw_tokens(chunk):
            token = self._tokens.get(raw)
            if token is None:
                if len(self._tokens) >= CACHE_LIMIT:
                    self._tokens.clear()
                token = self._tokens[raw] = self._normalise_token(raw)
            if token:
                out.append(token)
        return tuple(out)

    def _normalise_token(self, raw: str) -> str:
        """The feature token for one raw token; "" means the token is dropped."""
        token = raw.lower() if self.lowercase else raw
        if len(token) > 1 and token[0] == "@":
            if self.handles == "placeholder":
                return USER_TOKEN
            return "" if self.handles == "strip" else token
        if _URL_RE.match(token):
            return URL_TOKEN
        hashtag = len(token) > 1 and token[0] == "#"
        word = token[1:] if hashtag else token
        if word.lower() in self.stopwords:
            return ""
        if self.stem:
            word = self._stemmer.stem(word)
        return "#" + word if hashtag else word


def char_wb_ngrams(chunk: str, low: int, high: int) -> list[str]:
    """Character n-grams of one word padded with spaces, as scikit-learn's `char_wb` makes them."""
    padded = f" {chunk} "
    size = len(padded)
    grams = []
    for n in range(low, high + 1):
        if size <= n:
            # A word shorter than n contributes itself once, and longer n add nothing new.
            grams.append(padded)
            break
        grams += [padded[i : i + n] for i in range(size - n + 1)]
    return grams


class CharNgrams:
    """Analyzer for `TfidfVectorizer(analyzer=...)`: scikit-learn's `char_wb` n-grams of the
    lowercased text, generated once per distinct word.

    The n-grams are exactly those of `analyzer="char_wb"` (tested); scikit-learn makes them
    again for every occurrence of a word, which made its character block the slowest part of
    a training run (the airline tweets have 14k texts but only ~20k distinct words).
    """

    def __init__(self, low: int = 2, high: int = 5) -> None:
        if not 1 <= low <= high:
            raise ValueError("CharNgrams needs 1 <= low <= high")
        self.low = low
        self.high = high
        self._cache: dict[str, list[str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "runtime_version": RUNTIME_VERSION}

    def __setstate__(self, state: dict[str, Any]) -> None:
        check_runtime_version(str(state.get("runtime_version", "0")), "vectorizer.joblib")
        self.low = state["low"]
        self.high = state["high"]
        self._cache = {}

    def __call__(self, text: str) -> list[str]:
        """Return the character n-grams of `text` (lowercased), word by word."""
        out: list[str] = []
        cache = self._cache
        for chunk in text.lower().split():
            grams = cache.get(chunk)
            if grams is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                grams = cache[chunk] = char_wb_ngrams(chunk, self.low, self.high)
            out += grams
        return out
