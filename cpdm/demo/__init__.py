"""The offline demo: procedural images, the demo workspace build and simulated raters."""
