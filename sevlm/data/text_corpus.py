"""The synthetic text corpus the decoder is pre-trained on (``python -m sevlm.pretrain``).

Sentences in the model's own layout, "the emotion is <e> because <X>", with no image: the
paper's decoder had read English before it saw a painting, and this corpus gives the tiny
decoder a small language of the same kind (emotion words, descriptions of things in a
picture, the sentence frame) before it is fine-tuned on the benchmark.

**Disjoint from the benchmark by construction.** Every explanation of the synthetic
benchmark (sevlm/data/synthetic.py, any seed and size, train, validation and test alike)
names its painting's object: one of :func:`sevlm.data.synthetic.object_words`. No word of
this corpus is one of them (checked when the module is imported), so no corpus sentence can
equal a benchmark explanation. The corpus shares the benchmark's *language* (some emotion
adjectives, colour names, function words), as GPT-2's pre-training text shares English
with ArtEmis, but none of its sentences: its subjects, places, templates and feeling
phrases are its own. tests/test_pretrain.py checks the disjointness against every
explanation the benchmark generator can write.

Each sentence: an emotion uniform over the nine, a template, a subject (a noun shared by all
emotions or one of the emotion's own), a place, a colour and two distinct adjectives and a
feeling phrase of the emotion, all drawn from ``numpy.random.default_rng(seed)`` in a fixed
order; duplicates are drawn again, so the corpus holds distinct sentences and its held-out
part (the last ``val_fraction`` of a seeded permutation) shares none with its training part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sevlm.data.synthetic import object_words
from sevlm.emotions import EMOTIONS

CORPUS_VERSION = 1

# Subjects any emotion can be about.
SUBJECTS = (
    "boat", "tree", "river", "bird", "horse", "woman", "man", "child", "house", "bridge",
    "ship", "flower", "forest", "lake", "city", "street", "dog", "cat", "field", "road",
    "window", "candle", "church", "hill", "village", "castle", "face", "figure", "crowd",
    "sunset", "moon", "shadow", "statue", "harbor", "valley", "table",
)  # fmt: skip
# Subjects of one emotion (a scene that is usually felt that way).
EMOTION_SUBJECTS: dict[str, tuple[str, ...]] = {
    "amusement": ("puppet", "jester", "monkey", "circus"),
    "awe": ("cliff", "temple", "glacier", "waterfall"),
    "contentment": ("meadow", "picnic", "kitten", "orchard"),
    "excitement": ("carnival", "race", "festival", "parade"),
    "anger": ("soldier", "riot", "tyrant", "fight"),
    "disgust": ("rat", "swamp", "corpse", "sewer"),
    "fear": ("wolf", "storm", "monster", "cave"),
    "sadness": ("funeral", "widow", "ruin", "orphan"),
    "something else": ("clock", "mirror", "puzzle", "door"),
}
ADJECTIVES: dict[str, tuple[str, ...]] = {
    "amusement": ("funny", "silly", "playful", "cheerful", "comic", "goofy", "hilarious", "jolly"),
    "awe": ("grand", "majestic", "magnificent", "sublime", "vast", "glorious", "divine", "powerful"),
    "contentment": ("calm", "peaceful", "serene", "gentle", "relaxed", "cozy", "pleasant", "tranquil"),
    "excitement": ("vibrant", "energetic", "thrilling", "wild", "exciting", "lively", "bold", "intense"),
    "anger": ("angry", "furious", "violent", "hostile", "aggressive", "cruel", "bitter", "brutal"),
    "disgust": ("disgusting", "gross", "ugly", "rotten", "filthy", "vile", "nasty", "foul"),
    "fear": ("scary", "creepy", "terrifying", "ominous", "eerie", "sinister", "frightening", "haunting"),
    "sadness": ("sad", "lonely", "gloomy", "mournful", "miserable", "tragic", "somber", "hopeless"),
    "something else": ("strange", "odd", "weird", "puzzling", "mysterious", "unusual", "bizarre", "abstract"),
}
FEELINGS: dict[str, tuple[str, ...]] = {
    "amusement": ("makes me smile", "reminds me of a cartoon", "cheers me up"),
    "awe": ("takes my breath away", "makes me feel small", "leaves me speechless"),
    "contentment": ("puts me at ease", "makes me feel at home", "feels like a lazy afternoon"),
    "excitement": ("makes my heart race", "makes me want to move", "feels like a celebration"),
    "anger": ("makes my blood boil", "makes me mad", "feels unjust to me"),
    "disgust": ("makes me sick", "turns my stomach", "makes me want to look away"),
    "fear": ("gives me chills", "makes me nervous", "makes me want to run"),
    "sadness": ("makes me want to cry", "breaks my heart", "reminds me of loss"),
    "something else": ("makes me wonder", "leaves me unsure", "is hard to understand"),
}
COLOURS = ("red", "blue", "dark", "bright", "pale", "golden", "grey", "green", "black", "white")
PLACES = ("water", "hills", "sky", "corner", "distance", "shadows", "light", "trees", "sea", "fog")
# {a} and {b}: two distinct adjectives of the emotion; {f}: a feeling phrase of it.
TEMPLATES = (
    "the {a} {s} {f}",
    "the {s} looks {a} and {b}",
    "the {c} {s} near the {p} seems {a}",
    "a {s} in the {p} feels {a} to me",
    "the way the artist painted the {s} is {a}",
    "i see a {a} {s} and it {f}",
    "the colors are {a} and the {s} is {b}",
    "there is a {s} that looks so {a}",
    "everything about the {c} {s} is {a} and {b}",
    "the {s} by the {p} {f}",
)

_WORD = re.compile(r"[a-z']+")
_SLOT = re.compile(r"\{[a-z]\}")


def corpus_words() -> frozenset[str]:
    """Every word a corpus sentence can contain."""
    parts = [*SUBJECTS, *COLOURS, *PLACES, *TEMPLATES]
    for table in (EMOTION_SUBJECTS, ADJECTIVES, FEELINGS):
        for values in table.values():
            parts.extend(values)
    return frozenset(w for part in parts for w in _WORD.findall(_SLOT.sub(" ", part)))


def _check_disjoint() -> None:
    shared = corpus_words() & object_words()
    if shared:  # pragma: no cover - a table edit that would let benchmark text leak in
        raise RuntimeError(f"the text corpus must not use the benchmark's object words: {sorted(shared)}")


_check_disjoint()


@dataclass(frozen=True)
class TextCorpus:
    """Distinct (emotion, explanation) sentences; ``train`` and ``val`` share none."""

    train: list[tuple[str, str]]
    val: list[tuple[str, str]]


def _pick(rng: np.random.Generator, values):
    return values[int(rng.integers(len(values)))]


def _sentence(rng: np.random.Generator) -> tuple[str, str]:
    emotion = _pick(rng, EMOTIONS)
    template = _pick(rng, TEMPLATES)
    own = EMOTION_SUBJECTS[emotion]
    # Half of the subjects are the emotion's own: the corpus ties scenes to feelings, as
    # real text does, without making the subject give the emotion away.
    subject = _pick(rng, own) if rng.random() < 0.5 else _pick(rng, SUBJECTS)
    a, b = rng.choice(len(ADJECTIVES[emotion]), size=2, replace=False)
    text = template.format(
        a=ADJECTIVES[emotion][int(a)], b=ADJECTIVES[emotion][int(b)], s=subject,
        c=_pick(rng, COLOURS), p=_pick(rng, PLACES), f=_pick(rng, FEELINGS[emotion]),
    )
    return emotion, text


def generate_corpus(n_sentences: int, seed: int, val_fraction: float = 0.1) -> TextCorpus:
    """``n_sentences`` distinct sentences from ``default_rng(seed)``, the last
    ``val_fraction`` of a seeded permutation held out."""
    if n_sentences < 2:
        raise ValueError(f"pretrain.sentences must be at least 2 (got {n_sentences})")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"pretrain.val_fraction must lie in (0, 1) (got {val_fraction})")
    rng = np.random.default_rng(seed)
    seen: set[tuple[str, str]] = set()
    sentences: list[tuple[str, str]] = []
    attempts = 0
    while len(sentences) < n_sentences:
        attempts += 1
        if attempts > 20 * n_sentences:
            raise ValueError(f"the corpus has fewer than {n_sentences} distinct sentences; ask for fewer")
        pair = _sentence(rng)
        if pair not in seen:
            seen.add(pair)
            sentences.append(pair)
    order = rng.permutation(len(sentences))
    n_val = max(1, int(round(val_fraction * len(sentences))))
    val = [sentences[i] for i in sorted(order[:n_val].tolist())]
    train = [sentences[i] for i in sorted(order[n_val:].tolist())]
    return TextCorpus(train=train, val=val)


__all__ = ["CORPUS_VERSION", "TextCorpus", "corpus_words", "generate_corpus"]
