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
    panels = [line for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert panels == ["Model:", "Training:", "Hardware:", "Tracking:", "Options:"], panels  # help in panels



def test_version_is_the_package_s(tmp_path):
    """`vitbench --version`, through the program's own entry (not Typer's test runner): the package's version, exit 0."""
    import subprocess
    import sys
    from importlib.metadata import version

    from tests.conftest import REPO
    from vitbench import __version__

    out = subprocess.run([sys.executable, "-m", "vitbench", "--version"], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout == f"vitbench {__version__}\n" and out.stderr == "", out
    assert version("vitbench") == __version__  # pyproject.toml takes it from the package: one place


def test_shell_completion_offers_every_attention_without_importing_torch(tmp_path):
    """Completion as a shell asks for it (`vitbench --install-completion` sets this up): `run --attention <TAB>`
    lists the registry's implementations, and the process imports no torch."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from vitbench import names

    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "_VITBENCH_COMPLETE": "complete_bash",
           "COMP_WORDS": "vitbench run --attention ", "COMP_CWORD": "3"}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "vitbench"], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0 and out.stdout.split() == list(names.ATTENTION), out
    assert not [line for line in out.stderr.splitlines() if line.split("|")[-1].strip() in ("torch", "mlflow")]
