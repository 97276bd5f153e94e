"""Training recipes on real images, against a classical baseline.

    pip install scikit-learn scikit-image      # for the data sets and the SVM only; zoo does not need them
    python bench/recipes.py [--sets digits,textures] [--recipes seed,scratch] [--size 32] [--model tinycnn]
    python bench/recipes.py --sets photos --recipes scratch      # the held-out set, once the recipe is chosen

Data sets (real images, written once as ImageFolders under $ZOO_CACHE/bench-recipes):
- digits: scikit-learn's handwritten digits (1,797 scans, 8x8 grayscale, 10 classes): symbols, a flip changes them.
- textures: scikit-image's photographs of brick, grass and gravel, plus the moon's surface, cut into 32x32 tiles
  (4 classes x 256).
- photos: scikit-image's colour photographs (cat, coffee, astronaut, rocket, Hubble deep field, tissue stain),
  cut into 32x32 tiles, the class being the photograph (6 x 150): the held-out check, not used to choose.
- faces: scikit-image's subset of Labeled Faces in the Wild, 25x25 grayscale, face or not (2 x 100), and
- scenes: 32x32 tiles of six more photographs (scikit-image's camera man, coins, cell and a printed page;
  scikit-learn's China temple and flower; 6 x 100, the page 72): held out for issue 19's recipe, first trained
  after it was chosen on digits, textures and photos.

Each recipe trains with zoo's own split (8:1:1, seed 42) and reports test accuracy and time; the baseline is an
RBF SVM (scikit-learn, gamma='scale', C=10) on the raw pixels of the same train+val images, tested on the same test
images. Extra candidate recipes are given as NAME=option:value;option:value (e.g. 'adamw=optimizer:adamw;lr:0.003').
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _save(img, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _tiles(image, side: int, limit: int):
    h, w = image.shape[:2]
    out = []
    for top in range(0, h - side + 1, side):
        for left in range(0, w - side + 1, side):
            out.append(image[top:top + side, left:left + side])
    return out[:limit]


def make_set(name: str, root: Path) -> Path:
    import numpy as np

    folder = root / name
    if folder.is_dir():
        return folder
    tmp = root / f".{name}.tmp"
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        for i, (img, label) in enumerate(zip(digits.images, digits.target)):
            _save((img * (255 / 16)).round().astype(np.uint8), tmp / str(label) / f"{i:04d}.png")
    elif name == "textures":
        from skimage import data

        for cls in ("brick", "grass", "gravel", "moon"):
            for i, tile in enumerate(_tiles(getattr(data, cls)(), 32, 256)):
                _save(tile, tmp / cls / f"{i:03d}.png")
    elif name == "photos":
        from skimage import data

        for cls in ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry"):
            for i, tile in enumerate(_tiles(getattr(data, cls)(), 32, 150)):
                _save(tile, tmp / cls / f"{i:03d}.png")
    elif name == "faces":  # held out for issue 19: chosen after the recipe was
        from skimage import data

        faces = data.lfw_subset()  # 200 x 25 x 25 in [0, 1]: the first 100 are faces, the next 100 are not
        for i, img in enumerate(faces):
            _save((img * 255).round().astype(np.uint8), tmp / ("face" if i < 100 else "other") / f"{i:03d}.png")
    elif name == "scenes":  # held out for issue 19: chosen after the recipe was
        from skimage import data
        from sklearn.datasets import load_sample_images

        samples = dict(zip(("china", "flower"), load_sample_images().images))
        for cls in ("camera", "coins", "cell", "page", "china", "flower"):
            image = samples[cls] if cls in samples else getattr(data, cls)()
            for i, tile in enumerate(_tiles(image, 32, 100)):
                _save(tile, tmp / cls / f"{i:03d}.png")
    else:
        raise SystemExit(f"unknown set {name}")
    tmp.rename(folder)
    return folder


def svm_baseline(folder: Path, size: int) -> float:
    """RBF SVM on the raw pixels (resized to size), zoo's own split: train+val to fit, test to score."""
    import numpy as np
    from PIL import Image
    from sklearn.svm import SVC

    from zoo.data import load_images, split_samples

    images = load_images(folder, image_sizes=[size])
    split = split_samples(images, (8, 1, 1), 42)

    def features(indices):
        rows = [np.asarray(Image.open(folder / images.samples[i].path).convert("L").resize((size, size)),
                           dtype=np.float32).ravel() / 255 for i in indices]
        return np.stack(rows), np.array([images.samples[i].label for i in indices])

    x_train, y_train = features(split.train + split.val)
    x_test, y_test = features(split.test)
    clf = SVC(C=10, gamma="scale").fit(x_train, y_train)
    return float((clf.predict(x_test) == y_test).mean())


def run_recipe(folder: Path, model: str, size: int, options: dict, **session: object) -> tuple[float, float, int]:
    from zoo.spec import RunSpec
    from zoo.store import Registry
    from zoo.training import Session, make_plan

    with tempfile.TemporaryDirectory() as tmp, Registry.open(Path(tmp) / "r.db") as reg:
        spec = RunSpec(model, str(folder), image_size=size, **options)
        plan = make_plan([spec], reg)
        started = time.perf_counter()
        result = Session(plan, reg, **session).run()  # session: e.g. train_fn=
        if result.stopped_by:  # Ctrl-C or SIGTERM stop the benchmark, not only the run in progress
            raise SystemExit(result.exit_code)
        (outcome,) = result.outcomes
        return outcome.metrics.get("test_accuracy", float("nan")), time.perf_counter() - started, outcome.epochs_run


def parse_recipe(text: str) -> tuple[str, dict]:
    from zoo.spec import convert

    if "=" not in text:
        return text, {"recipe": text}
    name, _, body = text.partition("=")
    options = {"recipe": "scratch"}
    for part in filter(None, body.split(";")):
        key, _, value = part.partition(":")
        options[key] = convert(key, value)
    return name, options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="digits,textures")
    parser.add_argument("--recipes", default="seed,scratch")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--model", default="tinycnn")
    parser.add_argument("--no-svm", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    from zoo.data import cache_root

    root = cache_root() / "bench-recipes"
    print(f"{'set':10} {'recipe':28} {'test acc':>8} {'epochs':>6} {'time':>7}", flush=True)
    for name in args.sets.split(","):
        folder = make_set(name, root)
        if not args.no_svm:
            print(f"{name:10} {'svm (rbf, C=10)':28} {svm_baseline(folder, args.size):8.4f}", flush=True)
        for text in args.recipes.split(","):
            label, options = parse_recipe(text)
            acc, seconds, epochs = run_recipe(folder, args.model, args.size, options)
            print(f"{name:10} {label:28} {acc:8.4f} {epochs:6d} {seconds:6.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
