"""The README: one page with the two commands that CI runs, links that resolve, and an accuracy
table that equals ``benchmarks/results/ACCURACY.md``; the base install that its first command
makes holds the TensorFlow-free export and the bioimage.io validator."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

#: the README's two commands: install and run the demo; install and run the tests
DEMO_COMMAND = "pip install -e . && tem-keras demo"
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest -q'
#: a page of Markdown
MAX_LINES = 130


def _code_blocks(text: str, language: str) -> list[str]:
    return [b.strip() for b in re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)]


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def test_the_readme_fits_on_a_page_and_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES
    assert _code_blocks(text, "bash")[:2] == [DEMO_COMMAND, TEST_COMMAND]
    assert len(_code_blocks(text, "python")) == 1  # the tour
    tour = _code_blocks(text, "python")[0].splitlines()
    assert len([line for line in tour if line.strip()]) <= 10


def test_ci_runs_the_readmes_test_command_in_a_new_venv():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "python3 -m venv --clear .venv" in ci  # nothing kept from an earlier run
    install, run = TEST_COMMAND.split(" && ")
    assert any(line.startswith("python -m pip install") and line.endswith(install.split("pip install")[1].strip())
               for line in ci), ci
    assert ci[-1] == run


def test_every_link_of_the_readme_and_docs_resolves():
    for page in [README, *DOCS]:
        for link in _links(page):
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            assert path.exists(), f"{page.name}: {link}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{page.name}: {link}"


def test_the_readme_leads_to_every_doc():
    linked = {(README.parent / link.partition("#")[0]).resolve() for link in _links(README)}
    for page in DOCS:
        linked |= {(page.parent / link.partition("#")[0]).resolve() for link in _links(page)}
    assert not [p.name for p in DOCS if p.resolve() not in linked]
    assert "benchmarks/results/ACCURACY.md" in README.read_text(encoding="utf-8")


def test_the_readmes_accuracy_table_equals_the_measured_one():
    measured = {}
    for line in (ROOT / "benchmarks" / "results" / "ACCURACY.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 6 and re.fullmatch(r"[\d.]+ ± [\d.]+", cells[2]):
            measured.setdefault(cells[0].split(" (")[0], (cells[2], cells[4], cells[5].rstrip("²")))
    text = README.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\S+) \(\w+\) \| ([\d.]+ ± [\d.]+) \| ([\d.]+ ± [\d.]+) \| ([\d.]+ ± [\d.]+) \|$",
                      text, flags=re.M)
    assert {"tem-sinter-tiles", "tem-soot-aggregates", "pt-alumina-haadf-tomo"} <= {r[0] for r in rows}
    for name, *scores in rows:
        assert tuple(scores) == measured[name], name


def test_the_base_install_holds_the_light_runtime_and_the_bioimageio_validator():
    """``pip install -e .`` (the README's first command) gives exports with model.onnx and
    predict.py and a validated bioimage.io package; the extras that named them still work."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    base = {re.split(r"[<>=\[ ]", r.strip())[0].lower() for r in config["options"]["install_requires"].splitlines()
            if r.strip() and not r.strip().startswith("#")}
    assert {"tf2onnx", "onnx", "onnxruntime", "bioimageio.spec"} <= base
    extras = config["options.extras_require"]
    assert "tf2onnx" in extras["onnx"] and "bioimageio.spec" in extras["bioimageio"]
    assert not {"tensorflow-cpu", "tf-keras", "tf_keras"} & base  # one TensorFlow, Keras 3


@pytest.mark.parametrize("module", ["tf2onnx", "onnxruntime", "bioimageio.spec"])
def test_the_base_install_imports(module):
    """They install beside TensorFlow 2.21 without breaking its protobuf: each imports after it."""
    pytest.importorskip("tensorflow")
    __import__(module)


def test_the_readmes_few_labels_table_equals_the_measured_one():
    """README rows ``| set (kind) | all | two | none | Otsu |`` equal the few-labels table of
    ``ACCURACY.md`` (all masks, two masks, zero masks, Otsu)."""
    measured, inside = {}, False
    for line in (ROOT / "benchmarks" / "results" / "ACCURACY.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("**"):
            inside = line.startswith("**Few labels")
        cells = [c.strip() for c in line.strip("|").split("|")]
        if inside and len(cells) >= 5 and re.fullmatch(r"[\d.]+ ± [\d.]+", cells[1]):
            measured[cells[0].split(" (")[0]] = tuple(cells[1:5])
    value = r"([\d.]+ ± [\d.]+)"
    rows = re.findall(rf"^\| (\S+) \(\w+\) \| {value} \| {value} \| {value} \| {value} \|$",
                      README.read_text(encoding="utf-8"), flags=re.M)
    assert {"tem-sinter-tiles", "tem-soot-aggregates", "pt-alumina-haadf-tomo"} <= {r[0] for r in rows}
    for name, *scores in rows:
        assert tuple(scores) == measured[name], name
