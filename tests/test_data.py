"""Data: scanning and verifying image folders, fingerprints, the stratified split, transforms, built-in datasets."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from zoo.data import (crop_boxes, load_images, make_pipeline, parse_split, resolve_data, scan_images,
                      split_samples)
from zoo.errors import ZooError


def classes_of(images, indices):
    out: dict[str, int] = {}
    for i in indices:
        name = images.classes[images.samples[i].label]
        out[name] = out.get(name, 0) + 1
    return out


def test_split_is_stratified_deterministic_and_seeded(make_images):
    root = make_images({"cat": 20, "dog": 10, "fox": 30}, size=16)
    images = load_images(root, image_sizes=[16])
    a = split_samples(images, (8, 1, 1), seed=42)
    b = split_samples(load_images(root, image_sizes=[16]), (8, 1, 1), seed=42)
    assert (a.train, a.val, a.test, a.fingerprint) == (b.train, b.val, b.test, b.fingerprint)
    assert classes_of(images, a.train) == {"cat": 16, "dog": 8, "fox": 24}
    assert classes_of(images, a.val) == {"cat": 2, "dog": 1, "fox": 3}
    assert classes_of(images, a.test) == {"cat": 2, "dog": 1, "fox": 3}
    assert sorted(a.train + a.val + a.test) == list(range(60))  # every image in exactly one part
    c = split_samples(images, (8, 1, 1), seed=7)
    assert c.fingerprint != a.fingerprint and c.train != a.train
    assert split_samples(images, (3, 1, 1), seed=42).sizes() == {"train_size": 36, "val_size": 12, "test_size": 12}


def test_fingerprints_follow_files_not_pixels_order(make_images):
    root = make_images({"cat": 6, "dog": 6}, size=16)
    first = load_images(root, image_sizes=[16])
    (root / "dog" / "dog_000.jpg").write_bytes((root / "dog" / "dog_000.jpg").read_bytes() + b"\0" * 10)
    second = load_images(root, image_sizes=[16])
    assert first.fingerprint != second.fingerprint  # a size changed
    assert len(first.fingerprint) == 16


def test_corrupt_files_are_listed_skipped_or_refused_with_strict(make_images):
    root = make_images({"cat": 8, "dog": 8}, size=16)
    good = (root / "cat" / "cat_000.jpg").read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored silently
    warnings: list[str] = []
    images = load_images(root, image_sizes=[16], warn=warnings.append)
    assert sorted(p for p, _ in images.skipped) == ["cat/truncated.jpg", "dog/notes.txt"]
    assert len(images.samples) == 16 and images.cache.shape == (16, 3, 19, 19)
    assert len(warnings) == 1 and "cat/truncated.jpg" in warnings[0] and "dog/notes.txt" in warnings[0]
    with pytest.raises(ZooError, match=r"2 file\(s\).*truncated.jpg.*--strict"):
        load_images(root, image_sizes=[16], strict=True)


@pytest.mark.parametrize("layout, message", [
    (None, "does not exist"),
    ({"cat": 5}, "at least two class"),
    ({"cat": 5, "dog": 0}, "'dog' .* is empty"),
    ({"cat": 5, "dog": 2}, "'dog' has only 2 image"),
])
def test_bad_folders_are_one_clear_error(tmp_path, layout, message):
    from conftest import write_images

    root = tmp_path / "data"
    if layout is not None:
        write_images(root, {k: v for k, v in layout.items() if v}, size=16)
        for cls in layout:
            (root / cls).mkdir(parents=True, exist_ok=True)
    with pytest.raises(ZooError, match=message) as caught:
        load_images(root, image_sizes=[16])
    assert "\n" not in caught.value.format_message()


def test_class_emptied_by_unreadable_files(tmp_path):
    from conftest import write_images

    root = write_images(tmp_path / "data", {"cat": 5}, size=16)
    (root / "dog").mkdir()
    for i in range(3):
        (root / "dog" / f"broken{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(ZooError, match="'dog' .* has no readable images"):
        load_images(root, image_sizes=[16])


@pytest.mark.parametrize("text", ["8:1", "8:1:0", "a:b:c", "8:-1:1"])
def test_bad_split_option(text):
    with pytest.raises(ZooError, match="three positive ratios"):
        parse_split(text)


def test_crop_boxes_stay_inside_and_follow_the_seed():
    import torch

    a = crop_boxes(500, 40, 40, torch.Generator().manual_seed(1))
    b = crop_boxes(500, 40, 40, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    top, left, h, w = a.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 40).all()
    area = (h * w).float() / 1600
    assert area.min() >= 0.05 and area.max() <= 1.0 and area.std() > 0.1  # random areas, about 8%..100%


def test_gpu_style_batched_crops_match_the_cpu_ones():
    import torch

    from zoo.data import cpu_resized_crops, resized_crops

    # smooth images, so that bilinear sampling with or without antialiasing gives nearly the same pixels
    base = torch.rand(6, 3, 5, 5) * 255
    images = torch.nn.functional.interpolate(base, size=(40, 40), mode="bicubic", align_corners=False)
    images = images.clamp(0, 255).round().to(torch.uint8).contiguous(memory_format=torch.channels_last)
    boxes = torch.tensor([[0, 0, 40, 40], [5, 10, 20, 30], [10, 0, 30, 12], [0, 20, 16, 20], [3, 3, 34, 34],
                          [20, 20, 20, 20]])
    cpu = cpu_resized_crops(images, torch.arange(len(images)), boxes, 24).float()
    gpu = resized_crops(images, boxes, 24)
    assert cpu.shape == gpu.shape == (6, 3, 24, 24)
    assert (cpu - gpu).abs().mean() < 2.0  # same boxes, same orientation (a wrong box would differ by ~30)


def test_cpu_crops_straight_from_the_cache_match_interpolate_and_flip():
    import torch
    import torch.nn.functional as F

    from zoo.data import cpu_resized_crops

    # an NHWC uint8 cache viewed as NCHW (channels_last), like load_images keeps it, offset by one image
    cache = torch.randint(0, 256, (6, 30, 30, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    cache = cache.permute(0, 3, 1, 2)[1:]
    indices = torch.tensor([4, 0, 2, 2])
    boxes = torch.tensor([[0, 0, 30, 30], [5, 7, 11, 20], [29, 29, 1, 1], [2, 1, 25, 13]])
    flips = torch.tensor([False, True, False, True])
    out = cpu_resized_crops(cache, indices, boxes, 12, flips)
    expected = []
    for i, (t, l, h, w), f in zip(indices.tolist(), boxes.tolist(), flips.tolist()):
        crop = F.interpolate(cache[i:i + 1, :, t:t + h, l:l + w], size=(12, 12), mode="bilinear", antialias=True,
                             align_corners=False)
        expected.append(crop.flip(-1) if f else crop)
    assert out.dtype == torch.uint8 and torch.equal(out, torch.cat(expected))
    assert not torch.equal(out[1], torch.cat(expected)[1].flip(-1))  # the flip really happened
    with pytest.raises(ValueError, match="inside"):  # as_strided would wrap into the next row: refused
        cpu_resized_crops(cache, indices[:1], torch.tensor([[0, 20, 5, 11]]), 12)



def test_normalise_is_the_same_in_both_layouts_and_sizes():
    import torch

    from zoo.data import IMAGENET_MEAN, IMAGENET_STD, normalise

    x = torch.randint(0, 256, (5, 3, 9, 7), dtype=torch.uint8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (x.float() / 255 - mean) / std
    plain = normalise(x)
    nhwc = normalise(x.contiguous(memory_format=torch.channels_last))
    assert plain.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, nhwc) and torch.allclose(plain, expected, atol=1e-5)
    assert torch.allclose(normalise(x[:, :, 1:5, 2:6]), expected[:, :, 1:5, 2:6], atol=1e-5)  # neither layout
    assert torch.allclose(normalise(x[:, :, :4, :4].contiguous()), expected[:, :, :4, :4], atol=1e-5)


@pytest.mark.parametrize("stream", [False, True], ids=["memory", "disk"])
def test_eval_transforms_are_deterministic_and_train_ones_random(make_images, monkeypatch, stream):
    import torch

    if stream:
        monkeypatch.setenv("ZOO_CACHE_MEMORY", "0")  # nothing fits: stream from disk
    root = make_images({"cat": 10, "dog": 10}, size=24)
    images = load_images(root, image_sizes=[16])
    assert (images.cache is None) == stream
    split = split_samples(images, (8, 1, 1), 42)
    pipe = make_pipeline(images, split, image_size=16, batch_size=4, device="cpu", workers=0)
    first = torch.cat([x for x, _ in pipe.eval_batches("test")])
    again = torch.cat([x for x, _ in pipe.eval_batches("test")])
    assert first.shape == (2, 3, 16, 16) and torch.equal(first, again)
    labels = torch.cat([y for _, y in pipe.eval_batches("val")])
    assert labels.tolist() == [images.samples[i].label for i in split.val]
    # normalised with ImageNet statistics: values around 0, not 0..255 or 0..1
    assert -3 < float(first.min()) < float(first.max()) < 3
    e1 = [x for x, _ in pipe.train_epoch(torch.Generator().manual_seed(0))]
    e2 = [x for x, _ in pipe.train_epoch(torch.Generator().manual_seed(0))]
    e3 = [x for x, _ in pipe.train_epoch(torch.Generator().manual_seed(1))]
    assert [x.shape[0] for x in e1] == [4, 4, 4, 4] and e1[0].shape[1:] == (3, 16, 16)
    if not stream:  # workers seed themselves from the generator; in memory it is exactly reproducible
        assert all(torch.equal(a, b) for a, b in zip(e1, e2))
    assert not all(torch.equal(a, b) for a, b in zip(e1, e3))


def test_prefetched_batches_are_the_same_and_errors_come_through(make_images):
    import torch

    from zoo.data import prefetch

    root = make_images({"cat": 10, "dog": 10}, size=20)
    images = load_images(root, image_sizes=[16])
    pipe = make_pipeline(images, split_samples(images, (8, 1, 1), 42), image_size=16, batch_size=4, device="cpu")
    plain = list(pipe.train_epoch(torch.Generator().manual_seed(5)))
    pipe.prefetch = True
    ahead = list(pipe.train_epoch(torch.Generator().manual_seed(5)))
    assert len(plain) == len(ahead) == 4
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(plain, ahead))

    def broken():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(prefetch(broken()))


def test_memory_and_disk_eval_agree(make_images, monkeypatch):
    import torch

    root = make_images({"cat": 6, "dog": 6}, size=40)
    images = load_images(root, image_sizes=[32])
    split = split_samples(images, (4, 1, 1), 42)
    mem = torch.cat([x for x, _ in make_pipeline(images, split, image_size=32, batch_size=4,
                                                 device="cpu").eval_batches("val")])
    monkeypatch.setenv("ZOO_CACHE_MEMORY", "0")
    streamed = load_images(root, image_sizes=[32])
    disk = torch.cat([x for x, _ in make_pipeline(streamed, split, image_size=32, batch_size=4, device="cpu",
                                                  workers=0).eval_batches("val")])
    assert mem.shape == disk.shape
    assert (mem - disk).abs().mean() < 0.15  # same crop; only resampling differs


# --------------------------------------------------------------------------------------------- datasets


def test_unknown_data_names_the_registered_datasets(tmp_path):
    with pytest.raises(ZooError, match="does not exist and is not a registered dataset.*demo, pets"):
        resolve_data(str(tmp_path / "nothing"))


def test_demo_is_generated_once_deterministically_and_atomically(tmp_path, monkeypatch):
    import zoo_builtin_plugins.datasets as ds

    monkeypatch.setattr(ds, "DEMO_PER_CLASS", 4)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / f".v{ds.DEMO_VERSION}.tmp-1").mkdir()  # debris of an interrupted run: ignored
    first = ds.prepare_demo(tmp_path / "a")
    second = ds.prepare_demo(tmp_path / "b")
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*.jpg"))
    assert len(files) == 12 and files == sorted(p.relative_to(second).as_posix() for p in second.rglob("*.jpg"))
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert ds.prepare_demo(tmp_path / "a") == first  # found, not regenerated

    calls = {"n": 0}
    real = ds._demo_image

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ds, "_demo_image", dies)
    with pytest.raises(KeyboardInterrupt):
        ds.prepare_demo(tmp_path / "c")
    assert not (tmp_path / "c" / f"v{ds.DEMO_VERSION}").exists()  # half a dataset is never taken for one


def test_demo_through_resolve_data_uses_the_cache(monkeypatch, tmp_path):
    import zoo_builtin_plugins.datasets as ds

    monkeypatch.setattr(ds, "DEMO_PER_CLASS", 3)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    root, name = resolve_data("demo")
    assert name == "demo" and root.is_relative_to(tmp_path / "cache")
    assert sorted(p.name for p in root.iterdir()) == list(ds.DEMO_CLASSES)


def test_a_split_leaving_a_part_fewer_than_2_images_of_a_class_warns(make_images, cli):
    from zoo.data import split_warning

    assert split_warning({"cat": 20, "dog": 20}, (8, 1, 1)) is None  # 16:2:2
    assert split_warning({"cat": 20, "dog": 3}, None) is None
    line = split_warning({"cat": 20, "dog": 6, "eel": 4}, (8, 1, 1))
    assert line.startswith("The split 8:1:1 leaves class 'dog' (6 images) only 1 in val and 1 in test (also: eel)")
    assert "\n" not in line and "change --split" in line
    assert "1 in train" in split_warning({"cat": 3, "dog": 3}, (1, 1, 1))
    small = make_images({"cat": 6, "dog": 20}, size=16)
    result = cli("train", "tinycnn", "--data", small, "--image-size", "16", "--epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output  # a warning, not a failure
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: The split")]
    assert warnings == ["Warning: " + split_warning({"cat": 6, "dog": 20}, (8, 1, 1))]
    ample = make_images({"cat": 20, "dog": 20}, size=16)
    result = cli("train", "tinycnn", "--data", ample, "--image-size", "16", "--epochs", "1", "--quiet")
    assert result.exit_code == 0 and "The split" not in result.output


def test_dataset_names_are_case_insensitive_like_model_names(monkeypatch, tmp_path):
    import zoo_builtin_plugins.datasets as ds

    monkeypatch.setattr(ds, "DEMO_PER_CLASS", 3)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert resolve_data("DEMO") == resolve_data("Demo") == resolve_data("demo")
    assert resolve_data("DEMO")[1] == "demo"
    (tmp_path / "DEMO" / "a").mkdir(parents=True)  # a folder of that name, here, still wins
    assert resolve_data("DEMO") == ((tmp_path / "DEMO").resolve(), None)
    with pytest.raises(ZooError, match="not a registered dataset"):
        resolve_data("DEMOS")


def fake_pets(root: Path) -> None:
    """A tiny Oxford-IIIT Pet in torchvision's layout: images/*.jpg and annotations/{trainval,test}.txt."""
    from PIL import Image

    source = root / "oxford-iiit-pet"
    (source / "images").mkdir(parents=True)
    (source / "annotations").mkdir()
    entries = [("Abyssinian_1", 1, 1, 1), ("Abyssinian_2", 1, 1, 1), ("beagle_1", 2, 2, 1), ("beagle_2", 2, 2, 1),
               ("Bengal_3", 3, 1, 2)]
    for name, *_ in entries:
        Image.new("RGB", (20, 20), (100, 50, 20)).save(source / "images" / f"{name}.jpg")
    lines = [f"{n} {c} {s} {b}" for n, c, s, b in entries]
    (source / "annotations" / "trainval.txt").write_text("\n".join(lines[:3]) + "\n")
    (source / "annotations" / "test.txt").write_text("\n".join(lines[3:]) + "\n")


