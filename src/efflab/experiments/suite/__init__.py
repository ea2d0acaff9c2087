"""The reproduction suite: one module per paper claim, each registered with
:func:`efflab.experiments.register`. Found by the registry without a list: a new module here is
all it takes."""
