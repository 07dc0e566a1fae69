"""Three worker processes share one study in a real PostgreSQL server; one is SIGKILLed mid-trial."""

from __future__ import annotations

from pathlib import Path


def test_postgres_storage_url_password_is_redacted():
    from vitbench.study import redact

    assert redact("postgresql+psycopg://u:secret@h:5/db") == "postgresql+psycopg://u:***@h:5/db"
    assert Path(redact("sqlite:///optuna.db")).name == "optuna.db"

