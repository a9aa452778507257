"""cpdm: measure how much text-to-image diffusion models copy artists' work.

The public entry points live in the submodules: ``cpdm.store.workspace`` (open a
workspace), ``cpdm.store.images`` (ingest images), ``cpdm.metric`` and
``cpdm.scoring`` (the CM metric on stored pairs), ``cpdm.rating.assignment`` (who rates what next),
``cpdm.analysis`` (agreement, correlation, calibration).
"""

__version__ = "0.1.0"
