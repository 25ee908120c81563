"""Fitting a `TweetVectorizer`: vocabularies, document frequencies, counts and TF-IDF rows.

Training-only companion of `trainhook_runtime.text` (the served model needs only the
fitted vectorizer). Tokenising the distinct chunks is the expensive step; for big inputs it
runs in forked worker processes while this process builds the character n-gram block.

Memory (measured on 200,000 synthetic rows, 35.6 M non-zeros): texts are counted once into
one float32 count matrix (8 bytes a non-zero instead of 12 for float64 TF-IDF), and the
TF-IDF rows of any row range are derived from it with that range's own document
frequencies, so the validation model and the refit share one tokenising and counting pass.
The chunks of the texts are interned (one string object per distinct chunk instead of one per
occurrence: 1.76 M occurrences, 53 k distinct).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import scipy.sparse as sp

from trainhook_runtime.text import TweetNormalizer, TweetVectorizer
from trainhook_runtime.tfidf import char_wb_ngrams, smooth_idf

# Below this many distinct chunks a process pool costs more than it saves. Measured here
# (2 cores, best of 3): 2k-5k chunks take 30-80 ms on one core and gain nothing from the
# pool's ~30 ms start-up; from 10k chunks on two processes win (40k: 1.4 s -> 0.5 s). The
# airline tweets have ~34k distinct chunks.
PARALLEL_MIN_CHUNKS = 10_000
# Rows per block when weighting or compacting: temporaries stay a few MB.
_BLOCK = 8192
# Indices counted at a time (see _column_counts): an int64 temporary of 32 MB.
_INDEX_BLOCK = 1 << 22
# Distinct chunks whose character n-grams are made at a time (see _count_char).
_GRAM_BATCH = 4096


class Counts:
    """Raw n-gram counts of some texts: a CSR matrix (counts as uint8, uint16 or float32,
    int32 indices) whose first `n_word` columns are the word n-grams and the rest the
    character n-grams, in the order of the fitted vectorizer's columns."""

    def __init__(self, matrix: Any, n_word: int) -> None:
        self.matrix = matrix
        self.n_word = n_word

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])

    def document_frequency(self, first: int, last: int) -> Any:
        """Rows among `first:last` that have each column (counts have no explicit zeros)."""
        indptr = self.matrix.indptr
        return _column_counts(
            self.matrix.indices[int(indptr[first]) : int(indptr[last])], self.matrix.shape[1]
        )

    def tfidf(
        self, vec: TweetVectorizer, first: int, last: int, idf: Any, dtype: Any = np.float64
    ) -> Any:
        """TF-IDF rows (CSR, values of `dtype`) of rows `first:last`, with `idf` per column.

        Columns with idf 0 (n-grams too rare in the rows a model is fitted on) become explicit
        zeros; a zero contributes nothing to a row's norm nor to a linear model, so the rows
        equal those of a vectorizer fitted without those columns. The indices are a view of
        the counts' (not copied: 4 bytes a non-zero).
        """
        m = self.matrix
        indptr = m.indptr[first : last + 1]
        start, end = int(indptr[0]), int(indptr[-1])
        indices = m.indices[start:end]
        data = _weigh(m.data[start:end], indices, indptr - start, idf, vec, self.n_word, dtype)
        shape = (last - first, m.shape[1])
        return sp.csr_matrix((data, indices, indptr - start), shape=shape, copy=False)

    def take_rows(self, order: Any) -> Counts:
        """The counts with their rows in `order` (a copy; release this one after)."""
        return Counts(self.matrix[np.asarray(order)], self.n_word)


def _column_counts(indices: Any, columns: int) -> Any:
    """How often each of `columns` occurs in `indices`, a few million at a time: bincount
    converts int32 indices to int64 first, a copy of 285 MB at 200k synthetic rows that made
    the refit's memory peak."""
    total = np.zeros(columns, dtype=np.int64)
    for start in range(0, indices.size, _INDEX_BLOCK):
        total += np.bincount(indices[start : start + _INDEX_BLOCK], minlength=columns)
    return total


def fit_vectorizer(
    vec: TweetVectorizer, texts: Sequence[str], *, workers: int = 1, pretokenise: Sequence[str] = ()
) -> Any:
    """Fit `vec` on `texts` (setting its fitted attributes); return the TF-IDF matrix (CSR).

    Chunks of `pretokenise` are tokenised too (warming the cache for a later transform).
    Raises ValueError for no texts.
    """
    return fitted_tfidf(vec, count_features(vec, texts, workers=workers, pretokenise=pretokenise))


