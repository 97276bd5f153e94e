"""Hostile or unlucky data folders (issue 11): names that are not UTF-8, broken and looping symlinks, named pipes,
16-bit PNGs and images over Pillow's size warning; through load_images and the real CLI."""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import write_images
from zoo.data import decode_image, load_images, open_rgb
from zoo.errors import ZooError

NOT_UTF8 = b"caf\xe9.jpg"  # Latin-1 bytes: os.fsdecode keeps the \xe9 as a lone surrogate


def finishes(function, seconds: float = 30):
    """function() in a daemon thread: (finished in time, its result or exception). A hang fails, never blocks."""
    box: dict = {}

    def work():
        try:
            box["result"] = function()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), box.get("error", box.get("result"))


def add_bad_name(folder: Path, source: Path) -> None:
    """A copy of a good image under a file name that is not valid UTF-8."""
    fd = os.open(os.path.join(os.fsencode(folder), NOT_UTF8), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, source.read_bytes())
    os.close(fd)


def hostile(root: Path) -> Path:
    """Add one of each unusable entry to an image folder: a non-UTF-8 name, a broken symlink, a symlink to
    itself, a folder symlink leading back up, and a named pipe."""
    add_bad_name(root / "cat", root / "cat" / "cat_000.jpg")
    (root / "cat" / "gone.jpg").symlink_to(root / "cat" / "nowhere.jpg")
    (root / "dog" / "self.jpg").symlink_to(root / "dog" / "self.jpg")
    (root / "dog" / "up").symlink_to(root / "dog")
    os.mkfifo(root / "dog" / "pipe.jpg")
    return root


EXPECTED = {"cat/caf\\xe9.jpg", "cat/gone.jpg", "dog/self.jpg", "dog/up/", "dog/pipe.jpg"}


# --------------------------------------------------------------------------------------------- listing


def test_unusable_entries_are_listed_and_skipped_without_being_opened(make_images):
    root = hostile(make_images({"cat": 6, "dog": 6}, size=16))
    messages: list[str] = []
    done, images = finishes(lambda: load_images(root, image_sizes=[16], warn=messages.append))
    assert done, "load_images hung (it opened the named pipe)"
    assert not isinstance(images, BaseException), images
    assert len(images.samples) == 12 and images.cache.shape[0] == 12
    reasons = {path.replace("\udce9", "\\xe9"): why for path, why in images.skipped}
    assert set(reasons) == EXPECTED
    assert "not valid UTF-8" in reasons["cat/caf\\xe9.jpg"]
    assert "broken symlink" in reasons["cat/gone.jpg"]
    assert "symlink loop" in reasons["dog/self.jpg"] and "symlink loop" in reasons["dog/up/"]
    assert "named pipe" in reasons["dog/pipe.jpg"]
    [message] = messages
    assert message.startswith("Skipping 5 file(s)") and "cat/caf\\xe9.jpg" in message
    assert message.encode("utf-8")  # printable: no lone surrogate left to crash the terminal
    assert len(images.fingerprint) == 16


def test_strict_refuses_unusable_entries_before_decoding(make_images, monkeypatch):
    root = hostile(make_images({"cat": 6, "dog": 6}, size=16))
    import zoo.data.load

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image although --strict had to refuse first")

    monkeypatch.setattr(zoo.data.load, "decode_image", no_decoding)
    done, error = finishes(lambda: load_images(root, image_sizes=[16], strict=True))
    assert done and isinstance(error, ZooError), error
    assert "5 file(s)" in error.message and "cat/caf\\xe9.jpg" in error.message and "--strict" in error.message
    assert error.message.encode("utf-8")


