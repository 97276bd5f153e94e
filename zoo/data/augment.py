"""How training images vary (``--augment`` presets, ``--hflip``): random resized crop boxes drawn for a whole
epoch at once, the crops made from the in-memory cache (batched on accelerators, straight from the cache on the
CPU), and the same augmentation as a torchvision transform for images streamed from disk."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional

from zoo.preprocess import EVAL_CROP

if TYPE_CHECKING:
    import torch

CROP_SCALE = (0.08, 1.0)  # random resized crop: area fraction and aspect ratio range (torchvision's defaults)
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class Augment:
    """How training images vary: a random resized crop (area ``scale``, aspect ``ratio``; None: the eval transform's
    centre crop), mirror flips, and a per-image policy ('trivial': torchvision's TrivialAugmentWide)."""

    name: str
    scale: Optional[tuple] = CROP_SCALE
    ratio: tuple = CROP_RATIO
    hflip: bool = True
    policy: Optional[str] = None


# --augment presets. seed: the first release's pipeline exactly. light keeps most of each image (a crop of 35-100%
# of the area shifts and zooms it a little). strong: light plus a random photometric/geometric op per image.
AUGMENT_PRESETS = {
    "seed": Augment("seed"),
    "light": Augment("light", scale=(0.35, 1.0), ratio=(0.8, 1.25)),
    "strong": Augment("strong", scale=(0.35, 1.0), ratio=(0.8, 1.25), policy="trivial"),
    "none": Augment("none", scale=None, hflip=False),
}


def augment_for(name: Optional[str], hflip: Optional[bool] = None) -> Augment:
    preset = AUGMENT_PRESETS[name or "seed"]
    return preset if hflip is None or hflip == preset.hflip else replace(preset, hflip=bool(hflip))


def crop_boxes(n: int, side_h: int, side_w: int, generator: "torch.Generator", scale: tuple = CROP_SCALE,
               ratio_range: tuple = CROP_RATIO) -> "torch.Tensor":
    """Random resized crop boxes [n, 4] (top, left, height, width) in pixels, vectorised: ten tries per sample
    of an area in CROP_SCALE and a log-uniform aspect in CROP_RATIO; a sample with no fitting try gets the
    whole image clamped to the ratio range (torchvision's fallback)."""
    import torch

    tries = 10
    area = side_h * side_w
    scale = torch.empty(n, tries).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(ratio_range[0]), math.log(ratio_range[1]), generator=generator)
    ratio = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * scale * ratio))
    h = torch.round(torch.sqrt(area * scale / ratio))
    ok = (w > 0) & (h > 0) & (w <= side_w) & (h <= side_h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    pick = first.clamp(min=0)
    h, w = h[rows, pick], w[rows, pick]
    # fallback: the whole image, cropped to the nearest allowed aspect ratio
    in_ratio = side_w / side_h
    if in_ratio < ratio_range[0]:
        fw, fh = side_w, round(side_w / ratio_range[0])
    elif in_ratio > ratio_range[1]:
        fh, fw = side_h, round(side_h * ratio_range[1])
    else:
        fh, fw = side_h, side_w
    none = first < 0
    h = torch.where(none, torch.tensor(float(fh)), h)
    w = torch.where(none, torch.tensor(float(fw)), w)
    u = torch.rand(n, 2, generator=generator)
    top = torch.floor(u[:, 0] * (side_h - h + 1))
    left = torch.floor(u[:, 1] * (side_w - w + 1))
    return torch.stack([top, left, h, w], 1).long()


def resized_crops(images: "torch.Tensor", boxes: "torch.Tensor", size: int) -> "torch.Tensor":
    """Crop each image [B, 3, S, S] (uint8) at its box (top, left, h, w) and resize it to size x size, for
    accelerators: one batched grid_sample for the whole batch, float 0..255 out. (On the CPU,
    ``cpu_resized_crops`` does one antialiased uint8 interpolation per sample straight from the cache.)"""
    import torch
    import torch.nn.functional as F

    b, _, s_h, s_w = images.shape
    boxes = boxes.to(images.device, torch.float32)
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = w / s_w
    theta[:, 0, 2] = (2 * left + w) / s_w - 1
    theta[:, 1, 1] = h / s_h
    theta[:, 1, 2] = (2 * top + h) / s_h - 1
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    # float 0..255 (no rounding back to uint8: normalise() takes either)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def cpu_resized_crops(cache: "torch.Tensor", indices: "torch.Tensor", boxes: "torch.Tensor", size: int,
                      flips: Optional["torch.Tensor"] = None) -> "torch.Tensor":
    """``resized_crops(cache[indices], boxes, size)`` on the CPU without gathering the batch first; samples
    where ``flips`` is true are mirrored left-right."""
    import torch

    # The op behind F.interpolate(mode="bilinear", antialias=True, align_corners=False), called directly: the
    # same uint8 result without F.interpolate's Python argument checks, which cost as much as a small resize.
    resize = getattr(torch._C._nn, "_upsample_bilinear2d_aa", None)
    if resize is None:  # a private op: should a torch release rename it, take the public (slower) road
        import torch.nn.functional as F

        def resize(x, out_size, align_corners):
            return F.interpolate(x, size=out_size, mode="bilinear", antialias=True, align_corners=align_corners)
    out_size = [size, size]
    flip_list = flips.tolist() if flips is not None else [False] * len(indices)
    # cache[i:i + 1, :, t:t + h, l:l + w] as one as_strided view instead of four slicing ops (which would clamp
    # a box reaching out of the image: as_strided does not, hence the check)
    _, channels, side_h, side_w = cache.shape
    top, left, h, w = boxes.unbind(1)
    if len(boxes) and not bool(((top >= 0) & (left >= 0) & (h > 0) & (w > 0) & (top + h <= side_h)
                                & (left + w <= side_w)).all()):
        raise ValueError("crop boxes must lie inside the cached images")
    s_n, s_c, s_h, s_w = cache.stride()
    base = cache.storage_offset()
    stride = (s_n, s_c, s_h, s_w)
    view = cache.as_strided
    out = []
    for i, (t, l, h, w), flip in zip(indices.tolist(), boxes.tolist(), flip_list):
        crop = resize(view((1, channels, h, w), stride, base + i * s_n + t * s_h + l * s_w), out_size, False)
        out.append(crop.flip(-1) if flip else crop)
    return torch.cat(out)


def pil_train_transform(size: int, augment: Optional[Augment] = None):
    from torchvision.transforms import v2

    augment = augment or AUGMENT_PRESETS["seed"]
    if augment.scale is None:
        steps = [v2.PILToTensor(), v2.Resize(round(size / EVAL_CROP), antialias=True), v2.CenterCrop(size)]
    else:
        steps = [v2.PILToTensor(), v2.RandomResizedCrop(size, scale=augment.scale, ratio=augment.ratio,
                                                         antialias=True)]
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.policy == "trivial":
        steps.append(v2.TrivialAugmentWide())
    return v2.Compose(steps)


def apply_policy(x: "torch.Tensor", policy: Optional[str]) -> "torch.Tensor":
    """The per-image policy of an Augment on a batch [B, 3, H, W] (uint8 or float 0..255); the same dtype out."""
    if policy != "trivial":
        return x
    import torch
    from torchvision.transforms import v2

    op = v2.TrivialAugmentWide()
    as_uint8 = x if x.dtype == torch.uint8 else x.round().clamp(0, 255).to(torch.uint8)
    out = torch.stack([op(img) for img in as_uint8])
    return out if x.dtype == torch.uint8 else out.to(x.dtype)
