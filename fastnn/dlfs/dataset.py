"""`load_mnist` of the book's dataset/mnist.py, served by fastnn's MNIST loader (no pickle, no
download into the package directory). Replace `from dataset.mnist import load_mnist` by
`from fastnn.dlfs.dataset import load_mnist`.

The arrays have the book's forms: images (N, 784), or (N, 1, 28, 28) with flatten=False, float32
in [0, 1] when normalize (else uint8 0..255); labels uint8 class indices, or one-hot rows (float32
here, float64 in the book) with one_hot_label=True.
"""

import numpy as np

from fastnn import datasets as _datasets


def _change_one_hot_label(X, num_classes=10):
    T = np.zeros((X.size, num_classes), dtype=np.float32)
    T[np.arange(X.size), X] = 1
    return T


def to_book_form(arrays, normalize=True, flatten=True, one_hot_label=False):
    """((x_train, t_train), (x_test, t_test)) of fastnn.datasets (float32 0..255 images, int
    labels) in the forms the book's load_mnist returns."""
    (x_train, y_train), (x_test, y_test) = arrays
    out = []
    for x, y in ((x_train, y_train), (x_test, y_test)):
        n = x.shape[0]
        x = x.reshape(n, 784) if flatten else x.reshape(n, 1, 28, 28)
        x = (x / np.float32(255.0)).astype(np.float32) if normalize else x.astype(np.uint8)
        t = np.asarray(y).astype(np.uint8)
        out.append((x, _change_one_hot_label(t) if one_hot_label else t))
    return tuple(out)


def load_mnist(normalize=True, flatten=True, one_hot_label=False, *, path=None, small=False):
    """((x_train, t_train), (x_test, t_test)) as the book's loader returns them.

    The file is found as fastnn.datasets.mnist finds it: `path` (a file or directory), else
    $FASTNN_DATA_DIR/mnist.npz, else fastnn's cache (downloaded once, checksum-verified).
    small=True serves the 6000/1000 subset shipped inside fastnn instead (offline).
    """
    if small:
        arrays = _datasets.mnist_small(normalize=False, flatten=True)
    else:
        arrays = _datasets.mnist(path, normalize=False, flatten=True)
    return to_book_form(arrays, normalize, flatten, one_hot_label)
