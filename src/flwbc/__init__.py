"""flwbc: federated learning under model poisoning, with the FL-WBC client-side defense."""

__version__ = "0.1.0"
