"""Stable Diffusion itself, below the wings that use it: generation and unlearning both build on this one.

* :mod:`cpdm.diffusion.settings`: the paper's generation settings, samplers and base-model names (no torch).
* :mod:`cpdm.diffusion.pipeline`: loading a base model (real weights from caches, or the tiny random twin),
  a variant's pipeline, and running it on one prompt.
* :mod:`cpdm.diffusion.artifacts`: the artifact format (safetensors of replaced UNet parameters + JSON):
  writing, checking and applying one.
* :mod:`cpdm.diffusion.variants`: how a variant is put onto its base pipeline (artifact or inference-time
  guidance), so generation never imports the unlearning wing.
"""
