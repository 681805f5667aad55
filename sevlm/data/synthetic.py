"""A synthetic dataset in the ArtEmis v1.0 format, read by the same loader as the real one.

Output (``out_dir``)::

    artemis_dataset_release_v0.csv   art_style, painting, emotion, utterance, repetition
    images/<art_style>/<painting>.jpg
    manifest.json                    generator version, seed, size, CSV hash (written last)

Generative process (all draws from ``numpy.random.default_rng(seed)`` in a fixed order,
so the same arguments give byte-identical files):

1. **Painting.** Each painting ``i`` gets an art style (uniform over :data:`ART_STYLES`), a
   name ``<artist>_<title>-<i>`` (about 1 in 12 artists has a non-ASCII name such as
   ``józef-mehoffer``, written in NFC), a *true emotion* ``e_i`` (uniform over the nine
   ArtEmis emotions), an *object* drawn from ``e_i``'s objects (a clown or a balloon for
   amusement, a skull or a ghost for fear...; each object has its own shape) and an object
   colour (uniform over :data:`OBJECT_COLOURS`, independent of the emotion).
2. **Image (64x64 JPEG).** A background in ``e_i``'s palette (hue and brightness: bright
   yellow for amusement, deep purple for awe, near-black for fear, grey-blue for sadness,
   ...; jittered per painting), a texture whose strength follows the emotion's arousal, and
   the object's shape drawn in the object colour at a random place and size. The image
   therefore carries the emotion (palette, brightness, texture, object shape) and the
   content that annotators describe (object and colour).
3. **Annotators.** Painting ``i`` has ``annotators`` annotations (one more with
   probability 0.15). Its *agreement* ``p_i ~ U(0.35, 0.95)``; each annotator independently
   picks ``e_i`` with probability ``p_i``, otherwise an emotion of the same valence group
   (positive: amusement/awe/contentment/excitement; negative: anger/disgust/fear/sadness)
   with probability 0.7, else any other emotion. Hence some paintings are unanimous and some
   have no dominant emotion (no emotion with at least half the votes, or a tie).
4. **Explanation.** The annotator's explanation names what is in the image (the object, its
   colour, often the background colour) and uses words of the *annotator's* emotion, all of
   which the Warriner VAD lexicon knows (``funny``, ``majestic``, ``serene``, ``terrifying``,
   ``gloomy``...), e.g. "the white skull looks terrifying and ominous against the black
   background". So the image predicts the emotion, the emotion predicts the VAD of the
   explanation words, and the image content predicts the nouns: what SEVLM's VAD features,
   VAD head and contrastive negatives (X≠M: same image, other emotion's words; X≠I: other
   object/colour) assume. Annotators of one painting never write the same (emotion,
   explanation) twice (such a row would be dropped as a duplicate by the loader).

``repetition`` is the painting's number of annotations. ``high_repetition`` extra paintings
with 42 annotations exercise the "rest" split (0 by default).

Regenerating with the same (seed, size, version) into a directory that holds a matching
manifest does nothing; generation runs under a file lock and writes into a temporary
directory that is moved into place, so concurrent trials can all call it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from sevlm.emotions import EMOTIONS, NEGATIVE, POSITIVE

SYNTHETIC_VERSION = 1
CSV_NAME = "artemis_dataset_release_v0.csv"
CONTRASTIVE_NAME = "Contrastive.csv"
IMAGE_SIZE = 64

ART_STYLES = ("Impressionism", "Baroque", "Romanticism", "Expressionism", "Cubism", "Realism")
ARTISTS = (
    "claude-monet", "rembrandt", "caspar-david-friedrich", "edvard-munch", "pablo-picasso",
    "gustave-courbet", "berthe-morisot", "francisco-goya", "wassily-kandinsky", "mary-cassatt",
    "józef-mehoffer", "édouard-manet",
)  # fmt: skip
TITLES = ("study", "scene", "view", "composition", "sketch", "landscape", "portrait", "vision")

# emotion -> (background colour name, RGB, texture strength 0..1)
PALETTES: dict[str, tuple[str, tuple[int, int, int], float]] = {
    "amusement": ("yellow", (236, 206, 62), 0.35),
    "awe": ("purple", (62, 48, 160), 0.15),
    "contentment": ("green", (128, 190, 118), 0.05),
    "excitement": ("orange", (242, 128, 30), 0.8),
    "anger": ("crimson", (132, 18, 22), 0.9),
    "disgust": ("olive", (112, 104, 38), 0.5),
    "fear": ("black", (22, 20, 30), 0.6),
    "sadness": ("gray", (108, 120, 142), 0.1),
    "something else": ("teal", (58, 168, 168), 0.4),
}
# emotion -> objects (name, shape)
OBJECTS: dict[str, tuple[tuple[str, str], ...]] = {
    "amusement": (("clown", "circle"), ("balloon", "ring")),
    "awe": (("mountain", "triangle"), ("cathedral", "tower")),
    "contentment": (("garden", "stripes"), ("cottage", "square")),
    "excitement": (("dancer", "star"), ("fireworks", "rays")),
    "anger": (("fire", "flame"), ("battle", "cross")),
    "disgust": (("garbage", "blob"), ("worm", "wave")),
    "fear": (("skull", "skull"), ("ghost", "arch")),
    "sadness": (("rain", "bars"), ("grave", "slab")),
    "something else": (("maze", "grid"), ("machine", "diamond")),
}
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 240),
    "silver": (190, 190, 200),
    "gold": (212, 175, 55),
    "pink": (240, 160, 190),
    "brown": (120, 75, 40),
    "violet": (160, 90, 220),
}
# emotion -> phrases; every content word is in the Warriner lexicon.
PHRASES: dict[str, tuple[str, ...]] = {
    "amusement": (
        "looks so funny and silly",
        "makes me laugh like a joke",
        "is playful and cheerful",
        "looks silly and makes me giggle",
    ),
    "awe": (
        "is grand and majestic",
        "fills me with wonder",
        "looks magnificent and sublime",
        "feels vast and majestic",
    ),
    "contentment": (
        "feels calm and peaceful",
        "looks serene and gentle",
        "makes me feel relaxed and cozy",
        "is quiet and peaceful",
    ),
    "excitement": (
        "is vibrant and energetic",
        "looks thrilling and wild",
        "makes me want to dance at a party",
        "feels exciting and lively",
    ),
    "anger": (
        "makes me angry and furious",
        "looks violent and hostile",
        "fills me with rage",
        "feels aggressive and cruel",
    ),
    "disgust": (
        "looks disgusting and gross",
        "is ugly and rotten",
        "looks filthy and vile",
        "feels nasty and sickening",
    ),
    "fear": (
        "looks scary and creepy",
        "is terrifying and ominous",
        "feels threatening and frightening",
        "makes me afraid of the danger",
    ),
    "sadness": (
        "looks sad and lonely",
        "feels gloomy and mournful",
        "fills me with sorrow and grief",
        "makes me feel miserable and lost",
    ),
    "something else": (
        "is strange and odd",
        "makes me curious about it",
        "looks weird and puzzling",
        "seems confusing and mysterious",
    ),
}
OPENINGS = ("the {c} {o}", "this {c} {o}", "i think the {c} {o}", "the {o} in {c}")
ENDINGS = ("", " against the {b} background", " with the {b} colors around it", " in this painting")


def object_words() -> frozenset[str]:
    """The object nouns: every explanation the generator writes names its painting's object
    (each of :data:`OPENINGS` holds ``{o}``), so a text without these words can equal none
    of them (the text pre-training corpus relies on it: sevlm/data/text_corpus.py)."""
    return frozenset(name for objects in OBJECTS.values() for name, _ in objects)


def possible_explanations() -> frozenset[str]:
    """Every explanation :func:`_explanation` can write, whatever the seed and size: an
    opening about the painting's object and colour, a phrase of the annotator's emotion
    (any of the nine) and an ending about the background of the painting's emotion."""
    out = set()
    for true_emotion, objects in OBJECTS.items():
        background = PALETTES[true_emotion][0]
        for obj, _shape in objects:
            for colour in OBJECT_COLOURS:
                for opening in OPENINGS:
                    for phrases in PHRASES.values():
                        for phrase in phrases:
                            for ending in ENDINGS:
                                out.add(f"{opening.format(c=colour, o=obj)} {phrase}{ending.format(b=background)}")
    return frozenset(out)


