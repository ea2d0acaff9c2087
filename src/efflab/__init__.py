"""efflab: efficient and well-understood deep learning, with one-command paper reproductions.

Layers, lowest first (a module only imports from its own layer or lower ones):

1. ``efflab.attention``, ``efflab.init``, ``efflab.theory``: math on tensors.
2. ``efflab.models``: networks built by name through one registry.
3. ``efflab.data``, ``efflab.train``, ``efflab.measure``: data sets, training loops, cost.
4. ``efflab.experiments``: one module per reproduced claim.
5. ``efflab.report``, ``efflab.cli``: the HTML report and the command line.

``efflab.io`` (atomic writes) and ``efflab.progress`` (progress bars) sit below all of them.
"""

__version__ = "0.2.0"
