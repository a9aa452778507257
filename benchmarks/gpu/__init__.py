"""The GPU suite's parts and what runs them (``benchmarks/gpu_suite.py`` is the command).

* :mod:`.harness`: figures, time budgets, and each part in its own process;
* :mod:`.models`: random-initialised full-size models, and random weights
  where the real-weight loaders look for them;
* :mod:`.scoring`, :mod:`.generation`, :mod:`.unlearning`,
  :mod:`.end_to_end`: the four parts;
* :mod:`.report`: the results file and its Markdown table;
* :mod:`.wheels`: the packages the suite needs, carried as wheels to a
  machine that has torch and transformers but no registry.
"""
