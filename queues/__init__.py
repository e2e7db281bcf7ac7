"""The contract between `web` and `workers`: Celery app, queue and task names, architectures, messages."""
