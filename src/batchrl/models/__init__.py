"""Networks: Q-value models over the preprocessed state, built from config blocks; policies over them."""

from batchrl.models.builders import build_network
from batchrl.models.networks import Dueling, FullyConnected
from batchrl.models.policy import effective_mask, masked_argmax, masked_softmax

__all__ = ["Dueling", "FullyConnected", "build_network", "effective_mask", "masked_argmax", "masked_softmax"]
