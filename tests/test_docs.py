"""The README and the pages of docs/ stay true to the code: every charrnn command they show parses as
that command's options, every option and environment variable they name exists, every link lands, and
the pages keep the shape a newcomer relies on (a short README, a two-line summary atop every page)."""

from __future__ import annotations

import re
import shlex
import textwrap
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import click
import pytest

from charrnn.cli import cli
from test_options import _variables

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

FENCE = re.compile(r"^[ ]*```([\w-]*)\n(.*?)^[ ]*```$", re.M | re.S)  # in a list item too
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^()\s]+)\)")
# Shell words that end one simple command and start the next, and those whose next word is a file.
COMMAND_SEPARATORS = {"|", "||", "&&", ";", "&"}
REDIRECTIONS = {">", ">>", "<", "2>", "&>"}
# A word of a command's synopsis rather than of a command line: CORPUS..., [CKPT], LOG.jsonl, OUT.
PLACEHOLDER = re.compile(r"^\[?[A-Z]{2,}[A-Za-z.]*\]?$|\.\.\.|^\[")


class Shown(NamedTuple):
    """A shell command line shown on a page, and whether it is a synopsis (`charrnn eval [CKPT] FILE...`)."""

    page: str
    line: str
    synopsis: bool = False


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def _without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def _block_lines(language: str, body: str) -> list[str]:
    """The command lines of one fenced block: the `$ ` lines of a block that shows a session, else every
    line of a shell block (continuation lines joined); none of a block of output or Python."""
    lines = textwrap.dedent(body).splitlines()
    prompted = [line[2:] for line in lines if line.startswith("$ ")]
    if prompted or language not in ("sh", "bash", "console"):
        return prompted
    joined = "\n".join(lines).replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def shown_commands(page: Path) -> Iterator[Shown]:
    """Every shell command line shown on ``page``: in fenced blocks, and in inline code outside them."""
    text = page.read_text(encoding="utf-8")
    for match in FENCE.finditer(text):
        for line in _block_lines(match.group(1), match.group(2)):
            yield Shown(_relative(page), line)
    for span in INLINE_CODE.findall(_without_code_blocks(text)):
        if re.search(r"(^|[|;&]\s*)charrnn\s", span):
            words = span.split()
            yield Shown(_relative(page), span, synopsis=any(PLACEHOLDER.search(word) for word in words[2:]))


