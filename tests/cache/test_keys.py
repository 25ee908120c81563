"""Cache keys: canonical JSON → sha256, pinned on fixed examples so that an accidental change
of a key's meaning (which would silently retrain everything, or worse, reuse wrong models)
fails here first. Change a golden value only together with KEY_VERSION."""

from __future__ import annotations

import hashlib

import pytest

from trainer.params import TrainParams
from trainhook.repos import RepoConfig
from worker.hash.keys import (
    KEY_VERSION,
    _nltk_material,
    cache_scope,
    canonical_json,
    deps_key,
    model_key,
    nltk_key,
    train_params,
)
from worker.stage import StageFailed

PARAMS = {
    "C": 0.1,
    "classifier": "linear_svc",
    "text_column": "text",
    "label_column": "label",
    "char_ngram_range": [2, 5],
}
BLOB = "git:" + "ab" * 20
SCOPE = {
    "repo": "github:octo-org/social-score-api",
    "clone_url": "https://github.com/octo-org/social-score-api.git",
}


def test_canonical_json_sorts_keys_has_no_whitespace_and_keeps_unicode():
    assert canonical_json({"b": [1, {"é": 2}], "a": None}) == '{"a":null,"b":[1,{"é":2}]}'


def test_the_model_key_of_a_fixed_example_is_pinned():
    key = model_key("1.0.0", PARAMS, [BLOB], SCOPE)

    assert KEY_VERSION == 2
    assert key == "860d0c4533e9d9ce2342143518d5037fc77c55a3f70e8798cfe48cb0d7e0d9b1"
    material = (
        '{"data":["' + BLOB + '"],"key_version":2,'
        '"params":{"C":0.1,"char_ngram_range":[2,5],"classifier":"linear_svc",'
        '"label_column":"label","text_column":"text"},'
        '"scope":{"clone_url":"https://github.com/octo-org/social-score-api.git",'
        '"repo":"github:octo-org/social-score-api"},"trainer_version":"1.0.0"}'
    )
    assert key == hashlib.sha256(material.encode()).hexdigest()


def test_the_deps_key_of_a_fixed_example_is_pinned_and_ignores_file_order():
    files = [("uv.lock", "cd" * 20), ("requirements.txt", "ef" * 20)]
    key = "ea19b7ee7839e100c0d307760fcbef5c8a7d25abdec32f46fbf7f7ef828c9c9d"
    assert deps_key(files, SCOPE) == key
    assert deps_key(list(reversed(files)), SCOPE) == key


def test_the_nltk_key_hashes_the_packages_and_the_nltk_version(monkeypatch):
    import trainer.nltkdata

    _nltk_material.cache_clear()
    monkeypatch.setattr(trainer.nltkdata, "nltk_version", lambda: "3.10.4")
    monkeypatch.setattr(trainer.nltkdata, "NLTK_PACKAGES", ["stopwords"])
    pinned = "f84eab93c5374bbdceeca7ed60cd933f357e708c5ee6abcdfc87a9195680beb9"
    try:
        assert nltk_key(SCOPE) == pinned
        _nltk_material.cache_clear()
        monkeypatch.setattr(trainer.nltkdata, "nltk_version", lambda: "3.11.0")
        assert nltk_key(SCOPE) != pinned
    finally:
        _nltk_material.cache_clear()


def test_every_model_input_changes_the_model_key():
    base = model_key("1.0.0", PARAMS, [BLOB], SCOPE)
    variants = [
        model_key("1.0.1", PARAMS, [BLOB], SCOPE),
        model_key("1.0.0", {**PARAMS, "C": 0.2}, [BLOB], SCOPE),
        model_key("1.0.0", PARAMS, ["git:" + "cd" * 20], SCOPE),
        model_key("1.0.0", PARAMS, [BLOB], {**SCOPE, "repo": "github:x/y"}),
    ]
    assert len({base, *variants}) == 5


def test_the_trainers_full_params_are_keyed_so_a_changed_default_retrains():
    defaults = TrainParams().to_dict()
    assert set(defaults) >= {"C", "min_df", "word_ngram_range", "stopwords", "seed"}
    changed = {**defaults, "min_df": defaults["min_df"] + 1}
    data = [BLOB]
    assert model_key("1.0.0", defaults, data, SCOPE) != model_key("1.0.0", changed, data, SCOPE)


def repo(name: str, **kw: object) -> RepoConfig:
    return RepoConfig(
        name=name, clone_url=f"https://user:pw@forge.example/{name}.git", secret_env="S", **kw
    )  # type: ignore[arg-type]


def test_every_key_belongs_to_its_repository_or_its_named_group():
    files, data = [("uv.lock", "cd" * 20)], [BLOB]

    def keys(config: RepoConfig) -> tuple[str, str, str]:
        scope = cache_scope(config)
        return (
            deps_key(files, scope),
            nltk_key(scope),
            model_key("1.0.0", PARAMS, data, scope),
        )

    a, b = keys(repo("org/a")), keys(repo("org/b"))
    assert all(x != y for x, y in zip(a, b, strict=True))
    grouped = [keys(repo(name, cache_group="team-nlp")) for name in ("org/a", "org/b")]
    assert grouped[0] == grouped[1] and not set(grouped[0]) & set(a)
    # Credentials in the clone URL are not part of a repository's identity.
    assert cache_scope(repo("org/a"))["clone_url"] == "https://forge.example/org/a.git"


def test_training_params_the_trainer_refuses_fail_the_stage_naming_the_repository():
    # Settings refuse them at start; a repository configured another way is refused here.
    bad = repo("org/a", params=(("C", -1.0),))
    with pytest.raises(StageFailed, match=r"^training params of org/a: .*need C > 0$"):
        train_params(bad)
