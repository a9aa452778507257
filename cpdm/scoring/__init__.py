"""Scoring pairs with the CM metric: features and their encoding, the per-image cache, the engine, precision,
and a torch-free reader of stored scores."""

# What `cpdm score` and a score job use unless told otherwise (torch-free, for the command line and the app).
DEFAULT_BATCH_SIZE = 16
SCORING_PRECISIONS = ("auto", "reduced", "fp32")
DEFAULT_SCORING_PRECISION = "auto"
