"""Shared by tests/ (fast tier), integration/ (slow tier) and bench/.

Fixtures that start real components live in tests/fixtures/, one module per component,
and are loaded here as plugins so every tier reuses them.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "tests" / "fixtures").glob("*.py")
    if p.stem != "__init__"
)
