"""The learning-rate schedule: reductions on a plateau before stopping early, and the time-budget anneal.

Validation losses come from a scorer the test chooses and time from a clock it drives, so nothing here
depends on a processor's rounding or a machine's speed.
"""

from __future__ import annotations

import math

import pytest

from charrnn.checkpoints import checkpoint
from charrnn.config import DataConfig, ModelConfig, ScheduleConfig, TrainConfig
from charrnn.inference.scoring import Score
from charrnn.model import optim
from charrnn.training import runner
from charrnn.training.loop import StepResult
from charrnn.training.session import TrainRequest, open_session


def test_the_anneal_keeps_the_rate_for_half_the_budget_then_follows_half_a_cosine_to_a_tenth():
    assert optim.anneal_factor(0.0) == optim.anneal_factor(0.5) == 1.0
    assert optim.anneal_factor(0.75) == pytest.approx(0.55)
    assert optim.anneal_factor(1.0) == pytest.approx(0.1)
    values = [optim.anneal_factor(f / 100) for f in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_the_rate_multiplies_decay_reductions_and_anneal():
    config = TrainConfig(max_steps=1, learning_rate=0.02, lr_decay=0.5, lr_decay_after=1)
    assert optim.learning_rate_at(config, 0) == 0.02
    assert optim.learning_rate_at(config, 3, reductions=2, anneal_fraction=1.0) == pytest.approx(0.02 * 0.25 * 0.25 * 0.1)


def _session(tmp_path, corpus, schedule=None, **train):
    request = TrainRequest(
        corpus_paths=(str(corpus),),
        model=ModelConfig(hidden_size=8),
        train=TrainConfig(batch_size=2, seq_length=5, rng_seed=1, learning_rate=0.04, **{"max_steps": 200, **train}),
        data=DataConfig(cache_dir=str(tmp_path / "cache")),
        schedule=ScheduleConfig(checkpoint_dir=str(tmp_path / "ck"), eval_every=10, patience=2, sample_every=0,
                                checkpoint_every=0, **(schedule or {})),
    )
    return open_session(request)


def _scorer(losses):
    """A stand-in for scoring.score_ids that returns ``losses`` in turn (nats per token)."""
    remaining = iter(losses)

    def score(*args, **kwargs):
        return Score(10, 10, 10 * next(remaining))

    return score


def test_a_plateau_halves_the_rate_up_to_lr_reductions_times_then_stops(tmp_path, small_corpus, monkeypatch):
    # Validations every 10 steps: a best at step 10, then never better.
    monkeypatch.setattr(runner.scoring, "score_ids", _scorer([5.0] + [6.0] * 50))
    session = _session(tmp_path, small_corpus, lr_reductions=2)
    try:
        events = list(runner.run_session(session))
    finally:
        session.close()
    reduced = [e for e in events if isinstance(e, runner.RateReduced)]
    assert [(e.step, e.reductions, e.max_reductions) for e in reduced] == [(30, 1, 2), (50, 2, 2)]
    assert [e.learning_rate for e in reduced] == pytest.approx([0.02, 0.01])
    rates = {e.step: e.learning_rate for e in events if isinstance(e, StepResult)}
    assert rates[30] == pytest.approx(0.04) and rates[31] == pytest.approx(0.02) and rates[51] == pytest.approx(0.01)
    finished = events[-1]
    assert finished.stopped_early and finished.steps == 70 and finished.lr_reductions == 2
    saved = checkpoint.load(str(tmp_path / "ck" / "latest.npz"))
    assert saved.progress.lr_reductions == 2


def test_a_resumed_run_keeps_its_reductions_and_an_explicit_rate_starts_over(tmp_path, small_corpus, monkeypatch):
    monkeypatch.setattr(runner.scoring, "score_ids", _scorer([5.0] + [6.0] * 50))
    session = _session(tmp_path, small_corpus, lr_reductions=1, max_steps=40)
    try:
        list(runner.run_session(session))
    finally:
        session.close()
    path = str(tmp_path / "ck" / "latest.npz")
    assert checkpoint.load(path).progress.lr_reductions == 1
    for explicit, expected in ((frozenset(), 0.02), (frozenset({"learning_rate"}), 0.04)):
        request = TrainRequest(corpus_paths=(), train=TrainConfig(max_steps=41, learning_rate=0.04), resume=path,
                               data=DataConfig(cache_dir=str(tmp_path / "cache")), explicit=explicit | {"max_steps"},
                               schedule=ScheduleConfig(checkpoint_dir=str(tmp_path / "ck"), sample_every=0))
        resumed = open_session(request)
        try:
            step = next(e for e in runner.run_session(resumed) if isinstance(e, StepResult))
        finally:
            resumed.close()
        assert step.learning_rate == pytest.approx(expected)


class Clock:
    """A clock that moves ``tick`` seconds every time it is read."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_with_a_time_budget_the_rate_anneals_with_the_share_of_the_budget_used(tmp_path, small_corpus, monkeypatch):
    monkeypatch.setattr(runner.scoring, "score_ids", _scorer([5.0 - i / 100 for i in range(100)]))
    session = _session(tmp_path, small_corpus, max_steps=10_000, schedule={"max_seconds": 100.0})
    try:
        events = list(runner.run_session(session, clock=Clock(0.25)))
    finally:
        session.close()
    steps = [e for e in events if isinstance(e, StepResult)]
    finished = events[-1]
    assert finished.out_of_time and not finished.stopped_early
    assert steps[0].learning_rate == 0.04 and steps[-1].learning_rate == pytest.approx(0.004, rel=0.01)
    assert all(a.learning_rate >= b.learning_rate for a, b in zip(steps, steps[1:]))
    # Half-way through the budget the rate is still whole; three quarters through it is 55%.
    fractions = [checkpoint.load(str(tmp_path / "ck" / "latest.npz")).progress.anneal_fraction]
    assert fractions == [1.0]
    without = _session(tmp_path / "off", small_corpus, max_steps=30, anneal=False, schedule={"max_seconds": 100.0})
    try:
        rates = {e.learning_rate for e in runner.run_session(without, clock=Clock(1.0)) if isinstance(e, StepResult)}
    finally:
        without.close()
    assert rates == {0.04}


def test_a_resumed_budget_continues_the_anneal_from_where_the_checkpoint_left_it(tmp_path, small_corpus, monkeypatch):
    monkeypatch.setattr(runner.scoring, "score_ids", _scorer([5.0 - i / 100 for i in range(100)]))
    session = _session(tmp_path, small_corpus, max_steps=10_000, schedule={"max_seconds": 100.0})
    session.trainee.progress.anneal_fraction = 0.0
    try:
        # Stopped (as by a signal) once 75% of the budget is used.
        clock = Clock(0.25)
        list(runner.run_session(session, should_stop=lambda: clock.now >= 75.0, clock=clock))
    finally:
        session.close()
    path = str(tmp_path / "ck" / "latest.npz")
    left = checkpoint.load(path).progress.anneal_fraction
    assert 0.75 <= left < 0.76
    request = TrainRequest(corpus_paths=(), train=TrainConfig(max_steps=10_000), resume=path,
                           data=DataConfig(cache_dir=str(tmp_path / "cache")), explicit=frozenset({"max_steps"}),
                           schedule=ScheduleConfig(checkpoint_dir=str(tmp_path / "ck"), sample_every=0, eval_every=0,
                                                   max_seconds=25.0))
    resumed = open_session(request)
    try:
        steps = [e for e in runner.run_session(resumed, clock=Clock(0.25)) if isinstance(e, StepResult)]
    finally:
        resumed.close()
    # It starts at the rate the first run had reached, and its 25 s take the anneal to its end.
    assert steps[0].learning_rate == pytest.approx(0.04 * optim.anneal_factor(left))
    assert checkpoint.load(path).progress.anneal_fraction == 1.0
    assert math.isclose(steps[-1].learning_rate, 0.004, rel_tol=0.02)
