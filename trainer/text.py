"""Tweet normalisation and TF-IDF features, the part of the trainer a deployed model needs.

The fitted `TweetVectorizer` is pickled with joblib and unpickled by the serving API, so every
object it references is a top-level class of this module, and this module imports only the
standard library and NLTK when it is imported (numpy and scipy are imported when features are
computed). A builder can ship the `trainer` package beside the model and nothing else of ours.

Work is memoised per distinct whitespace-separated chunk of text: a chunk is tokenised
(TweetTokenizer), normalised and stemmed once, and its character n-grams are generated once;
documents are then assembled from their chunks with sparse matrix products.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from nltk.stem.snowball import EnglishStemmer
from nltk.tokenize.casual import TweetTokenizer

USER_TOKEN = "<user>"
URL_TOKEN = "<url>"
HANDLE_MODES = ("placeholder", "strip", "keep")
_URL_RE = re.compile(r"^(?:https?://|www\.)", re.IGNORECASE)
# Caches are cleared when they reach this many entries, so a long-running API cannot grow
# without bound; outputs never depend on the cache state.
_CACHE_LIMIT = 500_000


class TweetNormalizer:
    """Callable turning a text into normalised tokens (a list of strings).

    TweetTokenizer with `reduce_len=True` runs on each whitespace-separated chunk; tokens are
    lowercased, handles become `<user>` (or are stripped or kept), URLs become `<url>`,
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
            preserve_case=True, reduce_len=True, match_phone_numbers=False
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
            if len(self._chunks) >= _CACHE_LIMIT:
                self._chunks.clear()
            tokens = self._chunks[chunk] = self._normalise_chunk(chunk)
        return tokens

    def prime(self, chunks: Sequence[str], tokens: Sequence[tuple[str, ...]]) -> None:
        """Fill the chunk cache with results computed elsewhere (e.g. in worker processes)."""
        self._chunks.update(zip(chunks, tokens, strict=True))

    def _normalise_chunk(self, chunk: str) -> tuple[str, ...]:
        out = []
        for raw in self._tokenizer.tokenize(chunk):
            token = self._tokens.get(raw)
            if token is None:
                if len(self._tokens) >= _CACHE_LIMIT:
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


