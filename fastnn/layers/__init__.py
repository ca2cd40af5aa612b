"""fastnn.layers: each layer one screen of code calling fastnn.kernels."""

from .activations import ReLU, Sigmoid, Tanh
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm
from .pool import Flatten, MaxPool2D

LAYER_TYPES = {cls.__name__: cls for cls in (Dense, Conv2D, MaxPool2D, Flatten, ReLU, Sigmoid,
                                              Tanh, Dropout, BatchNorm)}

__all__ = ["BatchNorm", "Conv2D", "Dense", "Dropout", "Flatten", "LAYER_TYPES", "Layer",
           "MaxPool2D", "ReLU", "Sigmoid", "Tanh"]
