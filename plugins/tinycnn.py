"""tinycnn: a small CNN trained from scratch; it learns the `demo` dataset in a few CPU minutes.

This is the template for a zoo plugin. A plugin is a module with one or more hook functions marked
``@zoo.hookimpl``; ``register_models`` hands each architecture to zoo with a builder and some metadata.
Copy this file into a directory listed in ZOO_PLUGINS_DIR (or an installed package with an entry point in
the group ``zoo``), rename the model, and change the layers.

Rule: do not import torch at the top of a plugin module. zoo loads every plugin when it starts, also for
commands that never train (``zoo list-runs``), so heavy imports belong inside the builder.
"""

import zoo


def build_tinycnn(*, num_classes: int, pretrained: bool = False):
    """Return a fresh ``nn.Module`` mapping [B, 3, H, W] images to [B, num_classes] logits.

    zoo calls builders with keyword arguments only. ``pretrained`` is always False here because we registered
    ``pretrained=False`` below (zoo refuses ``--pretrained`` for such models before calling the builder).
    """
    from torch import nn  # imported here, when a model is actually built

    def block(c_in: int, c_out: int) -> nn.Sequential:
        # 3x3 convolution -> batch norm -> ReLU -> 2x2 max pool: halves the resolution, widens the channels.
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 32),  # 64 px -> 32 px
        block(32, 64),  # -> 16 px
        block(64, 128),  # -> 8 px
        nn.AdaptiveAvgPool2d(1),  # any input size (>= 16 px) ends as one 128-vector per image
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(128, num_classes),  # the classifier: the only layer whose shape depends on num_classes
    )


@zoo.hookimpl
def register_models(register):
    """Tell zoo about the architecture. Every keyword after the builder is optional metadata."""
    register(
        "tinycnn",
        build_tinycnn,
        family="tinycnn",
        description="3-block CNN (conv-BN-ReLU-pool) trained from scratch; seconds per epoch on a CPU",
        min_size=16,  # three 2x poolings need at least 16 px
        default_size=64,  # zoo trains at this size unless --image-size says otherwise
        pretrained=False,  # no published weights
        params=222_472,  # parameter count with 1000 classes (shown by `zoo models` without building)
    )
