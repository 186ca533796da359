"""Stage-3 QAT of MoTE checkpoints with the Hugging Face Trainer (``mote-convert train``)."""

from mote_convert.train.recipe import TrainRecipe, load_train_recipe
from mote_convert.train.run import TrainResult, train

__all__ = ["TrainRecipe", "TrainResult", "load_train_recipe", "train"]