@dataclass(frozen=True)
class SyntheticPaths:
    root: Path
    csv: Path
    image_dir: Path
    manifest: Path
    contrastive_csv: Path | None = None


def dataset_name(n_paintings: int, annotators: int, seed: int) -> str:
    """Sub-directory name used by ``prepare_data``: one directory per generated dataset."""
    return f"artemis_synth_v{SYNTHETIC_VERSION}_n{n_paintings}_a{annotators}_s{seed}"


# ------------------------------------------------------------------------- drawing


def _draw_image(rng: np.random.Generator, emotion: str, shape: str, colour: tuple[int, int, int]):
    from PIL import Image, ImageDraw

    size = IMAGE_SIZE
    _, base, texture = PALETTES[emotion]
    base_arr = np.clip(np.array(base, dtype=np.float32) + rng.normal(0.0, 10.0, 3), 0, 255)
    # Vertical gradient (lighter at the top) + texture whose strength follows the arousal.
    yy = np.linspace(1.12, 0.88, size, dtype=np.float32)[:, None, None]
    pixels = base_arr[None, None, :] * yy * np.ones((1, size, 1), dtype=np.float32)
    noise = rng.normal(0.0, 1.0, (size // 4, size // 4, 1)).astype(np.float32)
    noise = np.kron(noise, np.ones((4, 4, 1), dtype=np.float32))
    pixels = np.clip(pixels + noise * 40.0 * texture, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)

    r = int(rng.integers(11, 19))
    cx = int(rng.integers(r + 2, size - r - 2))
    cy = int(rng.integers(r + 2, size - r - 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=4)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "tower":
        draw.rectangle((cx - r // 3, cy - r, cx + r // 3, cy + r), fill=colour)
        draw.polygon([(cx - r // 2, cy - r), (cx + r // 2, cy - r), (cx, cy - r - 6)], fill=colour)
    elif shape == "stripes":
        for k in range(-r, r, 6):
            draw.rectangle((cx - r, cy + k, cx + r, cy + k + 2), fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r / 2.5
            ang = np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(ang), cy - rad * np.sin(ang)))
        draw.polygon(pts, fill=colour)
    elif shape == "rays":
        for k in range(8):
            ang = k * np.pi / 4
            draw.line((cx, cy, cx + r * np.cos(ang), cy + r * np.sin(ang)), fill=colour, width=2)
    elif shape == "flame":
        draw.polygon([(cx, cy - r), (cx - r // 2, cy), (cx - r, cy + r), (cx + r, cy + r), (cx + r // 2, cy)], fill=colour)
    elif shape == "cross":
        draw.rectangle((cx - r, cy - 3, cx + r, cy + 3), fill=colour)
        draw.rectangle((cx - 3, cy - r, cx + 3, cy + r), fill=colour)
    elif shape == "blob":
        for _ in range(5):
            dx, dy = rng.integers(-r // 2, r // 2 + 1, 2)
            rr = int(rng.integers(r // 3, r // 2 + 2))
            draw.ellipse((cx + dx - rr, cy + dy - rr, cx + dx + rr, cy + dy + rr), fill=colour)
    elif shape == "wave":
        pts = [(cx - r + t, cy + 5 * np.sin(t / 3.0)) for t in range(0, 2 * r + 1, 2)]
        draw.line(pts, fill=colour, width=4)
    elif shape == "skull":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r // 2), fill=colour)
        draw.rectangle((cx - r // 2, cy, cx + r // 2, cy + r), fill=colour)
        dark = (10, 10, 10)
        draw.ellipse((cx - r // 2 - 2, cy - r // 3, cx - 2, cy + r // 6), fill=dark)
        draw.ellipse((cx + 2, cy - r // 3, cx + r // 2 + 2, cy + r // 6), fill=dark)
    elif shape == "arch":
        draw.pieslice((cx - r, cy - r, cx + r, cy + r), 180, 360, fill=colour)
        draw.rectangle((cx - r, cy, cx + r, cy + r), fill=colour)
    elif shape == "bars":
        for k in range(-r, r, 5):
            draw.line((cx + k, cy - r, cx + k - 3, cy + r), fill=colour, width=1)
    elif shape == "slab":
        draw.rounded_rectangle((cx - r // 2, cy - r, cx + r // 2, cy + r), radius=r // 2, fill=colour)
    elif shape == "grid":
        for k in range(-r, r + 1, 6):
            draw.line((cx - r, cy + k, cx + r, cy + k), fill=colour, width=1)
            draw.line((cx + k, cy - r, cx + k, cy + r), fill=colour, width=1)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    else:  # pragma: no cover - table and drawer out of sync
        raise ValueError(f"unknown shape {shape!r}")
    return image


def _annotator_emotion(rng: np.random.Generator, true_emotion: str, agreement: float) -> str:
    if rng.random() < agreement:
        return true_emotion
    group = POSITIVE if true_emotion in POSITIVE else NEGATIVE if true_emotion in NEGATIVE else ()
    related = [e for e in group if e != true_emotion]
    if related and rng.random() < 0.7:
        return related[int(rng.integers(len(related)))]
    others = [e for e in EMOTIONS if e != true_emotion]
    return others[int(rng.integers(len(others)))]


def _explanation(rng: np.random.Generator, emotion: str, obj: str, colour: str, background: str) -> str:
    opening = OPENINGS[int(rng.integers(len(OPENINGS)))].format(c=colour, o=obj)
    phrase = PHRASES[emotion][int(rng.integers(len(PHRASES[emotion])))]
    ending = ENDINGS[int(rng.integers(len(ENDINGS)))].format(b=background)
    return f"{opening} {phrase}{ending}"


@dataclass
class _Painting:
    art_style: str
    painting: str
    emotion: str
    obj: str
    shape: str
    colour: str


def _draw_painting(rng: np.random.Generator, index: int, emotion: str | None = None, obj=None) -> _Painting:
    style = ART_STYLES[int(rng.integers(len(ART_STYLES)))]
    artist = ARTISTS[int(rng.integers(len(ARTISTS)))]
    title = TITLES[int(rng.integers(len(TITLES)))]
    true_emotion = emotion or EMOTIONS[int(rng.integers(len(EMOTIONS)))]
    objects = OBJECTS[true_emotion]
    name, shape = obj or objects[int(rng.integers(len(objects)))]
    colour = list(OBJECT_COLOURS)[int(rng.integers(len(OBJECT_COLOURS)))]
    return _Painting(style, f"{artist}_{title}-{index:05d}", true_emotion, name, shape, colour)


def _annotate(rng, p: _Painting, count: int) -> list[tuple[str, str]]:
    agreement = float(rng.uniform(0.35, 0.95))
    background = PALETTES[p.emotion][0]
    rows: list[tuple[str, str]] = []
    for _ in range(count):
        emotion = _annotator_emotion(rng, p.emotion, agreement)
        text = _explanation(rng, emotion, p.obj, p.colour, background)
        for _retry in range(20):  # annotators of one painting never write identical rows
            if (emotion, text) not in rows:
                break
            text = _explanation(rng, emotion, p.obj, p.colour, background)
        rows.append((emotion, text))
    return rows


def _save_image(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _generate_into(tmp: Path, n_paintings: int, annotators: int, seed: int, high_repetition: int) -> int:
    rng = np.random.default_rng(seed)
    rows: list[list] = []
    for i in range(n_paintings + high_repetition):
        p = _draw_painting(rng, i)
        count = 42 if i >= n_paintings else annotators + int(rng.random() < 0.15)
        annotations = _annotate(rng, p, count)
        _save_image(
            _draw_image(rng, p.emotion, p.shape, OBJECT_COLOURS[p.colour]),
            tmp / "images" / p.art_style / f"{p.painting}.jpg",
        )
        rows.extend([p.art_style, p.painting, e, u, count] for e, u in annotations)
    _write_csv(tmp / CSV_NAME, ["art_style", "painting", "emotion", "utterance", "repetition"], rows)
    return len(rows)


def synthetic_paths(out: str | os.PathLike, contrastive: bool = False) -> SyntheticPaths:
    """The file layout of a generated dataset in ``out``."""
    out = Path(out)
    cpath = out / CONTRASTIVE_NAME
    return SyntheticPaths(
        root=out,
        csv=out / CSV_NAME,
        image_dir=out / "images",
        manifest=out / "manifest.json",
        contrastive_csv=cpath if contrastive or cpath.exists() else None,
    )


def generate_synthetic_artemis(
    out_dir: str | os.PathLike,
    n_paintings: int = 240,
    annotators: int = 5,
    seed: int = 0,
    *,
    high_repetition: int = 0,
) -> SyntheticPaths:
    """Write (or reuse) the synthetic ArtEmis-format dataset in ``out_dir``; see module doc."""
    if n_paintings < 1 or annotators < 1:
        raise ValueError("n_paintings and annotators must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = synthetic_paths(out)
    wanted = {
        "version": SYNTHETIC_VERSION,
        "seed": int(seed),
        "n_paintings": int(n_paintings),
        "annotators": int(annotators),
        "high_repetition": int(high_repetition),
    }
    with FileLock(str(out / ".generate.lock")):
        if paths.manifest.exists() and paths.csv.exists() and paths.image_dir.is_dir():
            current = json.loads(paths.manifest.read_text(encoding="utf-8"))
            if {k: current.get(k) for k in wanted} == wanted:
                return paths
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-generate-", dir=out))
        try:
            n_rows = _generate_into(tmp, n_paintings, annotators, seed, high_repetition)
            paths.manifest.unlink(missing_ok=True)  # incomplete until the manifest is back
            for stale in (paths.image_dir, out / CONTRASTIVE_NAME):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
            os.replace(tmp / "images", paths.image_dir)
            os.replace(tmp / CSV_NAME, paths.csv)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        manifest = {**wanted, "rows": n_rows, "csv_sha256": _sha256(paths.csv)}
        _atomic_write_text(paths.manifest, json.dumps(manifest, indent=2, sort_keys=True))
    return synthetic_paths(out)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


_OPPOSITE = {
    "amusement": "sadness",
    "awe": "fear",
    "contentment": "disgust",
    "excitement": "anger",
    "anger": "contentment",
    "disgust": "awe",
    "fear": "amusement",
    "sadness": "excitement",
    "something else": "contentment",
}


def write_synthetic_contrastive(
    paths: SyntheticPaths, n_paintings: int = 40, annotators: int = 5, seed: int = 1
) -> SyntheticPaths:
    """Write an ArtEmis v2.0-style ``Contrastive.csv`` next to a generated v1 dataset.

    Each new painting is paired with an anchor painting of the v1 set (drawn with
    ``default_rng(seed)`` among the sorted ids): it shows the anchor's kind of object with the
    palette of the *opposite* emotion and is annotated accordingly, like ArtEmis v2's
    contrastive collection. Columns: ``art_style, painting, emotion, utterance, repetition,
    anchor_art_style, anchor_painting``; the new images go to the same image folder.
    """
    import pandas as pd

    v1 = pd.read_csv(paths.csv, dtype=str, keep_default_na=False)
    first = v1.drop_duplicates(["art_style", "painting"]).sort_values(["art_style", "painting"])
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(first), size=min(n_paintings, len(first)), replace=False)
    rows: list[list] = []
    with FileLock(str(paths.root / ".generate.lock")):
        for k, j in enumerate(sorted(picks.tolist())):
            anchor = first.iloc[j]
            votes = v1[(v1.art_style == anchor.art_style) & (v1.painting == anchor.painting)].emotion
            emotion = _OPPOSITE[votes.mode().sort_values().iloc[0]]
            objects = OBJECTS[emotion]
            p = _draw_painting(rng, 90000 + k, emotion=emotion, obj=objects[int(rng.integers(len(objects)))])
            _save_image(
                _draw_image(rng, p.emotion, p.shape, OBJECT_COLOURS[p.colour]),
                paths.image_dir / p.art_style / f"{p.painting}.jpg",
            )
            for e, u in _annotate(rng, p, annotators):
                rows.append([p.art_style, p.painting, e, u, annotators, anchor.art_style, anchor.painting])
        out = paths.root / CONTRASTIVE_NAME
        tmp = paths.root / f".{CONTRASTIVE_NAME}.tmp-{os.getpid()}"
        _write_csv(
            tmp,
            ["art_style", "painting", "emotion", "utterance", "repetition", "anchor_art_style", "anchor_painting"],
            rows,
        )
        os.replace(tmp, out)
    return synthetic_paths(paths.root, contrastive=True)
