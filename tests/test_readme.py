"""The manual's commands are real: every ``segml`` command line the README and the pages under
``docs/`` show parses with the CLI's own parser, every ``make`` target, benchmark script option
and extra exists, and the example spec loads.

The commands are taken from the manual's code blocks and from its inline code that starts
with a command name, so a renamed option or a dropped command fails here, not in a user's
shell. What each command does is tested elsewhere (``make demo`` runs the demo's lines).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from segml.cli import app
from segml.model import Segmenter
from segml.spec import load_spec
from segml.synthetic import synthetic_customers, synthetic_spec

from .conftest import EXPERIMENTS, ROOT
from .models import fit_segmenter

README = (ROOT / "README.md").read_text(encoding="utf-8")
MANUAL = "\n".join(  # the README and the pages it links under docs/
    path.read_text(encoding="utf-8") for path in [ROOT / "README.md", *ROOT.glob("docs/*.md")]
)
PROGRAMS = ("segml", ".venv/bin/segml", "make", "python", "pip", "mlflow")


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def _block_lines(text: str) -> list[str]:
    """Command lines of the bash blocks: continuations joined, comments dropped."""
    lines = []
    for block in _code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _inline_commands(text: str) -> list[str]:
    """Inline code that starts with a program name, e.g. `segml rollback --spec SPEC`
    (placeholder brackets dropped): a command's synopsis, or just its name."""
    spans = re.findall(r"`([^`\n]+)`", text)
    found = [s for s in spans if s.split(" ", 1)[0] in PROGRAMS and " " in s]
    return [re.sub(r"[\[\]]", "", span) for span in found]


BLOCKS = _block_lines(MANUAL)
INLINE = _inline_commands(MANUAL)
COMMANDS = [*BLOCKS, *INLINE]
SEGML = [c for c in COMMANDS if c.split()[0] in ("segml", ".venv/bin/segml")]
MAKE = [c for c in COMMANDS if c.startswith("make ")]
BENCH = [c for c in COMMANDS if c.startswith("python benchmarks/")]
PIP = [c for c in COMMANDS if c.startswith("pip install ")]
MLFLOW = [c for c in COMMANDS if c.startswith("mlflow ")]
GROUP = typer.main.get_command(app)  # a Typer group (Typer bundles its own Click)


def test_the_readme_shows_commands_of_each_kind() -> None:
    assert len(SEGML) >= 10 and MAKE and BENCH and PIP, COMMANDS
    named = {shlex.split(c)[1] for c in SEGML if not shlex.split(c)[1].startswith("-")}
    assert named == set(GROUP.commands), "the README names every command, and only those"


@pytest.mark.parametrize("line", SEGML)
def test_segml_command_parses(line: str) -> None:
    """Parse with the command's own Click parser, without running it: a command line of a code
    block must be complete (arguments, required options, values of the right type); inline
    synopses and names must use existing options only."""
    args = shlex.split(line)[1:]
    named = [i for i, arg in enumerate(args) if not arg.startswith("-")]
    first = named[0] if named else len(args)
    assert set(args[:first]) <= {"--debug", "--help", "--version"}, line  # global options
    if not named or "--help" in args:
        return
    name, rest = args[first], args[first + 1 :]
    command = GROUP.commands.get(name)
    assert command is not None, f"{line}: no command {name!r}"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = {arg.split("=")[0] for arg in rest if arg.startswith("-")} - options - {"--help"}
    assert not unknown, f"{line}: no such option(s) {sorted(unknown)}"
    with command.make_context(name, rest, resilient_parsing=line not in BLOCKS) as parsed:
        assert not parsed.args, f"{line}: unexpected arguments {parsed.args}"


@pytest.mark.parametrize("name", sorted(GROUP.commands))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output


@pytest.mark.parametrize("line", MAKE)
def test_make_target_exists(line: str) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in shlex.split(line)[1:]:
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), target


@pytest.mark.parametrize("line", BENCH)
def test_benchmark_script_takes_the_options_shown(line: str, monkeypatch) -> None:
    script, *args = shlex.split(line)[1:]
    path = ROOT / script
    assert path.is_file(), script
    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit) as ended:
        importlib.import_module(path.stem).main()
    assert ended.value.code == 0
    options = set(re.findall(r"--[\w-]+", shown.getvalue()))
    assert {a for a in args if a.startswith("--")} <= options, shown.getvalue()


@pytest.mark.parametrize("line", MLFLOW)
def test_mlflow_command_parses(line: str) -> None:
    from mlflow.cli import cli

    name, *rest = shlex.split(line)[1:]
    command = cli.commands[name]
    with command.make_context(name, rest) as parsed:
        assert not parsed.args, f"{line}: unexpected arguments {parsed.args}"


def test_every_command_line_is_checked() -> None:
    checked = {*SEGML, *MAKE, *BENCH, *PIP, *MLFLOW}
    assert [c for c in COMMANDS if c not in checked] == []


@pytest.mark.parametrize("line", PIP)
def test_pip_extra_exists(line: str) -> None:
    provided = set(importlib.metadata.metadata("segml").get_all("Provides-Extra") or [])
    for requirement in shlex.split(line)[2:]:
        extras = re.fullmatch(r"segml\[([\w,]+)\]", requirement)
        assert extras, requirement
        assert set(extras[1].split(",")) <= provided, requirement


def test_example_spec_loads(tmp_path: Path) -> None:
    (block,) = _code_blocks(README, "yaml")
    raw = yaml.safe_load(block)
    raw["data"]["source"] = str(EXPERIMENTS / raw["data"]["source"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    spec = load_spec(path)
    assert spec.model_name == raw["registry"]["model_name"]


def test_linked_files_exist() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Segmenter]:
    """Only the k-means model that ``registered`` (conftest) registers as champion."""
    train = synthetic_customers(3_000, seed=1)
    tmp = tmp_path_factory.mktemp("models")
    return {"kmeans": fit_segmenter(tmp, "kmeans", train, synthetic_spec("customers.csv"))}


def test_offline_scoring_recipe_runs(registered: dict, tmp_path: Path, monkeypatch) -> None:
    """The README's export-then-score lines, run as shown in a folder laid out like the repo
    (its spec names the test's registered model)."""
    recipe = [c for c in BLOCKS if c.startswith(("segml export", "segml score --model models/"))]
    assert len(recipe) == 2, BLOCKS
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "cdnow.yaml").write_bytes(registered["spec"].read_bytes())
    customers = synthetic_customers(500, seed=2).drop(columns="true_segment")
    customers.to_csv(tmp_path / "experiments" / "customers.csv", index=False)
    customers.to_parquet(tmp_path / "customers.parquet")
    for line in recipe:
        result = CliRunner().invoke(app, shlex.split(line)[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(scores) == 500 and set(scores["model_name"]) == {"synthetic"}