def simple_commands(line: str) -> list[list[str]]:
    """The words of each simple command of a shell line, without variable assignments, `time` and
    redirections: `A=1 time charrnn eval x | head > y` gives [['charrnn', 'eval', 'x'], ['head']]."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words, skip_next = [], [], False
    for word in lexer:
        if skip_next:
            skip_next = False
        elif word in COMMAND_SEPARATORS:
            commands.append(words)
            words = []
        elif word in REDIRECTIONS:
            skip_next = True
        elif words or not (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word) or word == "time"):
            words.append(word)
    commands.append(words)
    return [command for command in commands if command]


def charrnn_invocations(line: str) -> list[list[str]]:
    """The arguments of every charrnn command in a shell line (the program given as charrnn or a path to it)."""
    return [words[1:] for words in simple_commands(line) if Path(words[0]).name == "charrnn"]


def _command_options(command: click.Command) -> set[str]:
    """Every spelling of every option of ``command``, -h/--help included."""
    return {opt for param in command.get_params(click.Context(command)) if isinstance(param, click.Option)
            for opt in (*param.opts, *param.secondary_opts)}


def _group_options() -> set[str]:
    return _command_options(cli)


def check_invocation(arguments: list[str], synopsis: bool = False) -> None:
    """Raise if ``arguments`` (what follows `charrnn`) is not a valid command line, or for a synopsis,
    if it names a command or an option that does not exist."""
    while arguments and arguments[0].startswith("-"):
        assert arguments[0] in _group_options(), arguments
        if arguments[0] in ("--version", "-V", "--help", "-h"):
            return
        arguments = arguments[1:]
    if not arguments:  # `charrnn -q` named in prose: an option of every command, not a command line
        assert synopsis, "no command"
        return
    name, rest = arguments[0], arguments[1:]
    assert name in cli.commands, f"no command {name!r}"
    command = cli.commands[name]
    if synopsis:
        unknown = [word for word in rest if word.startswith("--") and word not in _command_options(command)]
        assert not unknown, f"{name} has no {unknown}"
        return
    if "--help" in rest or "-h" in rest:
        return
    with command.make_context(name, rest) as ctx:  # raises click's UsageError if it does not parse
        assert ctx.params is not None


def _all_shown() -> list[Shown]:
    return [shown for page in PAGES for shown in shown_commands(page)]


def test_the_pages_show_charrnn_commands_and_the_quick_start_is_among_them():
    shown = [s for s in _all_shown() if charrnn_invocations(s.line)]
    assert len(shown) > 40
    assert any(s.page == "README.md" and s.line.startswith("python3 -m venv .venv && .venv/bin/pip install '.[fast]'")
               and charrnn_invocations(s.line) == [["train", "data/tang300.txt", "--steps", "1000"],
                                                   ["sample", "--seed", "月"]] for s in shown)
    pages = {s.page for s in shown}
    assert {"README.md", "docs/commands.md", "docs/checkpoints.md", "docs/quality.md"} <= pages


@pytest.mark.parametrize("shown", [s for s in _all_shown() if charrnn_invocations(s.line)], ids=lambda s: s.line[:60])
def test_every_charrnn_command_shown_parses_as_that_commands_options(shown: Shown):
    for arguments in charrnn_invocations(shown.line):
        # A command named alone in prose (`charrnn plot`) is a mention of it, not a command line.
        check_invocation(arguments, synopsis=shown.synopsis or len(arguments) == 1)


def test_the_command_check_refuses_what_charrnn_refuses():
    check_invocation(["-q", "eval", "tang", "held_out.txt", "--json"])
    for bad in (["train", "x.txt", "--hidden-sise", "8"], ["sample", "--length", "many"], ["trian", "x.txt"],
                ["--verbose", "info"], ["export", "tang"]):
        with pytest.raises((click.UsageError, AssertionError)):
            check_invocation(bad)
    with pytest.raises(AssertionError):
        check_invocation(["eval", "[CKPT]", "FILE...", "--encodng"], synopsis=True)
    assert charrnn_invocations("A=1 time .venv/bin/charrnn eval x -q | head -c 3 > y && charrnn ls") == [
        ["eval", "x", "-q"], ["ls"]]


# Scripts of the checkout that docs show with options of their own: the benchmarks, and the textbook
# model run on its own (python -m charrnn.model.reference).
SCRIPTS_WITH_OPTIONS = [*(REPO / "bench").glob("*.py"), REPO / "charrnn" / "model" / "reference.py"]


def _bench_scripts_naming(option: str) -> list[Path]:
    return [path for path in SCRIPTS_WITH_OPTIONS if f'"{option}"' in path.read_text(encoding="utf-8")]


def _module_script(words: list[str]) -> Optional[Path]:
    """The file of ``python -m bench.NAME`` (or ``python bench/NAME.py``) in a command's words, else None."""
    if words[0] not in ("python", "python3"):
        return None
    if "-m" in words[:-1] and words[words.index("-m") + 1].startswith("bench."):
        return REPO / "bench" / (words[words.index("-m") + 1].split(".", 1)[1] + ".py")
    scripts = [w for w in words if w.startswith("bench/") and w.endswith(".py")]
    return REPO / scripts[0] if scripts else None


