"""Fitting a `TweetVectorizer`: vocabularies, document frequencies and idf.

Training-only companion of `trainhook_runtime.text` (the served model needs only the
fitted vectorizer). Tokenising the distinct chunks is the expensive step; for big inputs it
runs in forked worker processes while this process builds the character n-gram block.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from trainhook_runtime.text import TweetNormalizer, TweetVectorizer
from trainhook_runtime.tfidf import char_wb_ngrams, chunk_matrix, hstack, smooth_idf, weighted

# Below this many distinct chunks a process pool costs more than it saves. Measured here
# (2 cores, best of 3): 2k-5k chunks take 30-80 ms on one core and gain nothing from the
# pool's ~30 ms start-up; from 10k chunks on two processes win (40k: 1.4 s -> 0.5 s). The
# airline tweets have ~34k distinct chunks.
PARALLEL_MIN_CHUNKS = 10_000


def fit_vectorizer(
    vec: TweetVectorizer, texts: Sequence[str], *, workers: int = 1, pretokenise: Sequence[str] = ()
) -> Any:
    """Fit `vec` on `texts` (setting its fitted attributes); return the TF-IDF matrix (CSR).

    Chunks of `pretokenise` are tokenised too (warming the cache for a later transform).
    Raises ValueError for no texts.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("cannot fit a vectorizer on no texts")
    chunks_per_doc = [text.split() for text in texts]
    every = [*chunks_per_doc, *(text.split() for text in pretokenise)]
    distinct = list(dict.fromkeys(chunk for chunks in every for chunk in chunks))
    pending = _start_tokenising(vec.normalizer, distinct, workers)
    char_block = None
    if vec.char_ngram_range is not None:
        counts, df = _fit_char(vec, chunks_per_doc)
        idf = _idf(vec, "char_idf_", df, len(texts))
        char_block = weighted(counts, idf, vec.char_weight, vec.sublinear_tf)
    _finish_tokenising(vec.normalizer, distinct, pending)
    counts, df = _fit_word(vec, chunks_per_doc)
    idf = _idf(vec, "word_idf_", df, len(texts))
    blocks = [weighted(counts, idf, vec.word_weight, vec.sublinear_tf)]
    if char_block is not None:
        blocks.append(char_block)
    return hstack(blocks)


def _idf(vec: TweetVectorizer, name: str, df: Any, documents: int) -> Any:
    idf = smooth_idf(df, documents)
    setattr(vec, name, idf)
    return idf


def _tokenise_part(job: tuple[TweetNormalizer, list[str]]) -> list[tuple[str, ...]]:
    normalizer, chunks = job
    return [normalizer.chunk_tokens(chunk) for chunk in chunks]


