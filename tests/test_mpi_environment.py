"""Reading an MPI launch from the environment: who started the process, and how many threads each rank gets."""

from __future__ import annotations

from charrnn.mpi_environment import launched_by_mpi, ranks_on_this_node, thread_settings, threads_per_rank


def test_a_process_is_launched_by_mpi_when_a_launcher_set_its_rank():
    assert not launched_by_mpi({})
    assert not launched_by_mpi({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"})  # a batch script is not a rank
    assert launched_by_mpi({"PMI_RANK": "0", "PMI_SIZE": "2"})  # MPICH's and Intel MPI's mpiexec
    assert launched_by_mpi({"OMPI_COMM_WORLD_RANK": "3"})  # Open MPI's mpirun
    assert launched_by_mpi({"PMIX_RANK": "1"})  # srun --mpi=pmix, Open MPI 5
    assert not launched_by_mpi({"PMI_RANK": "0", "CHARRNN_MPI": "0"})  # told to train alone


def test_the_ranks_on_a_node_come_from_whichever_launcher_started_them():
    assert ranks_on_this_node({}) is None
    assert ranks_on_this_node({"MPI_LOCALNRANKS": "2"}) == 2
    assert ranks_on_this_node({"OMPI_COMM_WORLD_LOCAL_SIZE": "8"}) == 8
    # Slurm: 2 tasks on each of the first three nodes, then 1; this is node 3 (the fourth).
    assert ranks_on_this_node({"SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3"}) == 1
    assert ranks_on_this_node({"SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "1"}) == 2
    assert ranks_on_this_node({"SLURM_STEP_TASKS_PER_NODE": "garbage", "SLURM_NODEID": "0"}) is None
    assert ranks_on_this_node({"MPI_LOCALNRANKS": "0"}) is None


def test_each_rank_gets_its_share_of_the_cores():
    # (cores the process may use, cores of the machine)
    assert threads_per_rank({"MPI_LOCALNRANKS": "2"}, cores=(2, 2)) == 1
    assert threads_per_rank({"MPI_LOCALNRANKS": "2"}, cores=(16, 16)) == 8
    assert threads_per_rank({"MPI_LOCALNRANKS": "3"}, cores=(16, 16)) == 5
    assert threads_per_rank({"MPI_LOCALNRANKS": "32"}, cores=(16, 16)) == 1  # more ranks than cores: one each
    assert threads_per_rank({"MPI_LOCALNRANKS": "4"}, cores=(4, 16)) == 4  # bound by the launcher: its cores
    assert threads_per_rank({}, cores=(16, 16)) == 16


def test_thread_variables_are_set_only_under_a_launcher_and_never_over_the_users():
    assert thread_settings({"MPI_LOCALNRANKS": "2"}) == {}  # no rank variable: not an MPI process
    settings = thread_settings({"PMI_RANK": "0", "MPI_LOCALNRANKS": "1", "OPENBLAS_NUM_THREADS": "3"})
    assert "OPENBLAS_NUM_THREADS" not in settings
    assert set(settings) == {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"}
    assert len(set(settings.values())) == 1 and int(next(iter(settings.values()))) >= 1
