"""Built-in plugin: AlexNet (torchvision). A complete architecture plugin is this short."""

from __future__ import annotations

import zoo
from zoo_builtin_plugins._tv import Arch, make_builder

ALEXNET = Arch("alexnet", "alexnet", params=61_100_840, min_size=63, default_size=224, weights="IMAGENET1K_V1",
               description="AlexNet (Krizhevsky et al. 2012), ImageNet top-1 56.5%")


@zoo.hookimpl
def register_models(register):
    ALEXNET.register(register, make_builder(ALEXNET))
