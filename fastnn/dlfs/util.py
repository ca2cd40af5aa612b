"""The book's utilities (common/util.py): im2col/col2im on fastnn's kernels (float32, the same
row and column order as the book's), dataset shuffling, output sizes, curve smoothing."""

import numpy as np

from fastnn import kernels as _k


def smooth_curve(x):
    """A loss curve smoothed by a normalised Kaiser window of 11 points (the book's plot helper)."""
    window_len = 11
    x = np.asarray(x, dtype=np.float64)
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]  # mirror both ends
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


def shuffle_dataset(x, t):
    """(x, t) in one random order, drawn from NumPy's global generator as the book does."""
    permutation = np.random.permutation(x.shape[0])
    return x[permutation], t[permutation]


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """(input + 2*pad - filter) / stride + 1, a float as in the book."""
    return (input_size + 2 * pad - filter_size) / stride + 1


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """(N, C, H, W) -> (N*out_h*out_w, C*filter_h*filter_w), float32, zero padding."""
    return _k.im2col(input_data, filter_h, filter_w, stride, pad)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """The adjoint of im2col: overlapping entries are summed back into an (N, C, H, W) image."""
    return _k.col2im(col, input_shape, filter_h, filter_w, stride, pad)