def fitted_tfidf(vec: TweetVectorizer, counts: Counts, dtype: Any = np.float64) -> Any:
    """Set `vec`'s idf from every row of `counts`; return those rows' TF-IDF (of `dtype`)."""
    set_idf(vec, counts, counts.document_frequency(0, counts.rows), counts.rows)
    return counts.tfidf(vec, 0, counts.rows, fitted_idf(vec), dtype)


def set_idf(vec: TweetVectorizer, counts: Counts, df: Any, documents: int) -> None:
    """Set `vec`'s word and character idf from the document frequencies `df` of all columns."""
    idf = smooth_idf(df, documents)
    vec.word_idf_ = idf[: counts.n_word]
    if vec.char_ngram_range is not None:
        vec.char_idf_ = idf[counts.n_word :]


def fitted_idf(vec: TweetVectorizer) -> Any:
    """The idf of every column of `vec` (word, then character columns)."""
    parts = [vec.word_idf_]
    if vec.char_ngram_range is not None:
        parts.append(vec.char_idf_)
    return np.concatenate(parts)


def subset_idf(vec: TweetVectorizer, df: Any, documents: int) -> Any:
    """The idf a vectorizer fitted on only some rows would give each column: smoothed idf
    from those rows' document frequencies `df`, and 0 where `df` is below `min_df` (that
    vectorizer would not have the column at all)."""
    idf = smooth_idf(df, documents)
    idf[np.asarray(df) < vec.min_df] = 0.0
    return idf


def count_features(
    vec: TweetVectorizer, texts: Sequence[str], *, workers: int = 1, pretokenise: Sequence[str] = ()
) -> Counts:
    """Fit `vec`'s vocabularies on `texts` (n-grams in at least `min_df` of them) and return
    their counts (the idf is not set: see `set_idf`). Raises ValueError for no texts."""
    if not texts:
        raise ValueError("cannot fit a vectorizer on no texts")
    n_docs = len(texts)
    per_doc = np.fromiter(map(len, map(str.split, texts)), np.int64, n_docs)
    doc_ptr = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(per_doc, out=doc_ptr[1:])
    # Interned: every occurrence of a chunk is the same string object (8 bytes a pointer).
    flat = list(map(sys.intern, chain.from_iterable(map(str.split, texts))))
    distinct = list(dict.fromkeys(flat))
    position = dict(zip(distinct, range(len(distinct)), strict=True))
    occurrences = np.fromiter(map(position.__getitem__, flat), np.int64, len(flat))
    del flat, position
    extra = list(dict.fromkeys(chain.from_iterable(map(str.split, pretokenise))))
    to_tokenise = list(dict.fromkeys([*distinct, *extra])) if extra else distinct
    pending = _start_tokenising(vec.normalizer, to_tokenise, workers)
    char = None
    if vec.char_ngram_range is not None:
        # Narrowed and compacted before the word block is counted beside it.
        char = _small_counts(_count_char(vec, distinct, occurrences, doc_ptr))
    _finish_tokenising(vec.normalizer, to_tokenise, pending)
    word = _small_counts(_count_word(vec, distinct, occurrences, doc_ptr))
    n_word = word.shape[1]
    if char is None:
        return Counts(word, n_word)
    return Counts(_join_columns(word, char), n_word)


def _join_columns(left: Any, right: Any) -> Any:
    """`hstack([left, right])` of two CSR count matrices (narrowed by `_small_counts`).

    Each block's values are narrowed to uint8 (or uint16) before the join, and the join
    writes into arrays allocated once: scipy's hstack of the float32 blocks was the
    trainer's memory peak (200k synthetic rows: 1,328 MiB resident, against 772 MiB just
    before it).
    """
    rows = left.shape[0]
    dtype = np.promote_types(left.data.dtype, right.data.dtype)
    indptr = left.indptr.astype(np.int64) + right.indptr
    nnz = int(indptr[-1])
    index_dtype = np.int32 if max(nnz, left.shape[1] + right.shape[1]) < 2**31 else np.int64
    indices = np.empty(nnz, dtype=index_dtype)
    data = np.empty(nnz, dtype=dtype)
    # An entry of row r moves by the other block's entries before it: the right block's in
    # rows < r for a left entry, the left block's in rows <= r for a right one.
    for part, before, shift in (
        (left, right.indptr[:-1], 0),
        (right, left.indptr[1:], left.shape[1]),
    ):
        for first in range(0, rows, _BLOCK):
            last = min(rows, first + _BLOCK)
            start, end = int(part.indptr[first]), int(part.indptr[last])
            lengths = np.diff(part.indptr[first : last + 1])
            target = np.arange(start, end) + np.repeat(before[first:last], lengths)
            indices[target] = part.indices[start:end] + shift
            data[target] = part.data[start:end]
    shape = (rows, left.shape[1] + right.shape[1])
    return sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=shape, copy=False)


