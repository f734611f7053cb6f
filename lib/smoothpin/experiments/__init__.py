"""Experiments built on smoothpin (run as modules, e.g. ``python -m smoothpin.experiments.smooth_vs_pin``).

Not re-exported by ``import smoothpin``: chapters import them explicitly,
``from smoothpin.experiments import smooth_vs_pin``.
"""
