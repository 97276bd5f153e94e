"""Feeding the engine: ``make_pipeline(images, split, image_size, ...)`` gives normalised batches on the device --
random resized crops and flips made in batched tensor form from the in-memory cache (on the GPU when training
there, a background thread ahead of the step), or read from disk by DataLoader workers when the images did not
fit in memory. Validation and test images are prepared once, deterministically (resize + centre crop)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from zoo.data.augment import (AUGMENT_PRESETS, Augment, apply_policy, cpu_resized_crops, crop_boxes,
                              pil_train_transform, resized_crops)
from zoo.data.decode import error_line, open_rgb, pillow_size_warnings_off
from zoo.data.images import ImageSet, Sample
from zoo.data.split import Split
from zoo.data.transform import center_crops, normalise, pil_eval_transform
from zoo.distributed import World
from zoo.errors import LoaderStopped, ZooError
from zoo.preprocess import IMAGENET, Preprocess

if TYPE_CHECKING:
    import torch


def _leave_stop_signals_to_main(worker_id: int) -> None:
    """In a DataLoader worker: Ctrl-C is the main process's to handle (it stops the workers itself), and SIGTERM
    gets its default action back (the worker inherited the session's handler): DataLoader ends stuck workers with
    SIGTERM, and a SIGTERM sent to the whole group (timeout, Slurm, Kubernetes) just ends them, which the session
    records as an interruption, not a failure."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _DiskImages:
    """A torch Dataset over files (the streaming fallback); returns uint8 [3, size, size] and the label."""

    def __init__(self, root: Path, samples: list[Sample], indices: list[int], transform,
                 min_side: Optional[int] = None):
        self.root, self.transform, self.min_side = root, transform, min_side  # min_side: see open_rgb
        self.items = [(samples[i].path, samples[i].label) for i in indices]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        try:
            with pillow_size_warnings_off():  # load_images warned about large images once already
                image = open_rgb(self.root / path, self.min_side)
        except Exception as exc:  # the data folder changed after it was scanned (deleted, unmounted, replaced)
            raise ImageGone(f"Cannot read {self.root / path} while training: {error_line(exc)}. The data folder "
                            f"must stay as it was until the run ends.") from None
        return self.transform(image), label


class ImageGone(ZooError):
    """A streamed image could not be read during training. Raised again in the main process by a DataLoader
    worker with its traceback appended: the message keeps only the original line."""

    def __init__(self, message: str):
        if "Original Traceback" in message:  # torch's ExceptionWrapper: "Caught ImageGone in ... worker ..."
            lines = [line for line in message.splitlines() if line.strip()]
            message = lines[-1].split("ImageGone: ", 1)[-1]
        super().__init__(message)


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead (torch releases the GIL in its kernels,
    so augmentation overlaps the training step). Its exceptions re-raise here; stopping early stops it."""
    import queue
    import threading

    items: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            put((done, exc))
            return
        put((done, None))

    thread = threading.Thread(target=work, name="zoo-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is done:
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class Pipeline:
    """Normalised batches for one image size on one device: ``train_epoch(generator)`` and ``eval_batches``."""

    images: ImageSet
    split: Split
    image_size: int
    batch_size: int
    device: "torch.device"
    workers: int = 0
    channels_last: bool = False
    prefetch: bool = False  # make the next batches in a background thread
    augment: Augment = AUGMENT_PRESETS["seed"]
    prep: Preprocess = IMAGENET  # normalisation and eval transform (the model's own when it declares one)
    _train_x: Any = None  # cached uint8 train squares (device or pinned CPU)
    _train_y: Any = None
    _eval: dict = field(default_factory=dict)
    _train_center: Any = None  # train squares centre-cropped once, for --augment none
    world: World = World()  # under torchrun: this rank's share of each epoch and of val/test

    @property
    def streaming(self) -> bool:
        return self.images.cache is None

    @property
    def train_size(self) -> int:
        """Train images per epoch on this rank (all of them without torchrun)."""
        n = len(self.split.train)
        return len(range(n)[self.world.train_share(n)])

    def batches_per_epoch(self) -> int:
        n = self.train_size
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest > 1 else 0)  # a last batch of one image is dropped (BatchNorm needs two)

    def _finish(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        x = normalise(x, self.prep.mean, self.prep.std)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def setup(self) -> "Pipeline":
        import torch

        if self.streaming:
            return self
        cache = self.images.cache
        labels = torch.tensor([s.label for s in self.images.samples])
        idx = torch.tensor(self.split.train, dtype=torch.long)
        train_x = cache[idx]
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if train_x.numel() < 0.3 * free:  # the whole train set on the GPU: no copies per batch at all
                train_x = train_x.to(self.device)
            else:
                train_x = train_x.pin_memory()
        self._train_x, self._train_y = train_x, labels[idx].to(self.device)
        for part in ("val", "test"):
            pidx = torch.tensor(self.split.part(part), dtype=torch.long)
            self._eval[part] = (center_crops(cache[pidx], self.image_size, prep=self.prep), labels[pidx])
        return self

    def train_epoch(self, generator: "torch.Generator") -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        """One epoch of augmented, normalised batches on the device, in a seeded random order. In memory, the
        next batches are made by a background thread while the model trains on the current one."""
        if self.streaming:
            return self._stream(self._streamed_train(generator), pil_train_transform(self.image_size, self.augment),
                                True, generator)
        if self.prefetch:
            return prefetch(self._augmented(generator), depth=2)
        return self._augmented(generator)

    def _augmented(self, generator: "torch.Generator") -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        import torch

        n, bs = len(self.split.train), self.batch_size
        order = torch.randperm(n, generator=generator)
        side = self._train_x.shape[-1]
        aug = self.augment
        if aug.scale is None:  # no random crop: the eval transform's centre crop, made once
            if self._train_center is None:
                self._train_center = center_crops(self._train_x.cpu(), self.image_size,
                                                  prep=self.prep).to(self._train_x.device)
            all_boxes = None
        else:  # the epoch's crops and flips, drawn at once
            all_boxes = crop_boxes(n, side, side, generator, aug.scale, aug.ratio)
        all_flips = (torch.rand(n, generator=generator) < 0.5) & aug.hflip
        if self.world.size > 1:  # this rank's share: the same permutation and draws on every rank, disjoint slices
            mine = self.world.train_share(n)
            order, all_flips = order[mine], all_flips[mine]
            all_boxes = None if all_boxes is None else all_boxes[mine]
        for b in range(self.batches_per_epoch()):
            sel = order[b * bs:(b + 1) * bs]
            flips = all_flips[b * bs:(b + 1) * bs]
            if all_boxes is None:
                x = self._train_center[sel.to(self._train_center.device)].to(self.device)
                if flips.any():
                    f = flips.nonzero().squeeze(1).to(x.device)
                    x[f] = x[f].flip(-1)
                yield self._finish(apply_policy(x, aug.policy)), self._train_y[sel.to(self._train_y.device)]
                continue
            boxes = all_boxes[b * bs:(b + 1) * bs]
            if self.device.type == "cpu":  # crop and flip straight from the cache: no gathered copy
                x = cpu_resized_crops(self._train_x, sel, boxes, self.image_size, flips)
            else:
                if self._train_x.device == self.device:  # the whole train set lives on the GPU
                    x = self._train_x[sel.to(self.device, non_blocking=True)]
                elif self.device.type == "cuda":
                    x = self._train_x[sel].pin_memory().to(self.device, non_blocking=True)
                else:  # mps and other accelerators
                    x = self._train_x[sel].to(self.device)
                x = resized_crops(x, boxes, self.image_size)
                if flips.any():
                    f = flips.nonzero().squeeze(1).to(x.device)
                    x[f] = x[f].flip(-1)
            y = self._train_y[sel.to(self._train_y.device)]
            yield self._finish(apply_policy(x, aug.policy)), y

    def _streamed_train(self, generator: "torch.Generator") -> list[int]:
        """The train images streamed this epoch: all (the loader shuffles them), or under torchrun this rank's share
        of a permutation drawn from the epoch's generator."""
        if self.world.size == 1:
            return self.split.train
        import torch

        train = self.split.train
        order = torch.randperm(len(train), generator=generator)[self.world.train_share(len(train))]
        return [train[i] for i in order.tolist()]

    def eval_batches(self, part: str, batch_size: Optional[int] = None):
        """Deterministic batches (resize + centre crop) of 'val' or 'test', in the split's order (under torchrun,
        every world-size-th image from this rank's)."""
        bs = batch_size or self.batch_size * 2
        share = self.world.eval_share(len(self.split.part(part)))
        if self.streaming:
            yield from self._stream(self.split.part(part)[share], pil_eval_transform(self.image_size, self.prep), False,
                                    None, bs)
            return
        x_all, y_all = self._eval[part]
        x_all, y_all = x_all[share], y_all[share]
        for i in range(0, len(y_all), bs):
            x = x_all[i:i + bs]
            y = y_all[i:i + bs]
            if self.device.type != "cpu":
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            yield self._finish(x), y

    def _stream(self, indices, transform, shuffle, generator, batch_size=None):
        import torch
        from torch.utils.data import DataLoader

        # random crops keep down to 8% of the area, so training reads images at 4x the size; eval needs size/0.875
        min_side = 4 * self.image_size if shuffle else math.ceil(self.image_size / self.prep.crop_fraction)
        dataset = _DiskImages(self.images.root, self.images.samples, indices, transform, min_side)
        if generator is not None:  # seed the workers' own augmentation from the epoch's generator
            seed = int(torch.randint(2**62, (1,), generator=generator))
            generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=batch_size or self.batch_size, shuffle=shuffle, generator=generator,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            drop_last=False, persistent_workers=False, worker_init_fn=_leave_stop_signals_to_main,
                            prefetch_factor=4 if self.workers else None)
        batches = iter(loader)
        while True:
            try:
                x, y = next(batches)
            except StopIteration:
                return
            except (RuntimeError, ConnectionError, EOFError) as exc:
                # a worker died (stopped by a signal sent to the group, or a real failure): torch says so with a
                # RuntimeError, or the batch it had queued can no longer be fetched from it (connection reset)
                signum = _stopped_worker(batches, wait=not isinstance(exc, RuntimeError))
                if signum is None:
                    raise
                raise LoaderStopped(signum) from exc
            if shuffle and len(y) < 2:
                continue
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            yield self._finish(x), y


