"""A deterministic generator of synthetic, tweet-like labelled text (`text,label` CSV).

Three classes (positive, negative, neutral) of short customer messages to fictional airlines,
with handles, URLs, hashtags, elongated words, emoticons, typos, mixed feelings, negation
and some label noise: learnable, but not by a single keyword. The project ships no copied
datasets; all of its sample data comes from here.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
from pathlib import Path

LABELS = ("positive", "negative", "neutral")
LABEL_NOISE = 0.08
MIXED = 0.3

_AIRLINES = ["@SkyJet", "@AeroLink", "@BlueHeronAir", "@NorthWindAir", "@CloudHopper", "@JetPath"]
_USERS = ["@jess_k", "@mike88", "@travelwithsam", "@dana_r", "@leo", "@priya_t", "@omar_x"]
_CITIES = [
    "Boston",
    "Denver",
    "Austin",
    "Seattle",
    "Chicago",
    "Dallas",
    "Miami",
    "Atlanta",
    "Portland",
    "Phoenix",
]
_THINGS = [
    "flight",
    "crew",
    "seat",
    "bag",
    "gate",
    "wifi",
    "app",
    "lounge",
    "upgrade",
    "snack",
    "pilot",
    "agent",
    "boarding",
]
_PHRASES = {
    "positive": [
        "thanks so much for the {thing}",
        "love the {thing}",
        "great {thing} today",
        "amazing service on my flight to {city}",
        "best airline ever",
        "the {thing} was awesome",
        "smooth landing in {city}",
        "friendly staff at the {thing}",
        "you guys rock",
        "really appreciate the help",
        "excellent {thing}, will fly again",
        "no complaints at all",
        "not bad at all, {thing} was on time",
        "got the {thing} I wanted, so happy",
        "early arrival in {city}, perfect",
    ],
    "negative": [
        "delayed again in {city}",
        "you lost my {thing}",
        "worst {thing} ever",
        "flight {num} cancelled with no notice",
        "rude agent at the {thing}",
        "on hold for {hours} hours",
        "terrible {thing}, never again",
        "missed my connection in {city}",
        "not happy with the {thing}",
        "the {thing} is broken and nobody cares",
        "still waiting for my {thing} refund",
        "stuck at the gate for {hours} hours",
        "so disappointed with the {thing}",
        "what a joke, {thing} was awful",
        "not great, {thing} was dirty",
    ],
    "neutral": [
        "what time does flight {num} board",
        "is there wifi on the {city} route",
        "can I change my {thing} online",
        "flying to {city} tomorrow",
        "do you fly to {city}",
        "how many bags can I bring",
        "any update on flight {num}",
        "checking in for {city} now",
        "where is the {thing} in {city}",
        "does the {thing} open at {hours}am",
        "my {thing} number is {num}",
        "heading to {city} for work",
        "is flight {num} on schedule",
        "which terminal for {city}",
        "need to add a {thing} to my booking",
    ],
}
_EXTRAS = {
    "positive": ["sooo good", "loooove it", ":)", ":D", "😊", "🙌", "yaaay", "!!"],
    "negative": ["ugh", "sooo annoying", ":(", "😡", "seriously??", "nooo", "!!!"],
    "neutral": ["thanks", "please advise", "?", "just wondering", "fyi", "cheers"],
}
_TAGS = {
    "positive": ["#happy", "#travel", "#greatservice", "#win"],
    "negative": ["#fail", "#neveragain", "#delayed", "#badservice"],
    "neutral": ["#travel", "#question", "#flying", "#trip"],
}
_FILLER = [
    "just",
    "today",
    "again",
    "now",
    "so",
    "um",
    "lol",
    "btw",
    "honestly",
    "actually",
    "well",
    "ok",
]


def generate_sample(path: str | Path, rows: int = 2000, seed: int = 0) -> Path:
    """Write `rows` synthetic labelled rows to `path` (CSV with header `text,label`).

    The same `rows` and `seed` always give byte-identical files. The file is written to a
    temporary name and renamed, so readers never see half of it. Returns the path.
    Raises ValueError if `rows` < 1.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for _ in range(rows):
                writer.writerow(sample_row(rng))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sample_row(rng: random.Random) -> tuple[str, str]:
    """One synthetic (text, label) pair drawn with `rng`."""
    label = rng.choice(LABELS)
    parts = [rng.choice(_AIRLINES)]
    if rng.random() < 0.15:
        parts.append(rng.choice(_USERS))
    parts.append(_fill(rng.choice(_PHRASES[label]), rng))
    if rng.random() < MIXED:
        # A clause of another class makes single words unreliable.
        other = rng.choice([c for c in LABELS if c != label])
        parts.append(rng.choice(["but", "though", "and", "also"]))
        parts.append(_fill(rng.choice(_PHRASES[other]), rng))
    if rng.random() < 0.5:
        parts.append(rng.choice(_EXTRAS[label]))
    if rng.random() < 0.3:
        parts.insert(rng.randrange(1, len(parts) + 1), rng.choice(_FILLER))
    if rng.random() < 0.35:
        parts.append(rng.choice(_TAGS[label]))
    if rng.random() < 0.2:
        parts.append("http://t.co/" + "".join(rng.choices("abcdefghkmnpqrstuvwxyz0123456789", k=8)))
    text = " ".join(parts)
    if rng.random() < 0.1:
        text = _typo(text, rng)
    if rng.random() < 0.1:
        text = text.upper() if label == "negative" else text.capitalize()
    if rng.random() < LABEL_NOISE:
        label = rng.choice([c for c in LABELS if c != label])
    return text, label


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        thing=rng.choice(_THINGS),
        city=rng.choice(_CITIES),
        num=rng.randrange(100, 10000),
        hours=rng.randrange(2, 9),
    )


def _typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters somewhere in the text."""
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
