"""Diffusion pipelines that turn a variant and a prompt into images."""
