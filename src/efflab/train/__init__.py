"""Training: one loop for mini-batch SGD and exact full-batch gradient descent, on one process
or many (Geiping et al., "Stochastic Training is Not Necessary for Generalization", ICLR 2022).

``train(model, (x, y), TrainConfig(...))`` runs either regime; ``full_batch_gradient`` is the
exact gradient of the mean loss over a data set, accumulated over micro-batches.
"""

from efflab.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from efflab.train.config import TrainConfig
from efflab.train.distributed import init_distributed, rank_and_world, shard_bounds
from efflab.train.gradient import (
    accumulate_gradient,
    full_batch_gradient,
    full_batch_gradient_reference,
    regularized_gradient_reference,
)
from efflab.train.loop import TrainResult, evaluate, make_optimizer, total_steps, train
from efflab.train.schedule import learning_rate

__all__ = [
    "CheckpointError", "TrainConfig", "TrainResult", "accumulate_gradient", "evaluate",
    "full_batch_gradient", "full_batch_gradient_reference", "init_distributed",
    "learning_rate", "load_checkpoint", "make_optimizer", "rank_and_world",
    "regularized_gradient_reference", "save_checkpoint", "shard_bounds", "total_steps", "train",
]
