"""Built-in datasets: ``demo`` (generated offline, in seconds) and ``pets`` (Oxford-IIIT Pet as cat vs dog).

A dataset plugin registers a ``prepare(root) -> Path`` function; zoo calls it with a folder in its cache
($ZOO_CACHE/datasets/<name>) and trains on the ImageFolder directory it returns (one sub-folder per class).
"""

from __future__ import annotations

import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zoo
from zoo.errors import ZooError

DEMO_CLASSES = ("dots", "hstripes", "vstripes")
DEMO_PER_CLASS = 300
DEMO_SIZE = 64
DEMO_VERSION = 1  # bump when the generator changes, so old caches are not reused


def _publish(tmp: Path, final: Path) -> Path:
    """Move a fully written ``tmp`` folder to ``final`` in one rename; a concurrent winner's copy is kept."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------------------- demo


def _demo_image(cls: str, rng: random.Random, size: int = DEMO_SIZE):
    """One picture whose class is its texture: dots, horizontal or vertical stripes (+-20 degrees), in random
    colours and scales, over a random gradient, partly hidden by a plain blob, with distractor lines and noise.
    Drawn at 4x and downsampled for smooth edges."""
    from PIL import Image, ImageDraw, ImageFilter

    big = size * 4

    def colour():
        return tuple(rng.randint(0, 255) for _ in range(3))

    def rotated(img, spread=360.0):  # a 2big x 2big drawing at a random angle, its centre kept (no empty corners)
        img = img.rotate(rng.uniform(-spread / 2, spread / 2), resample=Image.BILINEAR)
        return img.crop((big // 2, big // 2, big // 2 + big, big // 2 + big))

    bg_a, bg_b = colour(), colour()
    ramp = rotated(Image.linear_gradient("L").resize((2 * big, 2 * big)))
    img = Image.composite(Image.new("RGB", (big, big), bg_a), Image.new("RGB", (big, big), bg_b), ramp)

    # the texture, as a mask: period 6-14 px at the final size
    period = rng.uniform(6, 14) * 4
    mask = Image.new("L", (2 * big, 2 * big), 0)
    draw = ImageDraw.Draw(mask)
    steps = int(2 * big / period) + 2
    for i in range(steps):
        for j in range(steps):
            x, y = i * period, j * period
            if cls == "vstripes" and j == 0:
                draw.rectangle([x, 0, x + period / 2, 2 * big], fill=255)
            elif cls == "hstripes" and i == 0:
                draw.rectangle([0, y, 2 * big, y + period / 2], fill=255)
            elif cls == "dots":
                r = period * rng.uniform(0.22, 0.32)
                cx, cy = x + rng.uniform(-1, 1) * period * 0.08, y + rng.uniform(-1, 1) * period * 0.08
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    mean_bg = [(a + b) / 2 for a, b in zip(bg_a, bg_b)]
    fill = colour()
    while sum(abs(f - m) for f, m in zip(fill, mean_bg)) < 180:  # visible against the background
        fill = colour()
    img = Image.composite(Image.new("RGB", (big, big), fill), img, rotated(mask, spread=40))

    draw = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # a plain blob hiding part of the texture
        r = rng.uniform(0.1, 0.25) * big
        cx, cy = rng.uniform(0, big), rng.uniform(0, big)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour())
    for _ in range(rng.randint(1, 3)):  # distractors: thin lines in random colours
        draw.line([(rng.uniform(0, big), rng.uniform(0, big)) for _ in range(2)], fill=colour(),
                  width=rng.randint(3, 8))
    img = img.resize((size, size), Image.LANCZOS)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.7)))
    import numpy as np  # pixel noise from a generator seeded by rng (PIL's own noise is not reproducible)

    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(5, 25), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def prepare_demo(root: Path) -> Path:
    """Generate the demo set once (deterministically, offline) under ``root``; later calls reuse it."""
    root = Path(root)
    final = root / f"v{DEMO_VERSION}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".v{DEMO_VERSION}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    # one thread per class, each with its own generator (the images do not depend on the threads); PIL's resampling
    # and JPEG encoding release the GIL, so this takes about half the time on two cores
    with ThreadPoolExecutor(max_workers=len(DEMO_CLASSES)) as pool:
        list(pool.map(_demo_class, DEMO_CLASSES, range(len(DEMO_CLASSES)), [tmp] * len(DEMO_CLASSES)))
    return _publish(tmp, final)


def _demo_class(cls: str, index: int, tmp: Path) -> None:
    folder = tmp / cls
    folder.mkdir(parents=True)
    rng = random.Random(1000 * DEMO_VERSION + index)
    for i in range(DEMO_PER_CLASS):
        _demo_image(cls, rng).save(folder / f"{cls}_{i:04d}.jpg", quality=90)


# --------------------------------------------------------------------------------------------------- pets


def arrange_pets(source: Path, target: Path) -> Path:
    """Oxford-IIIT Pet as torchvision lays it out (``source``/images, ``source``/annotations/{trainval,test}.txt,
    lines 'Image_id class_id species breed_id', species 1 = cat, 2 = dog) -> ImageFolder ``target``/{cat,dog}."""
    species = {}
    for split in ("trainval", "test"):
        for line in (source / "annotations" / f"{split}.txt").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#"):
                species[fields[0]] = "cat" if fields[2] == "1" else "dog"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for cls in ("cat", "dog"):
        (tmp / cls).mkdir(parents=True)
    for name, cls in sorted(species.items()):
        src = source / "images" / f"{name}.jpg"
        if not src.is_file():
            continue
        dst = tmp / cls / src.name
        try:
            os.link(src, dst)  # no second copy on disk when the cache is one file system
        except OSError:
            shutil.copy2(src, dst)
    return _publish(tmp, target)


def prepare_pets(root: Path) -> Path:
    """Download Oxford-IIIT Pet through torchvision once (into ``root``), then arrange it as cat/dog."""
    root = Path(root)
    target = root / "cat-vs-dog"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    source = root / "oxford-iiit-pet"
    try:
        from torchvision.datasets import OxfordIIITPet

        OxfordIIITPet(root=str(root), split="trainval", download=True)  # does nothing when already there
    except Exception as exc:  # URLError, socket errors, checksum failures: all mean "cannot get it now"
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ZooError(
            f"Dataset 'pets' (Oxford-IIIT Pet, about 800 MB) needs the network once to download, and the download "
            f"failed ({reason}). Connect and retry, or extract images.tar.gz and annotations.tar.gz from "
            f"https://www.robots.ox.ac.uk/~vgg/data/pets/ into '{source}' (folders images/ and annotations/)."
        ) from None
    return arrange_pets(source, target)


@zoo.hookimpl
def register_datasets(register):
    register("demo", prepare_demo,
             description=f"{len(DEMO_CLASSES)} textures (dots, horizontal and vertical stripes) in random colours and "
                         f"scales: {DEMO_PER_CLASS} generated {DEMO_SIZE} px images each, made offline on first use")
    register("pets", prepare_pets,
             description="Oxford-IIIT Pet as cat vs dog (7,349 photos); downloaded once through torchvision")
