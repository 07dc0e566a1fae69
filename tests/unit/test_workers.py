"""`vitbench suite`'s queue (an Optuna study whose trials are the runs) and the launcher's command lines."""

from __future__ import annotations


def test_gpus_resolve_and_a_worker_runs_the_command_without_gpus(monkeypatch):
    from vitbench.launcher import resolve_gpus, without

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert resolve_gpus("2", "cpu") == ["cpu0", "cpu1"]
    assert without(["suite", "a.yaml", "--gpus", "2", "--set", "epochs=1"], "--gpus") == \
        ["suite", "a.yaml", "--set", "epochs=1"]
    assert without(["suite", "a.yaml", "--gpus=all"], "--gpus") == ["suite", "a.yaml"]


def test_workers_take_the_longest_runs_first():
    from vitbench.cells import Cell
    from vitbench.suite import longest_first

    cells = [Cell("sdpa", {"attention": "sdpa"}), Cell("naive", {"attention": "naive", "time_budget": 20}),
             Cell("loop", {"patchify": "loop", "time_budget": 30}), Cell("vectorized", {"attention": "vectorized"})]
    todo = [(c, r) for c in cells for r in range(2)]
    order = [(c.name, r) for c, r in longest_first(todo)]
    assert order == [("loop", 0), ("loop", 1), ("naive", 0), ("naive", 1), ("sdpa", 0), ("sdpa", 1),
                     ("vectorized", 0), ("vectorized", 1)]


def test_the_queue_hands_out_each_run_once_longest_first_and_finds_runs_queued_twice():
    """Two hosts queue the same suite: the second adds nothing; where both queued at the same instant, the
    later copy is recognised when claimed; `ask` beyond the queue makes a spare trial, which is not a run."""
    import optuna

    from vitbench.cells import Cell, Suite
    from vitbench.suite import duplicate, enqueue, key, settled

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    cells = [Cell("sdpa", {"attention": "sdpa"}), Cell("naive", {"attention": "naive", "time_budget": 20})]
    suite = Suite("s", None, 1, cells, sets={"epochs": 1})
    todo = [(c, 0) for c in cells]
    enqueue(study, suite, todo)
    enqueue(study, suite, todo)  # a second host, later: everything is queued already
    assert len(study.trials) == 2
    first = study.ask()
    assert first.user_attrs["suite.cell"] == "naive" and first.user_attrs["suite.sets"] == {"epochs": 1}
    assert not duplicate(study, first)
    study.tell(first, 0.9)
    assert [t.number for t in settled(study, {key("naive", 0, "epochs=1")})] == [first.number]
    # both hosts queued sdpa at once: the copy with the higher number is the duplicate
    study.enqueue_trial({}, user_attrs={**study.trials[1].user_attrs})
    a, b = study.ask(), study.ask()
    assert (duplicate(study, a), duplicate(study, b)) == (False, True)
    spare = study.ask()  # nothing left: Optuna makes a fresh trial, which carries no run
    assert "suite.key" not in spare.user_attrs
