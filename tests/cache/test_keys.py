"""Cache keys: canonical JSON → sha256, pinned on fixed examples so that an accidental change
of a key's meaning (which would silently retrain everything, or worse, reuse wrong models)
fails here first. Change a golden value only together with KEY_VERSION."""

from __future__ import annotations

import hashlib

from trainer.params import TrainParams
from worker.hash.keys import (
    KEY_VERSION,
    canonical_json,
    deps_key,
    model_key,
    nltk_key,
)

PARAMS = {
    "C": 0.1,
    "classifier": "linear_svc",
    "text_column": "text",
    "label_column": "label",
    "char_ngram_range": [2, 5],
}
BLOB = "git:" + "ab" * 20


def test_canonical_json_sorts_keys_has_no_whitespace_and_keeps_unicode():
    assert canonical_json({"b": [1, {"é": 2}], "a": None}) == '{"a":null,"b":[1,{"é":2}]}'


def test_the_model_key_of_a_fixed_example_is_pinned():
    key = model_key("1.0.0", PARAMS, [("data/train.csv", BLOB)])

    assert KEY_VERSION == 1
    assert key == "315b7c998ef498c97fb14e331339c58c8909c91d0e82a8028366db47c81fbb1e"
    material = (
        '{"data":[["data/train.csv","' + BLOB + '"]],"key_version":1,'
        '"params":{"C":0.1,"char_ngram_range":[2,5],"classifier":"linear_svc",'
        '"label_column":"label","text_column":"text"},"trainer_version":"1.0.0"}'
    )
    assert key == hashlib.sha256(material.encode()).hexdigest()


def test_the_deps_key_of_a_fixed_example_is_pinned_and_ignores_file_order():
    files = [("uv.lock", "cd" * 20), ("requirements.txt", "ef" * 20)]
    key = "b1f36653d279752b8f5a61aa0b770705f726790f5927a30a429a91803c2f2c2a"
    assert deps_key(files) == key
    assert deps_key(list(reversed(files))) == key


def test_the_nltk_key_hashes_the_packages_and_the_nltk_version(monkeypatch):
    import trainer.nltkdata

    nltk_key.cache_clear()
    monkeypatch.setattr(trainer.nltkdata, "nltk_version", lambda: "3.10.4")
    monkeypatch.setattr(trainer.nltkdata, "NLTK_PACKAGES", ["stopwords"])
    try:
        assert nltk_key() == "ed3f5e5d76119e7ea8a511c24e9a2f3550ba23e76a8f0325c8826305733064e7"
        nltk_key.cache_clear()
        monkeypatch.setattr(trainer.nltkdata, "nltk_version", lambda: "3.11.0")
        assert nltk_key() != "ed3f5e5d76119e7ea8a511c24e9a2f3550ba23e76a8f0325c8826305733064e7"
    finally:
        nltk_key.cache_clear()


def test_every_model_input_changes_the_model_key():
    base = model_key("1.0.0", PARAMS, [("data/train.csv", BLOB)])
    variants = [
        model_key("1.0.1", PARAMS, [("data/train.csv", BLOB)]),
        model_key("1.0.0", {**PARAMS, "C": 0.2}, [("data/train.csv", BLOB)]),
        model_key("1.0.0", PARAMS, [("data/prod.csv", BLOB)]),
        model_key("1.0.0", PARAMS, [("data/train.csv", "git:" + "cd" * 20)]),
    ]
    assert len({base, *variants}) == 5


def test_the_trainers_full_params_are_keyed_so_a_changed_default_retrains():
    defaults = TrainParams().to_dict()
    assert set(defaults) >= {"C", "min_df", "word_ngram_range", "stopwords", "seed"}
    changed = {**defaults, "min_df": defaults["min_df"] + 1}
    data = [("data/train.csv", BLOB)]
    assert model_key("1.0.0", defaults, data) != model_key("1.0.0", changed, data)