def test_pets_is_arranged_as_cat_vs_dog_from_a_local_copy(tmp_path, monkeypatch):
    import torchvision.datasets.oxford_iiit_pet as pet_module

    import zoo_builtin_plugins.datasets as ds

    def no_network(*args, **kwargs):
        raise AssertionError("the local copy must be used, not downloaded")

    monkeypatch.setattr(pet_module, "download_and_extract_archive", no_network)
    fake_pets(tmp_path / "pets")
    folder = ds.prepare_pets(tmp_path / "pets")
    assert sorted(p.name for p in (folder / "cat").iterdir()) == ["Abyssinian_1.jpg", "Abyssinian_2.jpg",
                                                                  "Bengal_3.jpg"]
    assert sorted(p.name for p in (folder / "dog").iterdir()) == ["beagle_1.jpg", "beagle_2.jpg"]
    assert ds.prepare_pets(tmp_path / "pets") == folder


def test_pets_offline_says_it_needs_the_network_once(tmp_path, monkeypatch):
    import torchvision.datasets.oxford_iiit_pet as pet_module

    import zoo_builtin_plugins.datasets as ds

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(pet_module, "download_and_extract_archive", offline)
    with pytest.raises(ZooError) as caught:
        ds.prepare_pets(tmp_path / "pets")
    message = caught.value.format_message()
    assert "needs the network once" in message and str(tmp_path / "pets" / "oxford-iiit-pet") in message
    assert not (tmp_path / "pets" / "cat-vs-dog").exists()


