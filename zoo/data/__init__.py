"""Image folders: scan and verify, fingerprint, split, decode once into memory, and feed batches.

The flow for one ``zoo train`` command, one module per step:

1. ``locate``: ``resolve_data("demo" | "./images")`` -> the ImageFolder directory (a registered dataset is
   prepared in the cache).
2. ``scan``: ``scan_images(root)`` lists every file once, without opening one, and fails bad input early.
3. ``load`` (with ``decode``): ``load_images(root, ...)`` checks each file decodes (bad files are listed and
   skipped, or refused with ``strict``), fingerprints the set, and -- when it fits the memory budget -- keeps each
   image decoded as uint8 at a bounded resolution (the central square, ``cache_side`` px). ``images`` holds what
   it returns (``ImageSet``, ``Sample``).
4. ``split``: ``split_samples(...)`` assigns files to train/val/test, stratified by class and seeded.
5. ``pipeline`` (with ``augment`` and ``transform``): ``make_pipeline(images, split, image_size, ...)`` gives the
   engine normalised batches: random resized crops and flips made in batched tensor form from the in-memory cache
   (on the GPU when training there), or read from disk by DataLoader workers when the images did not fit in
   memory. Validation and test images are prepared once, deterministically (resize + centre crop).

Steps 1-4 are shared by every model trained in the command; only step 5 depends on the model's image size.
torch (and PIL, numpy) are imported lazily, inside functions, so that importing zoo.data stays cheap.

The names below are the package's public ones, importable from ``zoo.data`` as before it was split; a test that
replaces one (monkeypatch) must replace it in the module that uses it (``zoo.data.load.decode_image``).
"""

from zoo.config import cache_root
from zoo.data.augment import (AUGMENT_PRESETS, CROP_RATIO, CROP_SCALE, Augment, apply_policy, augment_for,
                              cpu_resized_crops, crop_boxes, pil_train_transform, resized_crops)
from zoo.data.decode import (DECODE_GATE, DECODE_PIXELS, GATED_PIXELS, DecodeGate, decode_image, error_line,
                             open_rgb, pillow_size_warnings_off, to_eight_bit)
from zoo.data.images import ImageSet, Sample, class_counts, fingerprint_of
from zoo.data.load import MAX_CACHE_SIDE, cache_side_for, load_images, memory_budget, parse_memory
from zoo.data.locate import resolve_data
from zoo.data.pipeline import ImageGone, Pipeline, make_pipeline, prefetch
from zoo.data.scan import Scan, check_classes, open_regular, scan_images
from zoo.data.split import (PARTS, Split, check_split_counts, dataset_record, parse_split, split_samples,
                            split_warning)
from zoo.data.transform import center_crops, normalise, pil_eval_transform
from zoo.preprocess import EVAL_CROP, IMAGENET, IMAGENET_MEAN, IMAGENET_STD, Preprocess

__all__ = [
    "cache_root", "EVAL_CROP", "IMAGENET", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocess",  # re-exported
    "resolve_data",  # locate
    "Scan", "check_classes", "open_regular", "scan_images",  # scan
    "DECODE_GATE", "DECODE_PIXELS", "GATED_PIXELS", "DecodeGate", "decode_image", "error_line", "open_rgb",
    "pillow_size_warnings_off", "to_eight_bit",  # decode
    "ImageSet", "Sample", "class_counts", "fingerprint_of",  # images
    "MAX_CACHE_SIDE", "cache_side_for", "load_images", "memory_budget", "parse_memory",  # load
    "PARTS", "Split", "check_split_counts", "dataset_record", "parse_split", "split_samples", "split_warning",
    "AUGMENT_PRESETS", "CROP_RATIO", "CROP_SCALE", "Augment", "apply_policy", "augment_for", "cpu_resized_crops",
    "crop_boxes", "pil_train_transform", "resized_crops",  # augment
    "center_crops", "normalise", "pil_eval_transform",  # transform
    "ImageGone", "Pipeline", "make_pipeline", "prefetch",  # pipeline
]
