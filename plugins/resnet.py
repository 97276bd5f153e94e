"""Built-in plugin: the ResNet family (He et al. 2015) from torchvision, 18 to 152 layers."""

from __future__ import annotations

import zoo
from zoo_builtin_plugins._tv import Arch, make_builder

# Parameter counts and weights from torchvision's weights metadata (checked by tests/test_plugins.py); min_size
# 32, the output stride (torchvision says 1: padding lets a tiny image through, but the deep layers see only padding).
RESNETS = (
    Arch("resnet18", "resnet", 11_689_512, 32, 224, "IMAGENET1K_V1", "ResNet-18, ImageNet top-1 69.8%"),
    Arch("resnet34", "resnet", 21_797_672, 32, 224, "IMAGENET1K_V1", "ResNet-34, ImageNet top-1 73.3%"),
    Arch("resnet50", "resnet", 25_557_032, 32, 224, "IMAGENET1K_V2", "ResNet-50, ImageNet top-1 80.9%"),
    Arch("resnet101", "resnet", 44_549_160, 32, 224, "IMAGENET1K_V2", "ResNet-101, ImageNet top-1 81.9%"),
    Arch("resnet152", "resnet", 60_192_808, 32, 224, "IMAGENET1K_V2", "ResNet-152, ImageNet top-1 82.3%"),
)


@zoo.hookimpl
def register_models(register):
    for arch in RESNETS:
        arch.register(register, make_builder(arch))
