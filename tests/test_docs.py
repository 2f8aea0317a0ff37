"""The documentation: the README stays short and keeps its two set-up commands, the architecture
page lists exactly what is registered, every relative link resolves, the results pages include the
generated leaderboard instead of a copy, and (with the docs extra installed) ``mkdocs build
--strict`` passes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
ARCHITECTURE = DOCS / "architecture.md"
MAX_README_LINES = 250

# The README's "Set-up: two commands", exactly as a user copies them (the first runs the demo on the
# bundled digits, the second installs and runs the tests).
SETUP_COMMANDS = (
    "bash .ci/install && .venv/bin/glrzoo demo      # main job on the bundled digits: train, export, evaluate, report",
    "bash .ci/run                                   # install and pass the tests (python -m pytest -q tests)",
)

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Targets of the inline links of a Markdown file that point into the repository (no URL, no
    page-internal anchor), outside code blocks and code spans."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def test_readme_is_short_and_keeps_the_two_setup_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (f"README.md has {len(lines)} lines, at most {MAX_README_LINES}: "
                                            "move detail to docs/")
    start = lines.index("## Set-up: two commands")
    section = lines[start + 1:next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                                   len(lines))]
    for command in SETUP_COMMANDS:
        assert command in section, f"the set-up section lost the command {command!r}"
    for script in (".ci/install", ".ci/run"):
        assert (REPO / script).is_file(), f"the set-up commands run {script}, which is missing"


def registered_names() -> dict[str, list[str]]:
    """``{heading of the architecture page: names registered now}`` for every registry."""
    import evaluation.masking
    import training.optim
    import zoo
    from evaluation.attacks import list_attacks
    from evaluation.corruptions import list_corruptions
    from evaluation.suites import list_suites
    from training.registry import list_estimators
    from training.transforms import list_transforms

    return {
        "Registered models": zoo.list_models(),
        "Registered estimators": list_estimators(),
        "Registered optimizers": training.optim.OPTIMIZERS.names(),
        "Registered schedules": training.optim.SCHEDULES.names(),
        "Registered attacks": list_attacks(),
        "Registered corruptions": list_corruptions(),
        "Registered suites": list_suites(),
        "Registered masking rules": evaluation.masking.RULES.names(),
        "Registered batch transforms": list_transforms(),
    }


def documented_names(text: str, heading: str) -> list[str] | None:
    """The first cell (a name in backticks) of every row of the table under ``### heading``;
    ``None`` when the page has no such heading."""
    lines = text.splitlines()
    try:
        start = lines.index(f"### {heading}")
    except ValueError:
        return None
    names, in_table = [], False
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if in_table:
                break
            continue
        in_table = True
        first = line.strip().strip("|").split("|")[0].strip()
        match = re.fullmatch(r"`([^`]+)`", first)
        if match:  # the header row and the |---| rule have no name in backticks
            names.append(match.group(1))
    return names


def test_architecture_page_lists_exactly_what_is_registered():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    problems = []
    for heading, registered in registered_names().items():
        documented = documented_names(text, heading)
        if documented is None:
            problems.append(f"docs/architecture.md has no '### {heading}' table")
            continue
        missing = sorted(set(registered) - set(documented))
        extra = sorted(set(documented) - set(registered))
        twice = sorted({n for n in documented if documented.count(n) > 1})
        if missing:
            problems.append(f"{heading}: registered but not on the page: {', '.join(missing)}")
        if extra:
            problems.append(f"{heading}: on the page but not registered: {', '.join(extra)}")
        if twice:
            problems.append(f"{heading}: listed twice: {', '.join(twice)}")
    assert not problems, "docs/architecture.md has drifted from the registries:\n" + "\n".join(problems)


def test_every_relative_link_points_to_an_existing_file():
    broken = []
    for path in markdown_files():
        for target in relative_links(path):
            file_part = target.split("#", 1)[0]
            if file_part and not (path.parent / file_part).exists():
                broken.append(f"{path.relative_to(REPO)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_in_the_nav():
    in_nav = set(re.findall(r"^\s*- (?:[^:\n]+: )?([\w./-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(encoding="utf-8"),
                            re.MULTILINE))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not on_disk - in_nav, f"pages missing from the nav of mkdocs.yml: {sorted(on_disk - in_nav)}"
    assert not in_nav - on_disk, f"nav entries without a page: {sorted(in_nav - on_disk)}"


@pytest.mark.parametrize("page, generated", [("results/leaderboard.md", "saved_models/LEADERBOARD.md"),
                                             ("results/models.md", "saved_models/README.md")])
def test_results_pages_include_the_generated_files(page, generated):
    """The tables generated from the models' metadata are included when the site is built, never copied."""
    assert (REPO / generated).is_file()
    assert f'--8<-- "{generated}"' in (DOCS / page).read_text(encoding="utf-8").splitlines()


def test_mkdocs_build_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs extra is not installed (pip install -e '.[docs]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # no -q: mkdocs counts the warnings that fail --strict only when they are logged
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert (tmp_path / "site" / "index.html").is_file()
