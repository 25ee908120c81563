"""Tweet normalisation and TF-IDF features: the classes a served model unpickles.

The fitted `TweetVectorizer` is pickled with joblib and unpickled by the serving app, so every
object it references is a top-level class of this module, and this module imports only the
standard library, NLTK and this package when it is imported (numpy and scipy are imported
when features are computed, in trainhook_runtime.tfidf). Fitting lives in the trainer
(trainer.features), which a served image never needs.

Work is memoised per distinct whitespace-separated chunk of text: a chunk is tokenised
(TweetTokenizer), normalised and stemmed once, and its character n-grams are generated once;
documents are then assembled from their chunks with sparse matrix products. (Tokenising per
chunk differs from tokenising the whole text only for the rare token that spans whitespace,
such as ". . .", and is the same at training and serving time.)
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
_SEP = "\n"  # never inside a token or n-gram: both come from whitespace-split text


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
        return {
            "lowercase": self.lowercase,
            "handles": self.handles,
            "stem": self.stem,
            "stopwords": sorted(self.stopwords),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
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


class TweetVectorizer:
    """TF-IDF features: word n-grams of normalised tokens plus character n-grams of words.

    Each block uses sublinear term frequency (optional), smoothed idf, a minimum document
    frequency and L2 row normalisation; the blocks are scaled by their weights and
    concatenated. `transform(texts)` returns a scipy CSR matrix with one row per text.
    """

    # Fitted state, set by the trainer (trainer.features.fit_vectorizer); arrays are numpy
    # int64/float64.
    token_index_: dict[str, int]
    unigram_columns_: Any
    bigram_codes_: Any
    bigram_columns_: Any
    word_idf_: Any
    char_index_: dict[str, int]
    char_idf_: Any

    def __init__(
        self,
        normalizer: TweetNormalizer,
        *,
        word_ngram_range: tuple[int, int] = (1, 2),
        char_ngram_range: tuple[int, int] | None = (2, 5),
        min_df: int = 2,
        sublinear_tf: bool = True,
        word_weight: float = 1.0,
        char_weight: float = 1.0,
    ) -> None:
        low, high = word_ngram_range
        if not 1 <= low <= high <= 2:
            raise ValueError("word_ngram_range must be (1, 1), (1, 2) or (2, 2)")
        if char_ngram_range is not None and not 1 <= char_ngram_range[0] <= char_ngram_range[1]:
            raise ValueError("char_ngram_range must be (low, high) with 1 <= low <= high")
        self.normalizer = normalizer
        self.word_ngram_range = (low, high)
        self.char_ngram_range = None if char_ngram_range is None else tuple(char_ngram_range)
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf
        self.word_weight = word_weight
        self.char_weight = char_weight
        self._char_cache: dict[str, list[int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # joblib pickles dicts entry by entry in Python (seconds for 100k n-grams); one
        # joined string per vocabulary pickles in milliseconds and is rebuilt on load.
        state = dict(self.__dict__)
        state["_char_cache"] = {}
        # Checked on load, so that a pickle from an incompatible runtime fails with both
        # versions named instead of an AttributeError deep in transform.
        state["runtime_version"] = RUNTIME_VERSION
        for name in ("token_index_", "char_index_"):
            vocab = state.get(name)
            if vocab is not None and not any(_SEP in term for term in vocab):
                state[name] = _SEP.join(vocab)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        check_runtime_version(str(state.pop("runtime_version", "0")), "vectorizer.joblib")
        for name in ("token_index_", "char_index_"):
            vocab = state.get(name)
            if isinstance(vocab, str):
                terms = vocab.split(_SEP) if vocab else []
                state[name] = {term: i for i, term in enumerate(terms)}
        self.__dict__.update(state)

    def transform(self, texts: Sequence[str]) -> Any:
        """Return the TF-IDF matrix (scipy CSR, one row per text) of `texts`.

        Raises RuntimeError if the vectorizer has not been fitted.
        """
        from trainhook_runtime import tfidf

        if not hasattr(self, "word_idf_"):
            raise RuntimeError("TweetVectorizer is not fitted")
        texts = list(texts)
        counts = tfidf.word_counts(self, texts)
        blocks = [tfidf.weighted(counts, self.word_idf_, self.word_weight, self.sublinear_tf)]
        if self.char_ngram_range is not None:
            counts = tfidf.char_counts(self, texts, self._char_cache, CACHE_LIMIT)
            blocks.append(
                tfidf.weighted(counts, self.char_idf_, self.char_weight, self.sublinear_tf)
            )
        return tfidf.hstack(blocks)

    def word_terms(self) -> list[str]:
        """The word n-gram of each word feature column, in column order."""
        tokens = list(self.token_index_)
        names = [""] * (int((self.unigram_columns_ >= 0).sum()) + len(self.bigram_codes_))
        for token_id, column in enumerate(self.unigram_columns_.tolist()):
            if column >= 0:
                names[column] = tokens[token_id]
        width = len(tokens)
        for code, column in zip(self.bigram_codes_.tolist(), self.bigram_columns_, strict=True):
            names[column] = f"{tokens[code // width]} {tokens[code % width]}"
        return names

    def get_feature_names_out(self) -> list[str]:
        """Names of the feature columns in order: `w:` word n-grams, then `c:` char n-grams."""
        names = ["w:" + term for term in self.word_terms()]
        names.extend("c:" + gram for gram in getattr(self, "char_index_", {}))
        return names
