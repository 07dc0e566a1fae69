"""Nothing lost, nothing leaked: corrupt checkpoints, a full disk, first commands racing on a new store, paths
that reach outside where they should, and bad files -- each a one-line error, nothing half-written.
(A server lost mid-run and the password in a tracking URL: tests/system/test_tracking.py.)"""

from __future__ import annotations

import pytest

from tests.helpers import invoke, one_line_error


@pytest.mark.parametrize("yaml,needle", [
    ("name: s\nrepeats: two\ngrid: {attention: [sdpa]}\n", "repeats must be a positive whole number, got 'two'"),
    ("name: s\ntrain: {batch_size: \"eight\"}\ngrid: {attention: [sdpa]}\n", "batch_size must be int, got 'eight'"),
    ("name: s\ntrain: {lr: 1e-3}\ngrid: {attention: [sdpa]}\n", "write 1.0e-3"),
])
def test_a_suite_file_with_a_bad_value_is_one_line(workdir, tiny_mnist, yaml, needle):
    (workdir / "s.yaml").write_text(yaml)
    one_line_error(invoke("suite", "s.yaml", "--device", "cpu"), needle)
    assert not (workdir / "mlflow.db").exists()