def test_every_benchmark_command_shown_names_a_script_and_options_it_has():
    found = 0
    for shown in _all_shown():
        for words in simple_commands(shown.line):
            script = _module_script(words)
            if script is None:
                continue
            found += 1
            assert script.is_file(), (shown.page, shown.line)
            source = script.read_text(encoding="utf-8")
            # A quoted value may itself hold options (--default-variants "--val-split tail,..."): only words
            # that are an option's name count.
            named = [w.split("=")[0] for w in words if re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", w)]
            missing = [name for name in named if f'"{name}"' not in source]
            assert not missing, (shown.page, shown.line, missing)
    assert found >= 8


# Programs whose own options the pages show (Slurm's, MPI's launchers, pip, GNU parallel): only the options
# of a charrnn command they start are charrnn's to check.
OTHER_PROGRAMS = {"sbatch", "srun", "mpiexec", "mpirun", "pip", "parallel"}


def _without_other_programs_options(code: str) -> str:
    """``code`` with the command lines of OTHER_PROGRAMS cut down to the charrnn command they start, if any:
    `mpiexec -n 2 charrnn train x --steps 5` keeps `charrnn train x --steps 5`, `sbatch --array=0-5 job`
    keeps nothing."""
    kept = []
    for line in code.splitlines():
        try:
            commands = simple_commands(line)
        except ValueError:  # not shell (Python, output): kept as it is
            kept.append(line)
            continue
        if not any(Path(words[0]).name in OTHER_PROGRAMS for words in commands):
            kept.append(line)
            continue
        for words in commands:
            names = [Path(word).name for word in words]
            if names[0] not in OTHER_PROGRAMS:
                kept.append(" ".join(words))
            elif "charrnn" in names:
                kept.append(" ".join(words[names.index("charrnn"):]))
    return "\n".join(kept)


def test_the_options_of_other_programs_are_left_to_them():
    code = "mpiexec -n 2 -hosts a,b charrnn train x --steps 5\nsbatch --array=0-5 s.sh | tee --append log\ncharrnn ls"
    assert _without_other_programs_options(code) == "charrnn train x --steps 5\ntee --append log\ncharrnn ls"


def test_every_option_named_in_code_is_an_option_of_charrnn_or_of_a_benchmark():
    known = _group_options().union(*(_command_options(c) for c in cli.commands.values()))
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        # An error message quoted inline may name the mistaken option it answers (`Error: No such option ...`).
        inline = [span for span in INLINE_CODE.findall(_without_code_blocks(text)) if not span.startswith("Error:")]
        code = _without_other_programs_options("\n".join([body for _, body in FENCE.findall(text)] + inline))
        for option in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", code)):
            assert option in known or _bench_scripts_naming(option), (_relative(page), option)


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)


def test_every_docs_page_opens_with_a_two_line_summary():
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 7
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and lines[1] == "" and lines[4] == "", _relative(page)
        for line in lines[2:4]:
            assert line and not line.startswith(("#", "|", "```", "-", " ", "![")), (_relative(page), line)


def github_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``page``: lower case, punctuation dropped, spaces as
    hyphens, a repeated heading suffixed -1, -2, ..."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", _without_code_blocks(page.read_text(encoding="utf-8")), re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        suffix, candidate = 0, anchor
        while candidate in anchors:
            suffix += 1
            candidate = f"{anchor}-{suffix}"
        anchors.add(candidate)
    return anchors


def test_every_link_between_the_pages_lands():
    for page in PAGES:
        for target in LINK.findall(_without_code_blocks(page.read_text(encoding="utf-8"))):
            if re.match(r"^[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            assert path.exists(), (_relative(page), target)
            if anchor and path.suffix == ".md":
                assert anchor in github_anchors(path), (_relative(page), target, sorted(github_anchors(path)))


def test_the_readme_links_every_docs_page():
    linked = {(REPO / target.partition("#")[0]).resolve()
              for target in LINK.findall(README.read_text(encoding="utf-8")) if target.startswith("docs/")}
    assert set(DOCS.glob("*.md")) <= linked, set(DOCS.glob("*.md")) - linked


def test_the_docs_name_only_environment_variables_that_work():
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"\bCHARRNN_[A-Z_]*[A-Z]\b", page.read_text(encoding="utf-8")))
    named -= {"CHARRNN_COMMAND_OPTION"}  # the pattern itself, CHARRNN_<COMMAND>_<OPTION>
    assert {"CHARRNN_TRAIN_HIDDEN_SIZE", "CHARRNN_QUIET", "CHARRNN_BACKEND"} <= named
    assert named <= _variables(), named - _variables()
