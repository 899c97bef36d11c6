"""Reports of benchmark runs.

``sections`` (the section model and rows-to-frame helpers, a leaf), ``build`` (render a run's report),
``compare`` (regression gate), ``figures`` (plots that keep their numbers), and one module per family's sections
(``batch_configs``, ``size_factors``). Import the module you need: this package imports none of them, so loading
one does not load the plotting stack of another.
"""
