"""Bringing anchors (and later prompts) into a workspace."""
