"""Compiled twins of charrnn's hot loops, for the optional ``fast`` extra (numba).

The modules mirror the numpy ones they stand in for: cells.py (model/cells.py), ops.py (the
embedding gradient and the softmax of model/ops.py), optim.py (model/optim.py), with arithmetic.py (the
compile options and vectorisable float32 tanh and exp) and parallel.py (products and recurrences over
two halves of the batch at once) under them.

Each function here has the signature and the meaning of a numpy function it stands in for, which
stays the readable reference and the twin a test holds it equal to:

    rnn/lstm/gru_forward, _backward   cells.py's cells: the GEMM of each step stays on BLAS (numpy's
                                      matmul), and everything elementwise around it is one compiled
                                      pass per step instead of a dozen numpy calls
    matmul                            np.matmul for the model's large products, in two halves at once
    embedding_backward                ops.embedding_backward: the rows of each distinct id summed in
                                      one pass
    softmax_cross_entropy             ops.softmax_cross_entropy: bias, softmax, loss and gradient in
                                      one pass per row block
    cross_entropy_per_token           ops.cross_entropy_per_token (evaluation)
    update                            optim.update: clip and Adagrad (dense or sparse rows), RMSProp
                                      or Adam in one pass per block

backend.py imports this package only when the numba backend is asked for (or "auto" finds numba).

The loop over time steps stays in Python: per step it costs a matmul call and one compiled call
(about 2 µs together, against 150 µs for a GRU step's GEMM and 16 µs for its fused pass at B 32, H 256),
so compiling the loop itself, with BLAS called from numba (which needs scipy), would gain a few per
cent at most. The recurrences run over two halves of the batch at once (parallel.py).

Transcendentals: numba calls the C library's scalar tanhf and expf, which no compiler vectorises, so
for float32 this module carries its own (a rational tanh as Eigen uses, within 5 ulp, and Cephes' expf,
within 1 ulp), written as plain arithmetic that the compiler turns into SIMD code. float64 uses the
exact scalar functions.

Subnormals: like the numpy code, the kernels never produce a subnormal float where training would
otherwise make them (x86 processors compute with one in microcode, on some models a hundred times
slower): the softmax floors logits EXP_RANGE below their row's maximum, and the optimizers flush a
square, or an average decaying towards zero, that falls below the smallest normal float, which is
what a processor set to flush subnormals would do to it.

Compiled code is cached on disk by numba beside these files (``__pycache__``), or, where that folder is
read-only, in the user's cache folder (``~/.cache/numba``), or in ``NUMBA_CACHE_DIR`` if that is set;
with none of them writable the kernels are compiled afresh in every process.
"""

