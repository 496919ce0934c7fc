"""The architecture's layers and what the docs say of the code, enforced."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from report import installed_layout

ENGINE = Path(__file__).resolve().parent.parent / "prox_dagster"


def lint_imports(where: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with pyproject.toml's contracts, on the package laid out at ``where``."""
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=where,
                          env={**os.environ, "PYTHONPATH": str(where)},
                          capture_output=True, text=True, timeout=300)


def test_the_layers_hold_as_import_linter_checks_them(tmp_path):
    """The contracts in pyproject.toml: the engine imports no Dagster, the CLI sits over the
    composition root, only the root imports the Dagster layer, no cycles in the engine."""
    where = installed_layout(tmp_path)
    result = lint_imports(where)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in result.stdout


def test_import_linter_catches_an_engine_module_that_imports_dagster(tmp_path):
    where = installed_layout(tmp_path)
    words = where / "prox_dagster" / "words.py"
    words.write_text("import dagster  # noqa\n" + words.read_text())
    result = lint_imports(where)
    assert result.returncode != 0 and "prox_dagster.words -> dagster" in result.stdout


def test_no_eval_or_exec_in_the_engine():
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "compile"}, path


def test_every_generated_table_in_the_docs_is_what_the_results_and_the_code_render():
    """The README's variables, the benchmark, quality, ablation and scale tables and the import
    graph are rendered by benchmarks/report.py, never typed: a stale one fails here."""
    import report

    assert report.check() == []
    names = {section.name for section in report.sections()}
    assert {"environment", "benchmarks", "quality", "ablation", "scale", "import graph"} <= names


def test_a_table_typed_over_by_hand_is_caught(tmp_path):
    import report

    readme = tmp_path / "README.md"
    text = (ENGINE.parent / "README.md").read_text()
    readme.write_text(text.replace("| `PROX_EXECUTOR` |", "| `PROX_EXECUTOR_TYPO` |"))
    section = next(s for s in report.sections() if s.name == "environment")
    stale = report.Section(section.name, readme, section.render)
    assert stale.stored() != stale.render()
    assert stale.write() and stale.stored() == stale.render()


def test_the_readme_fits_a_screen_or_so():
    assert len((ENGINE.parent / "README.md").read_text().splitlines()) <= 150


def test_the_environment_is_read_in_one_place_and_every_variable_is_declared():
    """Only prox_dagster/environment.py touches os.environ; every PROX_* name the code uses as
    a string is declared there, and every declared one is used."""
    import re

    from prox_dagster.environment import VARIABLES

    readers, used = [], set()
    for folder in ("prox_dagster", "assets", "resources"):
        for path in (ENGINE.parent / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                        and path.name != "environment.py"):
                    readers.append(f"{path.relative_to(ENGINE.parent)}:{node.lineno}")
                if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and path.name != "environment.py"):
                    used.update(re.findall(r"\bPROX_[A-Z_]+[A-Z]\b", node.value))
    assert readers == []
    constants = {"PROX_CHUNK_SIZE", "PROX_REFINER_SHAPE"}  # names of values, not variables
    assert used - set(VARIABLES) - constants == set()
    # a variable no resource field takes is read by name where it is used
    assert {name for name, v in VARIABLES.items() if not v.fields} - used == set()


def test_the_caps_the_docs_state_are_the_caps_in_the_code():
    from prox_dagster import shards
    from prox_dagster.quality import RETENTION_DOCUMENT_CAP
    from prox_dagster.tokenization import BATCH_CHARS
    from prox_dagster.resources import RawSource

    docs = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    stated = {"64 MiB, quarantined by its first 4 KiB":
              shards.MAX_RECORD_BYTES == 64 << 20 and shards.QUARANTINED_HEAD == 4096,
              "| 8 GiB, then": RawSource().max_shard_bytes == 8 << 30,
              "| 10 million, likewise": RawSource().max_shard_lines == 10_000_000,
              "| 1,000,001 (": shards.MAX_DOCUMENT_LINES == 1_000_001,
              "2 MiB of characters": BATCH_CHARS == 2 << 20,
              "| 32,768 tokens": RETENTION_DOCUMENT_CAP == 32_768,
              "| 239 bytes: its longest": shards.MAX_KEY_BYTES == 239}
    for text, true in stated.items():
        assert text in docs and true, text


def test_the_wheel_installs_one_top_level_package(tmp_path):
    """assets/ and resources/ ship as prox_dagster.assets and prox_dagster.resources: a wheel
    puts nothing at the top level that another project's folders could collide with."""
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside it
    for part in ("prox_dagster", "assets", "resources"):
        shutil.copytree(ENGINE.parent / part, source / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ENGINE.parent / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", str(source), "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"prox_dagster",
                                                      wheel.name.split("-py3")[0] + ".dist-info"}
    for shipped in ("prox_dagster/assets/__init__.py", "prox_dagster/resources/refiner.py",
                    "prox_dagster/environment.py", "prox_dagster/data/sample_tokenizer.json.gz"):
        assert shipped in names, shipped
