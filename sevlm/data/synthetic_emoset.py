"""A synthetic dataset in EmoSet's layout, drawn by the synthetic ArtEmis generator.

The images come from :mod:`sevlm.data.synthetic`'s painter (an emotion's palette, texture
and object shapes), so a model trained on the synthetic ArtEmis set has learnt what these
images show, while no image is one it trained on (another seed): the offline stand-in for
held-out evaluation on EmoSet. Only EmoSet's eight emotions are drawn, balanced.

Output (``out_dir``), as EmoSet-118K lays it out (see :mod:`sevlm.data.emoset`)::

    train.json, val.json, test.json   [emotion, image id, image path, annotation path]
    image/<emotion>/<emotion>_NNNNN.jpg
    annotation/<emotion>/<emotion>_NNNNN.json   {"emotion", "image_id", "object", ...}
    info.json                                    {"label2idx": {"emotion": ...}, ...}
    manifest.json                                generator version and arguments (last)

Every split holds ``images_per_emotion`` images of each emotion. Generating again with the
same arguments into a folder with a matching manifest does nothing; generation runs under a
file lock into a temporary folder that is moved into place, so concurrent callers are safe.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from filelock import FileLock

from sevlm.data.emoset import EMOSET_EMOTIONS, EMOSET_SPLITS
from sevlm.data.synthetic import OBJECT_COLOURS, _draw_image, _draw_painting

SYNTHETIC_EMOSET_VERSION = 1
MANIFEST = "manifest.json"
# Written into the folder, moved into place as a whole.
_PRODUCTS = ("image", "annotation", "info.json", *(f"{s}.json" for s in EMOSET_SPLITS))


def _generate_into(tmp: Path, images_per_emotion: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    number = 0
    for split in EMOSET_SPLITS:
        entries = []
        for emotion in EMOSET_EMOTIONS:
            for _ in range(images_per_emotion):
                image_id = f"{emotion}_{number:05d}"
                number += 1
                painting = _draw_painting(rng, number, emotion=emotion)
                image = _draw_image(rng, emotion, painting.shape, OBJECT_COLOURS[painting.colour])
                image_rel = f"image/{emotion}/{image_id}.jpg"
                annotation_rel = f"annotation/{emotion}/{image_id}.json"
                (tmp / image_rel).parent.mkdir(parents=True, exist_ok=True)
                image.save(tmp / image_rel, format="JPEG", quality=95)
                (tmp / annotation_rel).parent.mkdir(parents=True, exist_ok=True)
                annotation = {"emotion": emotion, "image_id": image_id, "object": [painting.obj],
                              "object_colour": painting.colour, "source": "sevlm synthetic painter"}
                (tmp / annotation_rel).write_text(json.dumps(annotation), encoding="utf-8")
                entries.append([emotion, image_id, image_rel, annotation_rel])
        (tmp / f"{split}.json").write_text(json.dumps(entries, indent=1), encoding="utf-8")
    label2idx = {e: i for i, e in enumerate(EMOSET_EMOTIONS)}
    info = {"label2idx": {"emotion": label2idx}, "idx2label": {"emotion": {str(i): e for e, i in label2idx.items()}}}
    (tmp / "info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return number


def generate_synthetic_emoset(out_dir: str | os.PathLike, images_per_emotion: int = 10, seed: int = 1) -> Path:
    """Write (or reuse) the synthetic EmoSet-format set in ``out_dir``; returns the folder.

    ``seed`` should differ from the synthetic ArtEmis set's (0 by default) so that no image
    is a training image.
    """
    if images_per_emotion < 1:
        raise ValueError("images_per_emotion must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {"version": SYNTHETIC_EMOSET_VERSION, "images_per_emotion": int(images_per_emotion), "seed": int(seed)}
    manifest = out / MANIFEST
    with FileLock(str(out / ".generate.lock")):
        if manifest.is_file():
            current = json.loads(manifest.read_text(encoding="utf-8"))
            if {k: current.get(k) for k in wanted} == wanted:
                return out
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-generate-", dir=out))
        try:
            n_images = _generate_into(tmp, images_per_emotion, seed)
            manifest.unlink(missing_ok=True)  # incomplete until the manifest is back
            for name in _PRODUCTS:
                stale = out / name
                if stale.is_dir():
                    shutil.rmtree(stale)
                os.replace(tmp / name, stale)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        manifest.write_text(json.dumps({**wanted, "images": n_images}, indent=2, sort_keys=True), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m sevlm.data.synthetic_emoset",
                                description="Write a synthetic dataset in EmoSet's layout (offline).")
    p.add_argument("out_dir")
    p.add_argument("--images-per-emotion", type=int, default=10, help="per split (default 10)")
    p.add_argument("--seed", type=int, default=1, help="not the ArtEmis set's seed (0), so no image is a training one")
    args = p.parse_args(argv)
    print(generate_synthetic_emoset(args.out_dir, args.images_per_emotion, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
