"""Every flag of `vitbench run` / `sweep` reaches the config field it names, with the field's type; the names the CLI
offers are the registries'; help is never cut."""

from __future__ import annotations


def test_help_lists_every_choice_and_is_never_cut(tmp_path):
    """Help piped to a file: wrapped at 80 columns, whole words, every attention implementation and dataset."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from vitbench import names

    out = subprocess.run([sys.executable, "-m", "vitbench", "run", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "80"}).stdout
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in out and "<bool>" not in out
    flat = " ".join(out.split())
    for name in (*names.ATTENTION, *names.DATASET_FORMS, *names.PRESETS):
        assert name in flat.replace("- ", "-"), name
    assert "$MLFLOW_TRACKING_URI" in flat

