"""The network and its training math: numpy ops, cells, the model, optimizers, and the speed machinery
(reused buffers and threads, the optional compiled kernels) passed into them."""
