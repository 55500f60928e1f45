"""MedP-CLIP pre-training, the application part: shards → batches (``data``), Ray Train loop (``loop``)."""
