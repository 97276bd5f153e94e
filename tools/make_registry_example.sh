#!/usr/bin/env bash
# Regenerates registry.db.example: the seed experiment (AlexNet, ResNet-18/34/50) plus tinycnn, trained by zoo
# itself on the generated `demo` dataset with the seed's settings (SGD lr 0.001, momentum 0.9, patience 7,
# seed 42, split 8:1:1) at 64 px so it finishes on a CPU. Differences from the seed, forced by this machine:
# no ImageNet weights (nothing can be downloaded here: --no-pretrained) and at most $EPOCHS epochs.
# Checkpoints go to a temporary folder and are not kept: the example is for list-runs / show / compare / plot.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-15}
out=registry.db.example
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ZOO_ARTIFACTS="$tmp/artifacts" zoo --registry "$tmp/example.db" train tinycnn alexnet resnet18 resnet34 resnet50 \
    --data demo --image-size 64 --no-pretrained --recipe seed --epochs "$EPOCHS" --batch-size 32 \
    --lr 0.001 --momentum 0.9 --patience 7 --seed 42 --split 8:1:1 --tag example=seed-experiment
# One file, out of WAL mode, so read-only commands on a fresh clone create nothing beside it.
python3 -c "from zoo.store import Registry; r = Registry.open('$tmp/example.db'); r.compact(); r.close()"
mv "$tmp/example.db" "$out"
zoo --registry "$out" compare --metric accuracy
