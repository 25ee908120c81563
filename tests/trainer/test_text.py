"""Tweet normalisation and the TF-IDF vectorizer the deployed model unpickles."""

from __future__ import annotations

import ast
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.tokenize.casual import TweetTokenizer
from sklearn.feature_extraction.text import CountVectorizer

from trainer import features
from trainer.data import read_dataset
from trainhook_runtime.text import CACHE_LIMIT, TweetNormalizer, TweetVectorizer
from trainhook_runtime.tfidf import char_counts, word_counts

TWEETS = [
    "@United thanks!!! the crew was sooooo nice :) http://t.co/abc #happy",
    "@united lost my bag AGAIN... worst airline ever :( #fail",
    "what time does flight 1234 board? cc @jess_k",
    "not bad, not great &amp; the wifi didn't work",
    "@SkyJet loooove the new app 😊😊 www.example.com",
    "cancelled. again. never flying @SkyJet again",
]


def test_handles_and_urls_become_placeholders() -> None:
    tokens = TweetNormalizer()("@United thanks http://t.co/abc www.x.com")
    assert tokens == ["<user>", "thank", "<url>", "<url>"]


def test_handles_can_be_kept_or_stripped() -> None:
    assert TweetNormalizer(handles="keep")("@United hi")[0] == "@united"
    assert TweetNormalizer(handles="strip")("@United hi") == ["hi"]


def test_elongated_words_are_shortened_and_stemmed() -> None:
    tokens = TweetNormalizer()("sooooo loooooving it!!!!!")
    assert tokens == ["sooo", "looov", "it", "!", "!", "!"]


def test_hashtags_keep_their_mark_and_are_stemmed() -> None:
    assert TweetNormalizer()("#Flying #fail") == ["#fli", "#fail"]


def test_stopwords_are_dropped_when_given() -> None:
    assert TweetNormalizer(stopwords={"the", "was"})("the crew was late") == ["crew", "late"]


chunk_text = st.text(
    alphabet=st.sampled_from(list("aAbzZ@#:;()!?.-_'&12/~ é😊")) | st.characters(),
    min_size=1,
    max_size=24,
).filter(lambda s: s.split() == [s])


@settings(max_examples=300, deadline=None)
@given(chunk=chunk_text)
def test_chunk_tokens_are_exactly_tweet_tokenizers_with_reduce_len(chunk: str) -> None:
    reference = TweetTokenizer(preserve_case=True, reduce_len=True, match_phone_numbers=False)
    assert TweetNormalizer().raw_tokens(chunk) == reference.tokenize(chunk)


def test_each_distinct_token_is_stemmed_once() -> None:
    normalizer = TweetNormalizer()
    calls: list[str] = []
    stem = normalizer._stemmer.stem

    def counting(word: str) -> str:
        calls.append(word)
        return stem(word)

    normalizer._stemmer.stem = counting
    for text in ["flying flying", "flying high", "high flying!"]:
        normalizer(text)
    assert sorted(calls) == ["!", "flying", "high"]


def test_normalizer_pickles_its_settings_but_not_its_caches() -> None:
    normalizer = TweetNormalizer(handles="keep", stopwords={"a"})
    normalizer(" ".join(f"word{i}" for i in range(1000)))
    blob = pickle.dumps(normalizer)
    restored = pickle.loads(blob)
    assert len(blob) < 500 and restored._chunks == {} and restored._tokens == {}
    assert restored("@A a b") == normalizer("@A a b") == ["@a", "b"]


def test_text_module_imports_only_the_standard_library_nltk_and_the_runtime() -> None:
    tree = ast.parse(Path(sys.modules[TweetNormalizer.__module__].__file__ or "").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top.add(node.module.split(".")[0])
    assert top - {"nltk", "trainhook_runtime"} <= set(sys.stdlib_module_names), top


@pytest.fixture(scope="module")
def corpus(sample_csv: Path) -> list[str]:
    return read_dataset(sample_csv).texts + TWEETS


def fitted(texts: list[str], **kwargs: object) -> TweetVectorizer:
    vec = TweetVectorizer(TweetNormalizer(), **kwargs)  # type: ignore[arg-type]
    features.fit_vectorizer(vec, texts)
    return vec


def test_char_counts_equal_scikit_learns_char_wb(corpus: list[str]) -> None:
    vec = fitted(corpus, char_ngram_range=(2, 5), min_df=2)
    sk = CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2).fit(corpus)
    assert set(vec.char_index_) == set(sk.vocabulary_)
    order = [sk.vocabulary_[g] for g in vec.char_index_]
    ours = char_counts(vec, TWEETS, {}, CACHE_LIMIT)
    assert abs(ours - sk.transform(TWEETS)[:, order]).max() == 0


