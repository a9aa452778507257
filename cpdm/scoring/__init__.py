"""Scoring pairs with the CM metric: features and their encoding, the per-image cache, the engine, precision,
and a torch-free reader of stored scores."""
