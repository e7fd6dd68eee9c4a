"""Training plumbing every task shares: the LightningModule base (optimizer groups, schedule,
checkpoint contents), the classification task, callbacks, logging, run records and crash-safe writes."""