class TweetVectorizer:
    """TF-IDF features: word n-grams of normalised tokens plus character n-grams of words.

    Each block uses sublinear term frequency (optional), smoothed idf, a minimum document
    frequency and L2 row normalisation; the blocks are scaled by their weights and
    concatenated. `transform(texts)` returns a scipy CSR matrix with one row per text.
    """

    # Fitted state, set by fit_transform (trainer.features); arrays are numpy int64/float64.
    token_index_: dict[str, int]
    unigram_columns_: Any
    bigram_codes_: Any
    bigram_columns_: Any
    word_terms_: list[str]
    word_idf_: Any
    char_index_: dict[str, int]
    char_terms_: list[str]
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
        state = dict(self.__dict__)
        state["_char_cache"] = {}
        return state

    def fit_transform(
        self, texts: Sequence[str], *, workers: int = 1, pretokenise: Sequence[str] = ()
    ) -> Any:
        """Learn vocabularies and idf from `texts`; return their TF-IDF matrix (CSR).

        `workers` > 1 tokenises in that many processes. `pretokenise` texts (e.g. validation
        texts about to be transformed) are tokenised alongside; they do not affect the fit.
        """
        from trainer.features import fit_vectorizer

        return fit_vectorizer(self, texts, workers=workers, pretokenise=pretokenise)

    def fit(self, texts: Sequence[str]) -> TweetVectorizer:
        """Learn vocabularies and idf from `texts`; return self."""
        self.fit_transform(texts)
        return self

    def transform(self, texts: Sequence[str]) -> Any:
        """Return the TF-IDF matrix (scipy CSR, one row per text) of `texts`.

        Raises RuntimeError if the vectorizer has not been fitted.
        """
        import scipy.sparse as sp

        if not hasattr(self, "word_idf_"):
            raise RuntimeError("TweetVectorizer is not fitted")
        texts = list(texts)
        blocks = [self.weighted_tfidf(self.word_counts(texts), self.word_idf_, self.word_weight)]
        if self.char_ngram_range is not None:
            counts = self.char_counts(texts)
            blocks.append(self.weighted_tfidf(counts, self.char_idf_, self.char_weight))
        return sp.hstack(blocks, format="csr")

    def get_feature_names_out(self) -> list[str]:
        """Names of the feature columns in order: `w:` word n-grams, then `c:` char n-grams."""
        names = ["w:" + term for term in self.word_terms_]
        names.extend("c:" + gram for gram in getattr(self, "char_terms_", []))
        return names

    def word_counts(self, texts: Sequence[str]) -> Any:
        """Word n-gram counts (CSR) of `texts` over the fitted vocabulary."""
        import numpy as np
        import scipy.sparse as sp

        get = self.token_index_.get
        ids: list[int] = []
        lengths: list[int] = []
        for text in texts:
            tokens = self.normalizer(text)
            ids.extend([get(token, -1) for token in tokens])
            lengths.append(len(tokens))
        arr = np.asarray(ids, dtype=np.int64)
        doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        rows, cols = [doc[:0]], [arr[:0]]
        if self.word_ngram_range[0] == 1:
            known = arr >= 0
            found = self.unigram_columns_[arr[known]]
            rows.append(doc[known][found >= 0])
            cols.append(found[found >= 0])
        codes = self.bigram_codes_
        if self.word_ngram_range[1] == 2 and arr.size > 1 and codes.size:
            left, right = arr[:-1], arr[1:]
            ok = (doc[:-1] == doc[1:]) & (left >= 0) & (right >= 0)
            wanted = left[ok] * len(self.token_index_) + right[ok]
            pos = np.minimum(np.searchsorted(codes, wanted), codes.size - 1)
            hit = codes[pos] == wanted
            rows.append(doc[:-1][ok][hit])
            cols.append(self.bigram_columns_[pos[hit]])
        row, col = np.concatenate(rows), np.concatenate(cols)
        shape = (len(lengths), len(self.word_terms_))
        return sp.csr_matrix((np.ones(row.size), (row, col)), shape=shape)

    def char_counts(self, texts: Sequence[str]) -> Any:
        """Character n-gram counts (CSR) of `texts`, as a documents x chunks x n-grams product."""
        import numpy as np
        import scipy.sparse as sp

        assert self.char_ngram_range is not None
        low, high = self.char_ngram_range
        cache, vocab = self._char_cache, self.char_index_
        chunk_ids: dict[str, int] = {}
        doc_rows: list[int] = []
        doc_cols: list[int] = []
        for row, text in enumerate(texts):
            for chunk in text.lower().split():
                index = chunk_ids.get(chunk)
                if index is None:
                    index = chunk_ids[chunk] = len(chunk_ids)
                doc_rows.append(row)
                doc_cols.append(index)
        gram_cols: list[int] = []
        indptr = [0]
        for chunk in chunk_ids:
            found = cache.get(chunk)
            if found is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                grams = char_wb_ngrams(chunk, low, high)
                found = cache[chunk] = [c for c in map(vocab.get, grams) if c is not None]
            gram_cols.extend(found)
            indptr.append(len(gram_cols))
        shape = (len(chunk_ids), len(self.char_terms_))
        grams_of = sp.csr_matrix((np.ones(len(gram_cols)), gram_cols, indptr), shape=shape)
        docs = sp.csr_matrix(
            (np.ones(len(doc_rows)), (doc_rows, doc_cols)), shape=(len(texts), len(chunk_ids))
        )
        return (docs @ grams_of).tocsr()

    def weighted_tfidf(self, counts: Any, idf: Any, weight: float) -> Any:
        """Turn a count matrix into L2-normalised, weighted TF-IDF rows (in place)."""
        import numpy as np

        counts = counts.tocsr()
        counts.sum_duplicates()
        if self.sublinear_tf:
            np.log(counts.data, out=counts.data)
            counts.data += 1.0
        counts.data *= idf[counts.indices]
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        norms[norms == 0.0] = 1.0
        counts.data *= np.repeat(weight / norms, np.diff(counts.indptr))
        return counts


def smooth_idf(document_frequency: Any, documents: int) -> Any:
    """Smoothed inverse document frequency, computed as scikit-learn does."""
    import numpy as np

    df = np.asarray(document_frequency, dtype=np.float64)
    return np.log((1.0 + documents) / (1.0 + df)) + 1.0
