"""Elementwise activations (on flat 1-D arrays) and the row softmax (on 2-D arrays)."""

import numpy as np


def relu(x, y):
    np.maximum(x, 0, out=y)


def relu_backward(dy, y, dx):
    np.multiply(dy, y > 0, out=dx)


def sigmoid(x, y):
    # Stable for every finite x: exp only ever sees -|x|, so it never overflows.
    e = np.exp(-np.abs(x))
    y[...] = np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(dy, y, dx):
    dx[...] = dy * y * (1 - y)


def tanh(x, y):
    np.tanh(x, out=y)


def tanh_backward(dy, y, dx):
    dx[...] = dy * (1 - y * y)


def softmax(x, p):
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    p[...] = e / e.sum(axis=1, keepdims=True)
