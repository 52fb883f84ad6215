"""Run the charrnn command line in a process whose model drifts from the others' after step N.

    mpiexec -n 1 charrnn train ... : -n 1 python tests/drift_after_step.py N train ...

After the N-th training step this process adds 0.001 to the first output bias, as arithmetic that
differs between the machines of a job (another numpy, BLAS or processor) would make it differ from the
others, slowly and silently. The job must notice at its next comparison of the models
(training/distributed.py) and stop with exit 1, keeping the last good checkpoint (test_distributed).
"""

from __future__ import annotations

import sys


def _install(after_step: int) -> None:
    from charrnn.training import loop

    train_step = loop.train_step

    def drifting(trainee, streams, config):  # loop.train_steps looks train_step up in its module at each step
        result = train_step(trainee, streams, config)
        if result.step == after_step:
            trainee.params["b_y"][0] += 0.001
        return result

    loop.train_step = drifting


if __name__ == "__main__":
    _install(int(sys.argv[1]))
    from charrnn.cli import main

    main(args=sys.argv[2:], prog_name="charrnn")
