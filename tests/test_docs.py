"""The README and docs/: generated parts up to date, the README a short product page,
and the site building with ``mkdocs build --strict``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FRESH_MACHINE_COMMANDS = (
    "pip install -e . && metarl train maml --family navigation2d",
    'pip install -e ".[dev]" && python -m pytest -q -n 2',
)


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_blocks_are_up_to_date():
    stale = _generator().outdated()
    assert not stale, ("generated blocks out of date (run `python docs/generate.py`): "
                       + "; ".join(stale))


def test_outdated_names_an_edited_block(tmp_path, monkeypatch):
    generate = _generator()
    page = tmp_path / "README.md"
    page.write_text(README.read_text().replace("<!-- results:end -->",
                                               "| a number typed by hand |\n<!-- results:end -->"))
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "BLOCKS", [b for b in generate.BLOCKS if b[0] == "README.md"])
    assert generate.outdated() == ["README.md: results"]
    page.write_text(generate.expected("README.md"))
    assert generate.outdated() == []


def test_every_result_file_is_on_a_page():
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    results = ROOT / "benchmarks" / "results"
    missing = [p.name for p in sorted(results.glob("*.json")) + sorted(results.glob("*.png"))
               if p.name not in docs]
    assert not missing, f"benchmark results no docs page shows: {missing}"


def test_readme_is_a_short_product_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for command in FRESH_MACHINE_COMMANDS:
        assert command in text, command
    ci = (ROOT / ".ci" / "run").read_text()
    assert '-e ".[dev]"' in ci and "python -m pytest -q -n 2" in ci  # what .ci/run calls


def test_readme_links_resolve():
    text = README.read_text()
    links = re.findall(r"\]\(((?:docs|notebooks|benchmarks)/[^)#]+)", text)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_mkdocs_build_strict(tmp_path):
    for package in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(package)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "results" / "plots" / "maml_navigation.png").exists()


def test_a_block_whose_result_file_is_absent_says_so_and_none_is_committed_that_way(tmp_path,
                                                                                    monkeypatch):
    generate = _generator()
    monkeypatch.setattr(generate, "RESULTS", tmp_path)
    _, _, render = generate.results_block("page", "block", lambda: "table", ["absent.json"])
    assert render() == "Not run yet: `benchmarks/results/absent.json` is absent."
    (tmp_path / "absent.json").write_text("{}")
    assert render().endswith("\n\ntable")
    pages = (ROOT / "docs" / "results").glob("*.md")
    assert not [p.name for p in pages if "Not run yet" in p.read_text()]


def test_model_based_paired_differences_use_per_task_returns(tmp_path, monkeypatch):
    generate = _generator()
    monkeypatch.setattr(generate, "RESULTS", tmp_path)
    mb = [-500.0, -400.0, -300.0, -200.0]
    # GrBAL is better by 10 +- 1 on every task: the paired test must see it even though the
    # tasks' spread (CI about +-130) swamps the difference of the means
    grbal = [r + 10.0 + d for r, d in zip(mb, (1.0, -1.0, 0.5, -0.5))]
    run = lambda per_task: {"final": {s: {"per_task": per_task} for s in ("test", "ood")}}  # noqa
    (tmp_path / "mb.json").write_text(json.dumps({"learners": {"mb": run(mb),
                                                               "grbal": run(grbal)}}))
    text = generate.model_based_paired("mb.json")
    assert "+10.0 ± 0.9" in text.replace("\u2212", "-") and "4 / 4" in text
    assert "A better" in text
    (tmp_path / "old.json").write_text(json.dumps({"learners": {"mb": {"final": {
        "test": {}, "ood": {}}}, "grbal": {"final": {"test": {}, "ood": {}}}}}))
    assert "did not record per-task returns" in generate.model_based_paired("old.json")