def _small_counts(matrix: Any) -> Any:
    """`matrix` with its counts stored as uint8 or uint16 when they fit (exact integers).

    The counts stay alive through the held-out fit for the refit: at 200k synthetic rows
    uint8 takes 36 MB where float32 took 142 MB.
    """
    top = matrix.data.max() if matrix.data.size else 0
    for dtype in (np.uint8, np.uint16):
        if top <= np.iinfo(dtype).max:
            matrix.data = matrix.data.astype(dtype)
            break
    if matrix.indices.base is not None:
        # A view of the arrays before rare columns were dropped (see _keep_columns): a copy
        # of the part in use lets the whole buffer go.
        matrix.indices = matrix.indices.copy()
    return matrix


def _weigh(
    counts: Any,
    indices: Any,
    indptr: Any,
    idf: Any,
    vec: TweetVectorizer,
    n_word: int,
    dtype: Any = np.float64,
) -> Any:
    """TF-IDF values (of `dtype`) of count values: sublinear TF, times idf, each block (word,
    character) L2-normalised per row and scaled by its weight. Works in row blocks, in
    float64 whatever `dtype` is."""
    out = np.empty(counts.size, dtype=dtype)
    rows = indptr.size - 1
    weights = np.array([vec.word_weight, vec.char_weight])
    for first in range(0, rows, _BLOCK):
        last = min(rows, first + _BLOCK)
        start, end = int(indptr[first]), int(indptr[last])
        data = counts[start:end].astype(np.float64)
        if vec.sublinear_tf:
            np.log(data, out=data)
            data += 1.0
        cols = indices[start:end]
        data *= idf[cols]
        block = (cols >= n_word).astype(np.int64)
        owner = np.repeat(np.arange(last - first), np.diff(indptr[first : last + 1])) * 2 + block
        norms = np.sqrt(np.bincount(owner, weights=data * data, minlength=2 * (last - first)))
        norms[norms == 0.0] = 1.0
        data *= (np.tile(weights, last - first) / norms)[owner]
        out[start:end] = data
    return out


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


def _count_word(vec: TweetVectorizer, distinct: list[str], occurrences: Any, doc_ptr: Any) -> Any:
    """Word unigram/bigram counts (CSR, float32); sets the word vocabulary.

    Each distinct chunk's token ids are found once; the token stream of every document is
    then gathered from them with numpy (no Python code per chunk occurrence).
    """
    low, high = vec.word_ngram_range
    index: dict[str, int] = {}
    chunk_ids: list[int] = []
    chunk_ptr = np.zeros(len(distinct) + 1, dtype=np.int64)
    for i, chunk in enumerate(distinct):
        chunk_ids.extend(
            [index.setdefault(t, len(index)) for t in vec.normalizer.chunk_tokens(chunk)]
        )
        chunk_ptr[i + 1] = len(chunk_ids)
    ids_of_chunk = np.asarray(chunk_ids, dtype=np.int64)
    per_chunk = np.diff(chunk_ptr)
    # Ragged gather: the token ids of every chunk occurrence, in document order.
    lengths = per_chunk[occurrences]
    offsets = np.cumsum(lengths) - lengths
    arr = ids_of_chunk[
        np.repeat(chunk_ptr[occurrences] - offsets, lengths) + np.arange(lengths.sum())
    ]
    tokens_per_doc = _per_doc(lengths, doc_ptr)
    n_docs, n_tokens = doc_ptr.size - 1, len(index)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), tokens_per_doc)
    ones = np.ones(arr.size, dtype=np.float32)

    uni = sp.csr_matrix((ones, (doc, arr)), shape=(n_docs, n_tokens))
    uni_df = np.bincount(uni.indices, minlength=n_tokens)
    keep_uni = (uni_df >= vec.min_df) & (low == 1)

    same = doc[:-1] == doc[1:]
    codes = arr[:-1][same] * n_tokens + arr[1:][same]
    uniq, inverse = np.unique(codes, return_inverse=True)
    bi = sp.csr_matrix((ones[: codes.size], (doc[:-1][same], inverse)), shape=(n_docs, uniq.size))
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
    return sp.hstack([uni[:, keep_uni], bi[:, keep_bi]], format="csr")


