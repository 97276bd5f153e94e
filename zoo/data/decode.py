"""Decoding one image file, bounded: upright RGB (EXIF orientation applied), 16-bit grey scaled to 8 bits, large
images decoded at reduced scale and, over a size, one at a time in this process (DecodeGate)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

from zoo.data.scan import open_regular
from zoo.errors import printable


# Decoding bounds. An image of more than GATED_PIXELS is decoded only while the images being decoded by the other
# threads total at most DECODE_PIXELS (a bigger one waits until it is alone): four 13000 x 13000 PNGs are then
# decoded one after the other, not four at once. Before it is converted to RGB, an image much larger than its
# use needs is reduced (box average) to twice the size needed, and JPEGs are decoded at reduced scale.
GATED_PIXELS = 4_000_000
DECODE_PIXELS = 100_000_000
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F", "PA"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class DecodeGate:
    """Bounds the pixels decoded at once by the threads of this process (see DECODE_PIXELS)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.busy = 0
        self.condition = threading.Condition()

    @contextmanager
    def hold(self, pixels: int):
        if pixels <= GATED_PIXELS:
            yield
            return
        pixels = min(pixels, self.limit)
        with self.condition:
            while self.busy and self.busy + pixels > self.limit:
                self.condition.wait()
            self.busy += pixels
        try:
            yield
        finally:
            _release_free_memory()
            with self.condition:
                self.busy -= pixels
                self.condition.notify_all()


DECODE_GATE = DecodeGate(DECODE_PIXELS)


def _release_free_memory() -> None:
    """Give the memory of a huge image just freed back to the system. Pillow allocates images in blocks that
    glibc keeps in the arena of the thread that decoded them, so without this each decoding thread would keep
    the size of the largest image it ever decoded (peak RSS for four 13000 px PNGs: 2.0 GB without, 1.2 GB with)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


@contextmanager
def pillow_size_warnings_off():
    """Pillow warns (two raw lines) about images over Image.MAX_IMAGE_PIXELS; zoo says it once, its own way
    (load_images' ``warn``). Wrap whole loops in it, from one thread: warnings.catch_warnings is process-wide."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        yield


def to_eight_bit(im):
    """16-bit grayscale (PNG, TIFF) scaled to 8 bits: Pillow's convert() would clip every value over 255 to
    white. A 32-bit integer image whose values exceed 255 is taken as 16-bit data the same way."""
    from PIL import Image

    if im.mode not in _SIXTEEN_BIT and not (im.mode == "I" and (im.getextrema()[1] or 0) > 255):
        return im
    import numpy as np

    pixels = np.asarray(im)
    if pixels.dtype != np.uint16:
        pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
    return Image.fromarray((pixels >> 8).astype(np.uint8), "L")


def open_rgb(path: Path, min_side: Optional[int] = None, on_large: Optional[Callable[[tuple], None]] = None):
    """The whole image as an upright RGB PIL image (EXIF orientation applied). Raises on bad files, and on
    anything that is not a regular file (never opened: see open_regular).

    ``min_side``: the shorter side the caller needs at most; a JPEG is then decoded at reduced scale and an image
    at least four times larger is reduced to about twice that before conversion (bounded memory, the same
    pixels after the caller's antialiased resize). ``on_large((w, h))`` is called for an image over Pillow's
    decompression-bomb warning limit (wrap the caller's loop in pillow_size_warnings_off)."""
    from PIL import Image, ImageOps

    with open_regular(path) as f:
        try:
            im = Image.open(f)  # no 'with': the file closes below, and the loaded pixels stay with the image
        except Image.UnidentifiedImageError:
            raise Image.UnidentifiedImageError("cannot identify image file: not an image format Pillow reads") from None
        w, h = im.size
        if on_large and Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
            on_large((w, h))
        with DECODE_GATE.hold(w * h):
            if min_side:
                im.draft("RGB", (min_side, min_side))  # JPEG: let the decoder downscale by 2/4/8, staying >= it
            im.load()  # decodes everything: truncation raises here
            im = to_eight_bit(im)
            if min_side and im.mode in _REDUCIBLE and min(im.size) // (2 * min_side) >= 2:
                im = im.reduce(min(im.size) // (2 * min_side))
            if im.mode != "RGB":
                im = im.convert("RGB")
    ImageOps.exif_transpose(im, in_place=True)
    return im


def error_line(exc: BaseException) -> str:
    """Why a file could not be read, in one short line (control characters escaped)."""
    return printable(str(exc).split("\n")[0] or type(exc).__name__)[:160]


def decode_image(path: Path, side: Optional[int], on_large: Optional[Callable[[tuple], None]] = None):
    """Decode one file to RGB; with ``side``, return the central square resized to side x side as an HWC uint8
    array (large images are decoded at reduced scale where the format allows). Without ``side`` only check it
    decodes. Raises on unreadable, truncated or non-image files."""
    from PIL import Image

    # a check alone decodes a JPEG at 1/8 scale; the whole stream is still read, so truncation is still found
    im = open_rgb(path, side or 8, on_large)
    if not side:
        return None
    import numpy as np

    w, h = im.size
    short = min(w, h)
    box = ((w - short) / 2, (h - short) / 2, (w + short) / 2, (h + short) / 2)
    return np.asarray(im.resize((side, side), Image.BILINEAR, box=box, reducing_gap=None if short < 3 * side else 2.0))