def test_scan_checks_the_folder_without_decoding_and_load_reuses_it(make_images, tmp_path):
    from conftest import write_images

    data = make_images({"cat": 6, "dog": 6}, size=16)
    (data / "dog" / "broken.jpg").write_bytes(b"not an image")
    scanned = scan_images(data, split=(1, 1, 1))
    assert scanned.classes == ["cat", "dog"] and len(scanned.files) == 13  # listed, not opened: broken one too
    images = load_images(data, image_sizes=[16], split=(1, 1, 1), scanned=scanned)
    plain = load_images(data, image_sizes=[16], split=(1, 1, 1))
    assert images.samples == plain.samples and images.fingerprint == plain.fingerprint
    assert [p for p, _ in images.skipped] == ["dog/broken.jpg"]
    one_class = write_images(tmp_path / "one", {"cat": 4}, size=16)
    with pytest.raises(ZooError, match="at least two class"):
        scan_images(one_class)
    with pytest.raises(ZooError, match="needs at least one image per class"):
        scan_images(data, split=(1, 1, 20))


def test_importing_zoo_data_loads_neither_torch_nor_pil_nor_numpy():
    """zoo.data is a package of one-job modules (locate, scan, decode, load, split, augment, transform, pipeline):
    importing it, as the planning and the read-only checks do, stays as cheap as the single module was, and every
    name it exports is there."""
    import subprocess
    import sys

    code = ("import sys, zoo.data; assert all(hasattr(zoo.data, n) for n in zoo.data.__all__); "
            "print(sorted(m for m in ('torch', 'torchvision', 'PIL', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