def test_a_folder_named_in_another_encoding_is_skipped_whole(make_images):
    root = make_images({"cat": 6, "dog": 6}, size=16)
    os.mkdir(os.path.join(os.fsencode(root / "dog"), b"sub\xff"))
    add_bad_name(Path(os.fsdecode(os.path.join(os.fsencode(root / "dog"), b"sub\xff"))), root / "dog" / "dog_000.jpg")
    images = load_images(root, image_sizes=[16])
    assert [p.replace("\udcff", "?") for p, _ in images.skipped] == ["dog/sub?"]
    assert len(images.samples) == 12


def test_a_named_pipe_given_to_the_decoder_is_refused_not_waited_on(tmp_path):
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    done, error = finishes(lambda: open_rgb(pipe))
    assert done, "open_rgb blocked on a named pipe"
    assert isinstance(error, OSError) and "named pipe" in str(error)


# --------------------------------------------------------------------------------------------- pixels


def sixteen_bit_png(path: Path) -> np.ndarray:
    """A 16-bit grayscale gradient over the full range; returns the 8-bit values it stands for."""
    values = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    return (values / 257).round()


def test_sixteen_bit_grayscale_png_is_scaled_not_white(tmp_path):
    expected = sixteen_bit_png(tmp_path / "deep.png")
    rgb = np.asarray(open_rgb(tmp_path / "deep.png")).astype(float)
    assert rgb.shape == (48, 48, 3)
    assert np.abs(rgb[..., 0] - expected).max() <= 1 and (rgb[..., 0] == rgb[..., 2]).all()
    cached = decode_image(tmp_path / "deep.png", 48).astype(float)
    assert abs(cached.mean() - expected.mean()) < 2  # the in-memory cache: a grey gradient, not white (255)


def test_sixteen_bit_pngs_are_grey_in_the_training_cache(tmp_path):
    data = tmp_path / "deep"
    for cls, level in (("dark", 9000), ("light", 56000)):
        (data / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((20, 20), level + 100 * i, dtype=np.uint16)).save(data / cls / f"{i}.png")
    images = load_images(data, image_sizes=[16], split=None)
    means = images.cache.float().mean(dim=(1, 2, 3)).tolist()
    assert max(means[:4]) < 50 and 200 < min(means[4:]) < 230  # 9000/257 = 35, 56000/257 = 218; never 255


def test_large_images_give_one_zoo_warning_and_no_pillow_warning(make_images, monkeypatch):
    root = make_images({"cat": 4, "dog": 4}, size=40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1200)  # every 40-48 px image is "large" now, none refused
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = load_images(root, image_sizes=[16], warn=messages.append)
    assert len(images.samples) == 8
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    [message] = messages
    assert message.startswith("8 image(s) have more than 0.0012 megapixels") and "one at a time" in message