def _start_tokenising(normalizer: TweetNormalizer, chunks: list[str], workers: int) -> Any:
    """Start tokenising `chunks` in worker processes, or return None to do it inline."""
    if (
        workers <= 1
        or len(chunks) < PARALLEL_MIN_CHUNKS
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return None
    # fork: the workers inherit the imported NLTK instead of importing it again (~1 s each).
    pool = multiprocessing.get_context("fork").Pool(workers)
    parts = [chunks[i::workers] for i in range(workers)]
    result = pool.map_async(_tokenise_part, [(normalizer, part) for part in parts])
    return pool, parts, result


def _finish_tokenising(normalizer: TweetNormalizer, chunks: list[str], pending: Any) -> None:
    if pending is None:
        for chunk in chunks:
            normalizer.chunk_tokens(chunk)
        return
    pool, parts, result = pending
    try:
        for part, tokens in zip(parts, result.get(), strict=True):
            normalizer.prime(part, tokens)
    finally:
        pool.close()
        pool.join()


def _fit_word(vec: TweetVectorizer, chunks_per_doc: list[list[str]]) -> tuple[Any, Any]:
    """Word unigram/bigram counts and document frequencies; sets the word vocabulary."""
    low, high = vec.word_ngram_range
    index: dict[str, int] = {}
    chunk_ids: dict[str, tuple[int, ...]] = {}
    ids: list[int] = []
    lengths: list[int] = []
    for chunks in chunks_per_doc:
        start = len(ids)
        for chunk in chunks:
            found = chunk_ids.get(chunk)
            if found is None:
                tokens = vec.normalizer.chunk_tokens(chunk)
                found = chunk_ids[chunk] = tuple(index.setdefault(t, len(index)) for t in tokens)
            ids.extend(found)
        lengths.append(len(ids) - start)
    n_docs, n_tokens = len(lengths), len(index)
    arr = np.asarray(ids, dtype=np.int64)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)

    uni = sp.csr_matrix((np.ones(arr.size), (doc, arr)), shape=(n_docs, n_tokens))
    uni_df = np.bincount(uni.indices, minlength=n_tokens)
    keep_uni = (uni_df >= vec.min_df) & (low == 1)

    same = doc[:-1] == doc[1:]
    codes = arr[:-1][same] * n_tokens + arr[1:][same]
    uniq, inverse = np.unique(codes, return_inverse=True)
    bi = sp.csr_matrix((np.ones(codes.size), (doc[:-1][same], inverse)), shape=(n_docs, uniq.size))
    bi_df = np.bincount(bi.indices, minlength=uniq.size)
    keep_bi = (bi_df >= vec.min_df) & (high == 2)

    # Keep only the tokens the kept n-grams use, renumbered in first-seen order.
    kept_uni = np.flatnonzero(keep_uni)
    kept_codes = uniq[keep_bi]
    needed = np.union1d(kept_uni, np.concatenate([kept_codes // n_tokens, kept_codes % n_tokens]))
    new_id = np.full(n_tokens, -1, dtype=np.int64)
    new_id[needed] = np.arange(needed.size)
    by_id = list(index)
    vec.token_index_ = {by_id[i]: k for k, i in enumerate(needed.tolist())}
    vec.unigram_columns_ = np.full(needed.size, -1, dtype=np.int64)
    vec.unigram_columns_[new_id[kept_uni]] = np.arange(kept_uni.size)
    new_codes = new_id[kept_codes // n_tokens] * needed.size + new_id[kept_codes % n_tokens]
    order = np.argsort(new_codes, kind="stable")
    vec.bigram_codes_ = new_codes[order]
    vec.bigram_columns_ = (kept_uni.size + np.arange(kept_codes.size, dtype=np.int64))[order]
    counts = hstack([uni[:, keep_uni], bi[:, keep_bi]])
    return counts, np.concatenate([uni_df[keep_uni], bi_df[keep_bi]])


def _fit_char(vec: TweetVectorizer, chunks_per_doc: list[list[str]]) -> tuple[Any, Any]:
    """Character n-gram counts and document frequencies; sets the character vocabulary."""
    assert vec.char_ngram_range is not None
    low, high = vec.char_ngram_range
    docs, raw_chunks = chunk_matrix(chunks_per_doc)
    # Lowercase each distinct chunk once (text.lower().split() gives the same chunks as
    # lowercasing those of text.split()), then point the document columns at them.
    lowered = [chunk.lower() for chunk in raw_chunks]
    chunks = list(dict.fromkeys(lowered))
    position = {chunk: i for i, chunk in enumerate(chunks)}
    to_lower = np.fromiter(map(position.__getitem__, lowered), np.int64, len(lowered))
    shape = (docs.shape[0], len(chunks))
    docs = sp.csr_matrix((docs.data, to_lower[docs.indices], docs.indptr), shape=shape)
    grams: list[str] = []
    indptr = [0]
    for chunk in chunks:
        grams += char_wb_ngrams(chunk, low, high)
        indptr.append(len(grams))
    # dict.fromkeys and map run at C speed; a Python-level setdefault per n-gram is 10x slower.
    index = {gram: i for i, gram in enumerate(dict.fromkeys(grams))}
    gram_cols = np.fromiter(map(index.__getitem__, grams), dtype=np.int64, count=len(grams))
    grams_of = sp.csr_matrix(
        (np.ones(len(gram_cols)), gram_cols, indptr), shape=(len(chunks), len(index))
    )
    counts = (docs @ grams_of).tocsr()
    df = np.bincount(counts.indices, minlength=len(index))
    keep = df >= vec.min_df
    kept = [gram for gram, i in index.items() if keep[i]]
    vec.char_index_ = {gram: k for k, gram in enumerate(kept)}
    return counts[:, keep].tocsr(), df[keep]
