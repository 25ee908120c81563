"""Fitting the vectorizer: scikit-learn's `TfidfVectorizer`s, with the tokenising done first.

Training-only companion of `trainhook_runtime.text` (the served model needs only the fitted
vectorizer). The vectorizer is a `FeatureUnion` of a word 1-2 gram `TfidfVectorizer` (the
`TweetNormalizer` as its tokenizer) and a character 2-5 gram one (`CharNgrams`, scikit-learn's
`char_wb` memoised per word). A hand-written vectorizer was kept until it was measured against
this one in the same run: it was only 1.15x faster as a whole process, under the 1.5x that
would pay for owning a TF-IDF implementation. Tokenising the distinct chunks is the expensive
step, so for big inputs it runs first in forked worker processes that fill the normaliser's
cache.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainhook_runtime.text import TweetNormalizer

# Below this many distinct chunks a process pool costs more than it saves. Measured here
# (2 cores, best of 3): 2k-5k chunks take 30-80 ms on one core and gain nothing from the
# pool's ~30 ms start-up; from 10k chunks on two processes win (40k: 1.4 s -> 0.5 s). The
# airline tweets have ~34k distinct chunks.
PARALLEL_MIN_CHUNKS = 10_000


def make_vectorizer(
    normalizer: TweetNormalizer,
    *,
    word_ngram_range: tuple[int, int] = (1, 2),
    char_ngram_range: tuple[int, int] | None = (2, 5),
    min_df: int = 2,
    sublinear_tf: bool = True,
    word_weight: float = 1.0,
    char_weight: float = 1.0,
) -> Any:
    """The unfitted vectorizer: a `FeatureUnion` of word and (optional) character TF-IDF.

    float32 halves the matrices (the 200k-row peak memory) and changes no prediction of the
    linear model beyond rounding.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    from trainhook_runtime.text import CharNgrams

    common: dict[str, Any] = {"min_df": min_df, "sublinear_tf": sublinear_tf, "dtype": np.float32}
    parts = [
        (
            "word",
            TfidfVectorizer(
                tokenizer=normalizer,
                lowercase=False,
                token_pattern=None,
                ngram_range=word_ngram_range,
                **common,
            ),
        )
    ]
    weights = {"word": word_weight}
    if char_ngram_range is not None:
        low, high = char_ngram_range
        parts.append(("char", TfidfVectorizer(analyzer=CharNgrams(low, high), **common)))
        weights["char"] = char_weight
    return FeatureUnion(parts, transformer_weights=weights)


def normalizer_of(vectorizer: Any) -> TweetNormalizer:
    """The `TweetNormalizer` a vectorizer from `make_vectorizer` tokenises with."""
    tokenizer = vectorizer.transformer_list[0][1].tokenizer
    assert isinstance(tokenizer, TweetNormalizer)
    return tokenizer


def fit_vectorizer(
    vec: Any, texts: Sequence[str], *, workers: int = 1, pretokenise: Sequence[str] = ()
) -> Any:
    """Fit `vec` on `texts`; return their TF-IDF matrix (CSR, float32).

    Chunks of `pretokenise` are tokenised too (warming the cache for a later transform).
    Raises ValueError for no texts.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("cannot fit a vectorizer on no texts")
    normalizer = normalizer_of(vec)
    every = [*texts, *pretokenise]
    distinct = list(dict.fromkeys(chunk for text in every for chunk in text.split()))
    _tokenise(normalizer, distinct, workers)
    return vec.fit_transform(texts).tocsr()


def _tokenise_part(job: tuple[TweetNormalizer, list[str]]) -> list[tuple[str, ...]]:
    normalizer, chunks = job
    return [normalizer.chunk_tokens(chunk) for chunk in chunks]


def _tokenise(normalizer: TweetNormalizer, chunks: list[str], workers: int) -> None:
    """Fill the normaliser's cache with the tokens of `chunks`, in worker processes if big."""
    chunks = normalizer.unseen(chunks)
    if (
        workers <= 1
        or len(chunks) < PARALLEL_MIN_CHUNKS
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        for chunk in chunks:
            normalizer.chunk_tokens(chunk)
        return
    # fork: the workers inherit the imported NLTK instead of importing it again (~1 s each).
    parts = [chunks[i::workers] for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        results = pool.map(_tokenise_part, [(normalizer, part) for part in parts])
    for part, tokens in zip(parts, results, strict=True):
        normalizer.prime(part, tokens)
