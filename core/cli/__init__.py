"""The ``anyformer`` command line: the task registry (by import path, so no domain is imported
before it is used), the Lightning entry point and the cross-domain tools (attention figures)."""
