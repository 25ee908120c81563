"""Sparse counting and TF-IDF weighting behind `TweetVectorizer` (numpy and scipy).

Used when transforming at serving time and when fitting (trainer.features);
`trainhook_runtime.text` imports this module only when features are computed, so that
unpickling a vectorizer stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import scipy.sparse as sp


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


def word_counts(vec: Any, texts: Sequence[str]) -> Any:
    """Word n-gram counts (CSR) of `texts` over the fitted vocabulary."""
    get = vec.token_index_.get
    ids: list[int] = []
    lengths: list[int] = []
    for text in texts:
        tokens = vec.normalizer(text)
        ids.extend([get(token, -1) for token in tokens])
        lengths.append(len(tokens))
    arr = np.asarray(ids, dtype=np.int64)
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    rows, cols = [doc[:0]], [arr[:0]]
    if vec.word_ngram_range[0] == 1:
        known = arr >= 0
        found = vec.unigram_columns_[arr[known]]
        rows.append(doc[known][found >= 0])
        cols.append(found[found >= 0])
    codes = vec.bigram_codes_
    if vec.word_ngram_range[1] == 2 and arr.size > 1 and codes.size:
        left, right = arr[:-1], arr[1:]
        ok = (doc[:-1] == doc[1:]) & (left >= 0) & (right >= 0)
        wanted = left[ok] * len(vec.token_index_) + right[ok]
        pos = np.minimum(np.searchsorted(codes, wanted), codes.size - 1)
        hit = codes[pos] == wanted
        rows.append(doc[:-1][ok][hit])
        cols.append(vec.bigram_columns_[pos[hit]])
    row, col = np.concatenate(rows), np.concatenate(cols)
    shape = (len(lengths), int((vec.unigram_columns_ >= 0).sum()) + len(vec.bigram_codes_))
    return sp.csr_matrix((np.ones(row.size), (row, col)), shape=shape)


def chunk_matrix(chunk_lists: Sequence[list[str]]) -> tuple[Any, list[str]]:
    """(documents x distinct chunks count matrix, the distinct chunks in first-seen order).

    Built with C-speed dict and iterator calls: per chunk occurrence there is no Python code.
    """
    flat = list(chain.from_iterable(chunk_lists))
    distinct = list(dict.fromkeys(flat))
    index = dict(zip(distinct, range(len(distinct)), strict=True))
    cols = np.fromiter(map(index.__getitem__, flat), dtype=np.int64, count=len(flat))
    indptr = np.zeros(len(chunk_lists) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, chunk_lists), np.int64, len(chunk_lists)), out=indptr[1:])
    # Repeated chunks leave duplicate entries in a row; the product with it sums them.
    shape = (len(chunk_lists), len(distinct))
    return sp.csr_matrix((np.ones(len(flat)), cols, indptr), shape=shape), distinct


def char_counts(
    vec: Any, texts: Sequence[str], cache: dict[str, list[int]], cache_limit: int
) -> Any:
    """Character n-gram counts (CSR) of `texts`, as a documents x chunks x n-grams product.

    `cache` (chunk -> its n-gram columns) is cleared when it holds `cache_limit` chunks.
    """
    assert vec.char_ngram_range is not None
    low, high = vec.char_ngram_range
    vocab = vec.char_index_
    docs, chunks = chunk_matrix([text.lower().split() for text in texts])
    gram_cols: list[int] = []
    indptr = [0]
    for chunk in chunks:
        found = cache.get(chunk)
        if found is None:
            if len(cache) >= cache_limit:
                cache.clear()
            grams = char_wb_ngrams(chunk, low, high)
            found = cache[chunk] = [c for c in map(vocab.get, grams) if c is not None]
        gram_cols.extend(found)
        indptr.append(len(gram_cols))
    shape = (len(chunks), len(vocab))
    grams_of = sp.csr_matrix((np.ones(len(gram_cols)), gram_cols, indptr), shape=shape)
    return docs @ grams_of


def weighted(counts: Any, idf: Any, weight: float, sublinear_tf: bool) -> Any:
    """Turn a count matrix into L2-normalised, weighted TF-IDF rows (in place).

    Works through the rows in blocks so that temporaries stay small: on a 200k-row corpus
    whole-matrix temporaries added ~400 MB to the peak memory.
    """
    # `counts` has no duplicate entries (built through tocsr or a matrix product).
    counts = counts.tocsr()
    indptr, rows = counts.indptr, counts.shape[0]
    step = 4096
    for first in range(0, rows, step):
        last = min(rows, first + step)
        start, end = int(indptr[first]), int(indptr[last])
        data = counts.data[start:end]  # a view: changes land in `counts`
        if sublinear_tf:
            np.log(data, out=data)
            data += 1.0
        data *= idf[counts.indices[start:end]]
        per_row = np.diff(indptr[first : last + 1])
        owner = np.repeat(np.arange(last - first), per_row)
        norms = np.sqrt(np.bincount(owner, weights=data * data, minlength=last - first))
        norms[norms == 0.0] = 1.0
        data *= (weight / norms)[owner]
    return counts


def smooth_idf(document_frequency: Any, documents: int) -> Any:
    """Smoothed inverse document frequency, computed as scikit-learn does."""
    df = np.asarray(document_frequency, dtype=np.float64)
    return np.log((1.0 + documents) / (1.0 + df)) + 1.0


def hstack(blocks: list[Any]) -> Any:
    """Concatenate CSR blocks (same rows) column-wise into one CSR matrix."""
    return sp.hstack(blocks, format="csr")
