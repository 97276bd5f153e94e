"""training: zoo's own optimizers, LR schedules, loss, test metrics, written as any plugin would write them.

Each hook gets a ``register(name, builder, **metadata)``. Builders receive the run's ``TrainConfig`` (``config.lr``,
``config.momentum``, ``config.weight_decay``, ``config.options`` for ``--opt KEY=VALUE``...) and import torch only
when called: zoo loads every plugin for every command, also those that never train.
"""

import zoo


# ------------------------------------------------------------------------------------------------ optimizers


def sgd(params, config):
    import torch

    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def nesterov(params, config):
    import torch

    if not config.momentum:
        raise zoo.ZooError("--optimizer nesterov needs --momentum above 0 (0.9 is usual).")
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=True)


def adamw(params, config):
    import torch

    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


@zoo.hookimpl
def register_optimizers(register):
    register("sgd", sgd, description="SGD with momentum (the seed recipe's).")
    register("nesterov", nesterov, description="SGD with Nesterov momentum (the scratch recipe's).")
    register("adamw", adamw, description="AdamW: decoupled weight decay; --momentum unused.")


# ------------------------------------------------------------------------------------------------- schedules


def factor_schedule(optimizer, config, steps_per_epoch):
    """A linear warm-up over --warmup-epochs, then the shape config.schedule names (zoo.engine.optim.lr_factor)."""
    from zoo.engine.optim import factor_schedule as build  # the engine is imported when a run trains, not before

    return build(optimizer, config, steps_per_epoch)


@zoo.hookimpl
def register_schedules(register):
    # One builder for the four: a linear warm-up over --warmup-epochs, then the shape the name says.
    register("constant", factor_schedule, description="The peak lr throughout (after any warm-up).")
    register("cosine", factor_schedule, description="Cosine from the peak lr to 0.")
    register("onecycle", factor_schedule, description="Warm-up over 30% of the steps (unless given), then cosine.")
    register("step", factor_schedule, description="x0.1 at half and at three quarters of the epochs.")


# ----------------------------------------------------------------------------------------------------- loss


def cross_entropy(config):
    import torch

    return torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


@zoo.hookimpl
def register_losses(register):
    register("cross_entropy", cross_entropy, description="Cross-entropy with the recipe's label smoothing.")


# --------------------------------------------------------------------------------------------------- metrics


def top5_accuracy(y_true, y_pred, probs):
    """How often the true class is among the 5 most probable."""
    return (probs.topk(5, dim=1).indices == y_true.view(-1, 1)).any(1).float().mean().item()


def balanced_accuracy(y_true, y_pred, probs):
    """The mean of the per-class recalls, over the classes present in the split."""
    import torch

    present = torch.unique(y_true)
    return torch.stack([(y_pred[y_true == c] == c).float().mean() for c in present]).mean().item()


def _auroc(scores, positive):
    """The area under the ROC curve of one class (Mann-Whitney U; tied scores share their mean rank)."""
    import torch

    order = torch.argsort(scores)
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # 1-based mean rank of each group of equal scores
    ranks = torch.empty_like(mean_rank[inverse])
    ranks[order] = mean_rank[inverse]
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    return ((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)).item()


def macro_auroc(y_true, y_pred, probs):
    """One-vs-rest AUROC averaged over the classes with both positives and negatives in the split."""
    values = [_auroc(probs[:, c].double(), y_true == c) for c in range(probs.shape[1])
              if 0 < int((y_true == c).sum()) < len(y_true)]
    return sum(values) / len(values) if values else float("nan")


@zoo.hookimpl
def register_metrics(register):
    register("top5_accuracy", top5_accuracy, min_classes=5, description="True class among the 5 most probable.")
    register("balanced_accuracy", balanced_accuracy, description="Mean per-class recall.")
    register("macro_auroc", macro_auroc, description="One-vs-rest AUROC, averaged over the classes.")