def test_decode_gate_lets_one_huge_image_at_a_time():
    from zoo.data import DecodeGate

    gate = DecodeGate(limit=100_000_000)
    inside, most = [0], [0]
    lock = threading.Lock()

    def decode(pixels):
        with gate.hold(pixels):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            threading.Event().wait(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=decode, args=(169_000_000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 1  # four 13000 x 13000 images: decoded one after the other
    small = [threading.Thread(target=decode, args=(1_000_000,)) for _ in range(4)]
    most[0] = 0
    for t in small:
        t.start()
    for t in small:
        t.join(10)
    assert most[0] > 1  # small images are not held back


def test_large_images_are_reduced_before_conversion(tmp_path):
    Image.new("L", (1200, 900), 128).save(tmp_path / "big.png")
    im = open_rgb(tmp_path / "big.png", min_side=100)
    assert im.mode == "RGB" and 200 <= min(im.size) < 450  # about twice the side needed, not 900
    assert np.asarray(im).mean() == pytest.approx(128, abs=1)


# --------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """tinycnn trained once (1 epoch, 16 px) on a folder holding every kind of unusable entry:
    (registry, data folder, CLI result)."""
    base = tmp_path_factory.mktemp("hostile")
    data = hostile(write_images(base / "data", {"cat": 10, "dog": 10}, size=16))
    registry = base / "registry.db"
    from zoo.cli import app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
        mp.setenv("ZOO_CACHE", str(cache_dir))
        mp.delenv("ZOO_ARTIFACTS", raising=False)
        mp.setenv("COLUMNS", "200")
        done, result = finishes(lambda: CliRunner().invoke(
            app, ["--registry", str(registry), "train", "tinycnn", "--data", str(data), "--epochs", "1",
                  "--image-size", "16", "--batch-size", "8", "--quiet"]), seconds=120)
    assert done, "training hung on the data folder"
    return registry, data, result


def test_training_lists_and_skips_every_unusable_entry(trained):
    _, _, result = trained
    assert result.exit_code == 0, result.output
    assert "Unexpected" not in result.output and "Traceback" not in result.output
    assert "Skipping 5 file(s)" in result.output and "cat/caf\\xe9.jpg" in result.output
    for path in EXPECTED - {"cat/caf\\xe9.jpg"}:
        assert path in result.output


def test_training_with_strict_refuses_them_in_one_line(trained, cli):
    registry, data, _ = trained
    done, result = finishes(lambda: cli("--registry", registry, "train", "tinycnn", "--data", data, "--epochs", "1",
                                        "--image-size", "16", "--strict", "--quiet"))
    assert done, "--strict hung on the named pipe"
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: 5 file(s)") and "--strict" in lines[0]


def test_evaluate_data_lists_and_skips_them_too(trained, cli):
    registry, data, _ = trained
    done, result = finishes(lambda: cli("--registry", registry, "evaluate", "1", "--data", data, "--format", "json"))
    assert done and result.exit_code == 0, result.output
    assert "Skipping 5 file(s)" in result.stderr and "cat/caf\\xe9.jpg" in result.stderr
    assert json.loads(result.stdout)["metrics"]["images"] == 20


def test_predict_reports_pipes_and_broken_links_and_escapes_names(trained, cli, tmp_path):
    registry, data, _ = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    sixteen_bit_png(folder / "deep.png")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "gone.jpg").symlink_to(folder / "nowhere.jpg")
    add_bad_name(folder, data / "cat" / "cat_001.jpg")
    (folder / "clear\x1b[2J.jpg").write_bytes((data / "cat" / "cat_002.jpg").read_bytes())
    (folder / "title\x1b]0;x\x07.jpg").write_bytes(b"not an image")
    done, result = finishes(lambda: cli("--registry", registry, "predict", "1", folder, str(folder / "pipe.jpg")))
    assert done, "predict hung on a named pipe"
    assert result.exit_code == 0, result.output
    assert "named pipe" in result.output and "broken symlink" in result.output
    assert "caf\\xe9.jpg" in result.output and "Traceback" not in result.output
    assert "\x1b" not in result.output and "clear\\x1b[2J.jpg" in result.output
    assert "title\\x1b]0;x\\x07.jpg" in result.output  # in the table and in the warning
    deep = next(line for line in result.stdout.splitlines() if "deep.png" in line)
    assert "unreadable" not in deep and "%" in deep  # the 16-bit PNG is predicted


def test_a_data_folder_whose_own_path_is_not_utf8_is_one_clear_line(tmp_path, cli):
    folder = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"d\xff"))
    write_images(Path(folder), {"cat": 4, "dog": 4}, size=16)
    result = cli("train", "tinycnn", "--data", folder, "--epochs", "1", "--image-size", "16")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "d\\xff" in lines[0] and "not valid UTF-8" in lines[0], lines


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_exif_orientation_is_still_applied(tmp_path, suffix):
    im = Image.new("RGB", (60, 30), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 30, 30))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / f"o.{suffix}", exif=exif.tobytes())
    upright = np.asarray(open_rgb(tmp_path / f"o.{suffix}"))
    assert upright.shape == (60, 30, 3)
    assert upright[0, 0, 2] > 200 and upright[-1, 0, 0] > 200  # blue on top, red below