def test_word_counts_equal_scikit_learns_ngrams_of_the_tokens(corpus: list[str]) -> None:
    vec = fitted(corpus, min_df=2)
    joined = [" ".join(vec.normalizer(t)) for t in corpus]
    sk = CountVectorizer(token_pattern=r"\S+", lowercase=False, ngram_range=(1, 2), min_df=2)
    sk.fit(joined)
    assert set(vec.word_terms()) == set(sk.vocabulary_)
    order = [sk.vocabulary_[t] for t in vec.word_terms()]
    expected = sk.transform([" ".join(vec.normalizer(t)) for t in TWEETS])[:, order]
    assert abs(word_counts(vec, TWEETS) - expected).max() == 0


def test_fit_transform_equals_transform_of_the_training_texts(corpus: list[str]) -> None:
    vec = TweetVectorizer(TweetNormalizer(), word_weight=1.5)
    fitted_rows = features.fit_vectorizer(vec, corpus)
    assert abs(fitted_rows - vec.transform(corpus)).max() < 1e-12
    norms = np.sqrt(np.asarray(fitted_rows.multiply(fitted_rows).sum(axis=1))).ravel()
    assert np.allclose(norms, np.sqrt(1.5**2 + 1.0))  # two L2-normalised, weighted blocks


def test_rows_of_shared_counts_equal_a_vectorizer_fitted_on_those_rows(corpus: list[str]) -> None:
    # The refit path counts every row once; the held-out model's rows use the training rows'
    # own document frequencies. They must equal what a vectorizer fitted on them alone gives.
    train, held_out = corpus[: len(corpus) * 3 // 4], corpus[len(corpus) * 3 // 4 :]
    alone = TweetVectorizer(TweetNormalizer(), word_weight=1.1)
    expected_train = features.fit_vectorizer(alone, train)
    expected_held_out = alone.transform(held_out)
    shared = TweetVectorizer(TweetNormalizer(), word_weight=1.1)
    counts = features.count_features(shared, train + held_out)
    idf = features.subset_idf(shared, counts.document_frequency(0, len(train)), len(train))
    rows = {
        "train": counts.tfidf(shared, 0, len(train), idf),
        "held_out": counts.tfidf(shared, len(train), counts.rows, idf),
    }
    features.set_idf(shared, counts, counts.document_frequency(0, counts.rows), counts.rows)
    column = {name: i for i, name in enumerate(shared.get_feature_names_out())}
    names = alone.get_feature_names_out()
    assert set(names) < set(column)
    picked = [column[name] for name in names]
    for got, want in ((rows["train"], expected_train), (rows["held_out"], expected_held_out)):
        assert abs(got[:, picked] - want).max() < 1e-12
        assert abs(got).sum() == pytest.approx(abs(want).sum())  # nothing in other columns


def test_parallel_fit_equals_serial_fit(corpus: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "PARALLEL_MIN_CHUNKS", 0)
    serial = TweetVectorizer(TweetNormalizer())
    parallel = TweetVectorizer(TweetNormalizer())
    a = features.fit_vectorizer(serial, corpus, workers=1)
    b = features.fit_vectorizer(parallel, corpus, workers=2, pretokenise=TWEETS)
    assert abs(a - b).max() == 0 and serial.word_terms() == parallel.word_terms()


def test_unseen_words_and_empty_texts_transform_to_valid_rows(corpus: list[str]) -> None:
    vec = fitted(corpus)
    rows = vec.transform(["", "zzzqqq xxyyzz", "thanks"])
    assert rows.shape == (3, len(vec.get_feature_names_out()))
    assert rows[0].nnz == 0 and rows[2].nnz > 0


def test_vectorizer_survives_pickling_compactly(corpus: list[str]) -> None:
    vec = fitted(corpus)
    vec.transform(TWEETS)  # fills caches, which must not be pickled
    blob = pickle.dumps(vec)
    restored = pickle.loads(blob)
    assert restored._char_cache == {} and restored.normalizer._chunks == {}
    assert abs(restored.transform(TWEETS) - vec.transform(TWEETS)).max() == 0
    assert restored.get_feature_names_out() == vec.get_feature_names_out()
    assert restored.token_index_ == vec.token_index_


def test_word_only_features_when_char_ngrams_are_off(corpus: list[str]) -> None:
    vec = fitted(corpus, char_ngram_range=None)
    assert all(name.startswith("w:") for name in vec.get_feature_names_out())


def test_an_unfitted_vectorizer_refuses_to_transform() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        TweetVectorizer(TweetNormalizer()).transform(["x"])
