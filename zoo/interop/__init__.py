"""Ways in from, and out to, other trackers (MLflow, TensorBoard); each needs its optional extra."""
