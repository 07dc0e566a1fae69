"""`vitbench suite --gpus N`: one worker process per GPU, here N CPU processes."""

from __future__ import annotations


def test_the_workers_start_before_torch_is_imported_on_a_guess_checked_after(monkeypatch):
    """The CLI starts the workers on ``likely_gpus`` (no torch import), then checks it against
    ``resolve_gpus``: they agree where the guess can be made, and 'all' or one GPU make no guess."""
    from vitbench.workers import likely_gpus, resolve_gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert likely_gpus("2", "cpu") == resolve_gpus("2", "cpu") == ["cpu0", "cpu1"]
    assert likely_gpus("all", None) is None and likely_gpus("1", None) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert likely_gpus("2", None) == ["3", "5"] and likely_gpus("3", None) is None



def test_workers_take_the_longest_runs_first():
    from vitbench.cells import Cell
    from vitbench.suite import longest_first

    cells = [Cell("sdpa", {"attention": "sdpa"}), Cell("naive", {"attention": "naive", "time_budget": 20}),
             Cell("loop", {"patchify": "loop", "time_budget": 30}), Cell("vectorized", {"attention": "vectorized"})]
    todo = [(c, r) for c in cells for r in range(2)]
    order = [(c.name, r) for c, r in longest_first(todo)]
    assert order == [("loop", 0), ("loop", 1), ("naive", 0), ("naive", 1), ("sdpa", 0), ("sdpa", 1),
                     ("vectorized", 0), ("vectorized", 1)]