def _stopped_worker(batches: Any, wait: bool = False) -> Optional[int]:
    """The stop signal (SIGTERM, SIGINT) that ended one of a DataLoader iterator's worker processes, read from
    their exit codes (-signum); None when none was stopped that way. ``wait``: the worker may still be ending
    (its connection broke first), so each is given up to a second to exit."""
    import signal

    for worker in getattr(batches, "_workers", None) or ():
        if wait and getattr(worker, "exitcode", 0) is None:
            worker.join(timeout=1.0)
        code = getattr(worker, "exitcode", None)
        if code is not None and -code in (signal.SIGTERM, signal.SIGINT):
            return -code
    return None


def make_pipeline(images: ImageSet, split: Split, *, image_size: int, batch_size: int, device,
                  workers: Optional[int] = None, channels_last: Optional[bool] = None,
                  augment: Optional[Augment] = None, world: Optional[World] = None,
                  prep: Preprocess = IMAGENET) -> Pipeline:
    """``world``: under torchrun, the rank whose share of the data the pipeline yields (zoo.distributed);
    ``prep``: the model's normalisation and eval transform."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if workers is None:
        workers = 0 if images.cache is not None else min(8, os.cpu_count() or 1)
    if channels_last is None:  # the engine keeps models channels_last on CUDA and CPU
        channels_last = device.type in ("cuda", "cpu")
    # A background thread overlaps augmentation with the step on GPUs; on a CPU it only competes for the cores.
    return Pipeline(images, split, image_size, batch_size, device, workers, channels_last,
                    prefetch=device.type == "cuda", augment=augment or AUGMENT_PRESETS["seed"],
                    prep=prep, world=world or World()).setup()
