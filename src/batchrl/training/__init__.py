"""Training: one module per trainer (update(batch) -> named losses), the shared loop, checkpoints and the
train stage (:func:`batchrl.training.train.train`)."""
