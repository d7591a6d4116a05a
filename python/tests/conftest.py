"""Shared fixtures: the repository's modules, the detwasm command line for reference
runs, and a small job mix."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

import detwasm

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "fixtures" / "probes" / "probe.wasm"


def _check_installed() -> None:
    # `import detwasm` must find the installed package (with its extension), not the
    # source folder python/detwasm: run pytest from the repository root.
    if not hasattr(detwasm, "_native"):
        raise RuntimeError("detwasm is not installed: pip install ./python")


_check_installed()


@pytest.fixture(autouse=True)
def _module_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """One module cache for the whole session, away from the user's."""
    monkeypatch.setenv("DETWASM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "module-cache"))


@pytest.fixture(scope="session")
def cli() -> str:
    """The detwasm command line: $DETWASM_BIN (the workspace test sets it), else the
    workspace's dev build."""
    path = os.environ.get("DETWASM_BIN") or str(ROOT / "target" / "debug" / "detwasm")
    if not os.access(path, os.X_OK):
        pytest.skip("no detwasm binary (cargo build, or set DETWASM_BIN)")
    return path


def batch(cli: str, lines: List[str], cwd: Path, output_dir: Path, *extra: str) -> List[Dict[str, Any]]:
    """`detwasm batch` of these lines, serially: the reference every front end must equal."""
    jobs = output_dir.parent / f"{output_dir.name}.jsonl"
    jobs.write_text("".join(line + "\n" for line in lines))
    env = dict(os.environ)
    done = subprocess.run(
        [cli, "batch", str(jobs), "--parallel", "1", "--output-dir", str(output_dir), *extra],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode in (0, 1, 2), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def data_tree(root: Path) -> Path:
    """An input folder with a nested file, a hidden file, an empty folder and a symlink."""
    (root / "sub" / "empty").mkdir(parents=True)
    (root / "a.txt").write_text("ay\n")
    (root / "sub" / "b.txt").write_text("bee\n" * 1000)
    (root / ".hidden").write_text("seen by the guest\n")
    os.symlink("sub/b.txt", root / "link")
    return root


def without(receipt: Dict[str, Any], *keys: str) -> Dict[str, Any]:
    """The receipt without `keys` and without its host statistics ("host": times and
    memory, which differ between any two runs)."""
    return {k: v for k, v in receipt.items() if k not in keys and k != "host"}

