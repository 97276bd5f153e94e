"""`zoo tune` against the default recipe on a small real set (BENCHMARKS.md, "Search").

    pip install scikit-learn 'zoo-vision[tune]'
    python bench/tune.py [--set digits] [--trials 12] [--epochs 20] [--size 16]

The set is bench/recipes.py's (scikit-learn's handwritten digits by default, 1,797 scans, 10 classes). One run of
the default recipe (`zoo train tinycnn --image-size 16`: scratch, up to 60 epochs), then `zoo tune` with
``--trials`` trials of up to ``--epochs`` epochs over lr, weight decay and batch size (median pruner, objective
the validation loss). Printed: the default run's and the best trial's test accuracy (the test split chooses
nothing), both wall times, how many trials were pruned. Both in one temporary registry, in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="digits")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--model", default="tinycnn")
    args = parser.parse_args()

    from recipes import make_set
    from typer.testing import CliRunner

    from zoo.cli import app
    from zoo.store import Registry

    cache = Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo")) / "bench-recipes"
    cache.mkdir(parents=True, exist_ok=True)
    folder = make_set(args.set, cache)
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        registry = str(Path(tmp) / "r.db")

        def zoo(*words) -> tuple[str, float]:
            started = time.perf_counter()
            result = runner.invoke(app, ["--registry", registry, *map(str, words)], catch_exceptions=False)
            if result.exit_code:
                raise SystemExit(result.output)
            return result.output, time.perf_counter() - started

        _, default_s = zoo("train", args.model, "--data", folder, "--image-size", args.size, "-q")
        _, tune_s = zoo("tune", args.model, "--data", folder, "--image-size", args.size, "--epochs", args.epochs,
                        "--lr", "1e-3..0.3", "--weight-decay", "1e-5..1e-2", "--batch-size", "32,64",
                        "--trials", args.trials, "--study", "bench", "--sampler-seed", "1", "-q")
        import optuna

        from zoo.tune import open_storage

        with Registry.open(registry) as reg:
            study = optuna.load_study(study_name="bench", storage=open_storage(reg, create=False))
            default = reg.get_run(1)
            best = reg.get_run(study.best_trial.user_attrs["zoo.run"])
            pruned = sum(t.state.name == "PRUNED" for t in study.trials)
            print(f"set {args.set} ({folder}), {args.model} at {args.size} px")
            print(f"default recipe: run {default.id}, {default.epochs_run} epochs, best val loss "
                  f"{default.best_val_loss:.4f}, test accuracy {default.metrics['test_accuracy']:.4f}, "
                  f"{default_s:.0f} s")
            print(f"zoo tune, {args.trials} trials of up to {args.epochs} epochs ({pruned} pruned): best trial "
                  f"{study.best_trial.number} (run {best.id}, {study.best_trial.params}), val loss "
                  f"{study.best_value:.4f}, test accuracy {best.metrics['test_accuracy']:.4f}, {tune_s:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
