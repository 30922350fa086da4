"""SlideSparse: (L-2):L structured sparsity on 2:4 Sparse Tensor Cores, measured end to end.

Importing this package never initializes CUDA; GPU work starts only inside workers.
"""

__version__ = "0.1.0"
