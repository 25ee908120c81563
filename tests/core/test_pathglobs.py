"""Path filter globs (`paths`, `paths_ignore`): no single-character or set pattern ever
matches a `/`, only `**` crosses directories, and every other character is literal."""

from __future__ import annotations

import re

import pytest

from trainhook.pathglobs import IGNORED, PathFilter, PatternError, check_pattern, translate


def matches(pattern: str, path: str) -> bool:
    return re.fullmatch(translate(pattern), path, re.DOTALL) is not None


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("a?b", "a/b"),  # `?` is one character, never a `/`
        ("data?train.csv", "data/train.csv"),
        ("a*b", "a/b"),  # `*` never crosses a directory
        ("*", "dir/file"),
        ("a[/x]b", "a/b"),  # nor does a set that names `/`
        ("a[!x]b", "a/b"),  # nor a negated set
        ("a.b", "axb"),  # `.` is literal
        ("a+", "aa"),  # `+` is literal
        ("a\\d", "a1"),  # a backslash is literal
        ("data/train.csv", "data/train.csv/x"),
        ("docs/**", "docs"),  # `**` after a `/` needs something under it
    ],
)
def test_a_pattern_never_matches_across_a_slash_or_as_a_regex(pattern: str, path: str):
    assert not matches(pattern, path)


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("a?b", "a.b"),
        ("a?b", "a\nb"),  # any one character but `/`
        ("a*b", "ab"),
        ("a*b", "a-x-b"),
        ("**", "a/b/c"),
        ("a**", "a/b"),
        ("**/x", "x"),
        ("**/x", "a/b/x"),
        ("a/**/b", "a/b"),
        ("a/**/b", "a/x/y/b"),
        ("[ab]", "b"),
        ("[a-c]", "b"),
        ("[!a-c]", "d"),
        ("[\\]", "\\"),  # a backslash inside a set is literal
        ("[^]", "^"),  # so is `^`
        ("a.b", "a.b"),
        ("a+", "a+"),
    ],
)
def test_a_pattern_matches_the_paths_its_syntax_says(pattern: str, path: str):
    assert matches(pattern, path)


def test_each_set_ends_at_its_own_closing_bracket():
    assert matches("a[bc]d[ef]", "abde") and matches("[x]/[y]", "x/y")
    assert not matches("a[bc]d[ef]", "abd]")
    assert not matches("[ab]", "X") and matches("[X]", "X")  # nothing added to the set


def test_a_double_star_keeps_the_character_after_it():
    assert matches("**.md", "docs/a.md") and not matches("**.md", "docs/amd")


def test_a_set_without_a_closing_bracket_is_refused_by_name():
    with pytest.raises(PatternError, match=r"^'x\[ab': '\[' without a closing '\]'$"):
        translate("x[ab")
    with pytest.raises(PatternError, match="without a closing"):
        translate("x[!")
    with pytest.raises(PatternError, match="not a valid pattern"):
        check_pattern("x[!]")  # an empty set


@pytest.mark.parametrize("pattern", ["a[]b]", "a[!]b]", "[!x][]b]"])
def test_an_empty_set_is_refused_even_when_a_later_bracket_could_close_it(pattern: str):
    # `[]` ends at its own `]`: a later `]` does not turn it into a set holding `]`.
    with pytest.raises(PatternError, match="not a valid pattern"):
        check_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "^a pattern must not be empty$"),
        ("!docs/**", "^'!docs/\\*\\*': negation is not supported, use paths_ignore$"),
        ("/src", "^'/src': patterns are relative to the repository root$"),
        ("./src", "^'./src': patterns are relative to the repository root$"),
        ("[z-a]", "^'\\[z-a\\]': not a valid pattern"),
    ],
)
def test_a_pattern_that_cannot_mean_what_it_says_is_refused_with_why(pattern, message):
    with pytest.raises(PatternError, match=message):
        check_pattern(pattern)


@pytest.mark.parametrize("pattern", ["src/**", "a?b", "[ab]", "src./x", "a!b"])
def test_a_good_pattern_is_accepted(pattern: str):
    check_pattern(pattern)


def test_a_filter_without_patterns_is_inactive_and_everything_is_relevant():
    flt = PathFilter()
    assert flt.active is False and flt.relevant("anything/at/all")
    assert PathFilter(paths=("a",)).active and PathFilter(ignore=("a",)).active


def test_relevance_is_any_paths_pattern_and_no_ignore_pattern():
    flt = PathFilter(paths=("src/**", "data/*.csv"), ignore=("src/vendor/**", "data/x.csv"))
    assert flt.relevant("src/a.py") and flt.relevant("data/y.csv")
    assert not flt.relevant("src/vendor/lib.py") and not flt.relevant("data/x.csv")
    assert not flt.relevant("README.md")


def test_the_reason_lists_up_to_five_files_sorted_and_counts_the_rest():
    flt = PathFilter(ignore=("**",))
    assert flt.ignore_reason({"b", "a"}) == f"{IGNORED}: a, b (filtered by paths_ignore = ['**'])"
    files = {f"f{i}" for i in range(6)}
    assert flt.ignore_reason(files) == (
        f"{IGNORED}: f0, f1, f2, f3, f4, … (6 files) (filtered by paths_ignore = ['**'])"
    )
    five = {f"f{i}" for i in range(5)}
    assert flt.ignore_reason(five) == (
        f"{IGNORED}: f0, f1, f2, f3, f4 (filtered by paths_ignore = ['**'])"
    )


def test_the_reason_names_only_the_rules_that_are_set():
    assert PathFilter(paths=("src/**",)).ignore_reason({"README.md"}) == (
        f"{IGNORED}: README.md (filtered by paths = ['src/**'])"
    )
    both = PathFilter(paths=("src/**",), ignore=("*.md",))
    assert both.ignore_reason({"README.md"}) == (
        f"{IGNORED}: README.md (filtered by paths = ['src/**'] and paths_ignore = ['*.md'])"
    )


def test_a_double_star_matches_a_file_name_holding_a_newline():
    # Git allows a newline in a file name; `docs/**` must still cover it, as `*` does.
    odd = "docs/release\nnotes.md"
    assert not PathFilter(ignore=("docs/**",)).relevant(odd)
    assert PathFilter(paths=("docs/**",)).relevant(odd)
    assert PathFilter(paths=("docs/*",)).relevant(odd)