def _per_doc(lengths: Any, doc_ptr: Any) -> Any:
    """Sums of `lengths` (one per chunk occurrence) over each document's occurrences."""
    totals = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=totals[1:])
    return totals[doc_ptr[1:]] - totals[doc_ptr[:-1]]


def _count_char(vec: TweetVectorizer, distinct: list[str], occurrences: Any, doc_ptr: Any) -> Any:
    """Character n-gram counts (CSR, float32); sets the character vocabulary."""
    assert vec.char_ngram_range is not None
    low, high = vec.char_ngram_range
    # Lowercase each distinct chunk once (text.lower().split() gives the same chunks as
    # lowercasing those of text.split()), then point the occurrences at them.
    lowered = [chunk.lower() for chunk in distinct]
    chunks = list(dict.fromkeys(lowered))
    position = {chunk: i for i, chunk in enumerate(chunks)}
    to_lower = np.fromiter(map(position.__getitem__, lowered), np.int64, len(lowered))
    # Repeated chunks leave duplicate entries in a row; the product with it sums them.
    docs = sp.csr_matrix(
        (np.ones(occurrences.size, dtype=np.float32), to_lower[occurrences], doc_ptr),
        shape=(doc_ptr.size - 1, len(chunks)),
    )
    # The n-gram strings are made a batch of chunks at a time: all 3.3 M of them at once (200k
    # synthetic rows) left ~200 MB of Python's small-object arenas pinned by the 0.6 M that
    # survive as vocabulary keys.
    index: dict[str, int] = {}
    columns: list[Any] = [np.zeros(0, dtype=np.int64)]
    indptr, done = [0], 0
    for first in range(0, len(chunks), _GRAM_BATCH):
        grams: list[str] = []
        for chunk in chunks[first : first + _GRAM_BATCH]:
            grams += char_wb_ngrams(chunk, low, high)
            indptr.append(done + len(grams))
        done += len(grams)
        columns.append(_gram_columns(index, grams))
    gram_cols = np.concatenate(columns)
    del columns
    grams_of = sp.csr_matrix(
        (np.ones(len(gram_cols), dtype=np.float32), gram_cols, indptr),
        shape=(len(chunks), len(index)),
    )
    counts = docs @ grams_of
    del docs, grams_of
    df = _column_counts(counts.indices, len(index))
    keep = df >= vec.min_df
    vec.char_index_ = {gram: k for k, gram in enumerate(g for g, i in index.items() if keep[i])}
    return _keep_columns(counts, keep)


def _gram_columns(index: dict[str, int], grams: list[str]) -> Any:
    """The column of each of `grams`, adding the new ones to `index` in first-seen order.

    dict.fromkeys, update and map run at C speed; a Python-level setdefault per n-gram is
    10x slower. Only the batch's distinct n-grams are looked at in Python.
    """
    fresh = [gram for gram in dict.fromkeys(grams) if gram not in index]
    index.update(zip(fresh, range(len(index), len(index) + len(fresh)), strict=True))
    return np.fromiter(map(index.__getitem__, grams), dtype=np.int64, count=len(grams))


def _keep_columns(m: Any, keep: Any) -> Any:
    """`m[:, keep]` (columns renumbered), compacted in place in row blocks: a column slice
    would copy the whole matrix (at 200k rows, 390 MB more at the peak)."""
    m = m.tocsr()
    new_id = (np.cumsum(keep) - 1).astype(m.indices.dtype)
    indptr, indices, data = m.indptr, m.indices, m.data
    out_ptr = np.zeros_like(indptr)
    rows, write = m.shape[0], 0
    for first in range(0, rows, _BLOCK):
        last = min(rows, first + _BLOCK)
        start, end = int(indptr[first]), int(indptr[last])
        cols = indices[start:end]
        kept = keep[cols]
        n = int(kept.sum())
        owner = np.repeat(np.arange(last - first), np.diff(indptr[first : last + 1]))
        per_row = np.bincount(owner[kept], minlength=last - first)
        # Fancy indexing makes new arrays, so writing ahead of the read position is safe.
        new_cols, new_data = new_id[cols[kept]], data[start:end][kept]
        indices[write : write + n] = new_cols
        data[write : write + n] = new_data
        out_ptr[first + 1 : last + 1] = write + np.cumsum(per_row)
        write += n
    shape = (rows, int(keep.sum()))
    return sp.csr_matrix((data[:write], indices[:write], out_ptr), shape=shape, copy=False)
