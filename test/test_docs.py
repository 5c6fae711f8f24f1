"""README.md and docs/*.md stay true to the tree.

1. Every relative link and image target exists (and a `#anchor` names a heading of its page).
2. Every command of a fenced ``sh``/``bash`` block that invokes a script of the repository
   (scripts/, pyscripts/, utils/, bench/, a recipe's ./run.sh or local/, followed through
   ``cd`` lines) runs with ``--help`` from the directory the block runs it in, and prints its
   usage without a traceback. Several scripts print usage to stderr and exit 1 on ``--help``
   (run.pl, split_scp.pl, fix_data_dir.sh, ...), so the usage text is the criterion, not the
   exit status.
3. Every repository path written in inline code (``scripts/x.sh``, ``speechdump/x.py``, ...)
   exists.
"""

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import REPO

# First path components of the repository whose files the docs name.
TOP = ("scripts", "pyscripts", "utils", "bench", "egs", "test", "speechdump", "tools", "samples",
       "docs", ".ci")
# Scripts that can be invoked: their first component (relative to the repository, or to a recipe).
RUNNABLE = ("scripts", "pyscripts", "utils", "bench", "egs")
SEPARATORS = {"&&", "||", ";", "|", "&"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
NOT_A_PATH = re.compile(r"[<>*{}\[\]|$]|\.\.\.")


def doc_files(root=REPO):
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def split_fences(text):
    """(prose lines, code blocks) of a Markdown text: prose as (line number, line), each block
    as (language, first line number, its lines)."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.split("\n"), 1):
        fence = FENCE.match(line)
        if block is None and fence:
            block = (fence.group(2).lower(), number + 1, [], fence.group(1))
        elif block is not None and line.strip().startswith(block[3]):
            blocks.append(block[:3])
            block = None
        elif block is not None:
            block[2].append(line)
        else:
            prose.append((number, line))
    return prose, blocks


def slug(heading):
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    return {slug(line.lstrip("#")) for _, line in prose if re.match(r"#{1,6} ", line)}


def link_problems(doc):
    """Relative links and images of ``doc`` whose target (or anchor) is not there."""
    problems = []
    prose, _ = split_fences(doc.read_text(encoding="utf-8"))
    for number, line in prose:
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            where = f"{doc.name}:{number}: {target}"
            if not dest.exists():
                problems.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading with that anchor in {dest.name}")
    return problems


def inline_path_problems(doc, root=REPO):
    """Repository paths in inline code of ``doc`` that do not exist."""
    problems = []
    prose, _ = split_fences(doc.read_text(encoding="utf-8"))
    for number, line in prose:
        for span in INLINE.findall(line):
            for word in span.split():
                word = word.strip("\"'(),;:")
                if (word.split("/")[0] not in TOP or "/" not in word or NOT_A_PATH.search(word)
                        or word.startswith("tools/venv")):
                    continue
                if not (root / word).exists():
                    problems.append(f"{doc.name}:{number}: `{word}` does not exist")
    return problems


def logical_lines(lines):
    """Shell lines of a block as token lists: continuations joined, a quote left open carried
    on to the next line, comments dropped."""
    buffer = ""
    for line in lines:
        buffer = f"{buffer}\n{line}" if buffer else line
        if buffer.endswith("\\"):
            buffer = buffer[:-1]
            continue
        lexer = shlex.shlex(buffer, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:  # an open quote: the command goes on
            continue
        buffer = ""
        yield tokens


def commands(doc, root=REPO):
    """(where, directory, script) of each invocation of a repository script in the fenced sh and
    bash blocks of ``doc``; a block starts at the repository root and follows its ``cd`` lines.
    A script path that does not exist is returned too (and then fails)."""
    found = []
    _, blocks = split_fences(doc.read_text(encoding="utf-8"))
    for language, first, lines in blocks:
        if language not in ("sh", "bash", "shell", "console"):
            continue
        cwd = root
        for tokens in logical_lines(lines):
            segment = []
            for token in [*tokens, ";"]:
                if token not in SEPARATORS:
                    segment.append(token)
                    continue
                words = segment
                segment = []
                while words and ASSIGNMENT.match(words[0]):
                    words = words[1:]
                if not words:
                    continue
                if words[0] == "cd" and len(words) > 1:
                    cwd = Path(os.path.normpath(cwd / words[1]))
                    continue
                script = words[0]
                if Path(script).name.startswith("python"):
                    if len(words) < 2 or words[1].startswith("-"):
                        continue  # python -c / -m: not a script of ours
                    script = words[1]
                if "/" not in script:
                    continue
                path = Path(os.path.normpath(cwd / script))
                try:
                    rel = path.relative_to(root)
                except ValueError:
                    continue  # outside the repository (/models/..., a venv's python)
                parts = rel.parts
                recipe = len(parts) > 3 and parts[0] == "egs"
                if parts[0] not in RUNNABLE or (recipe and parts[3] not in
                                                ("run.sh", "local", *RUNNABLE)):
                    continue
                found.append((f"{doc.name}: block at line {first}: {' '.join(words)}", cwd,
                              script))
    return found


def environment():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{REPO / 'utils'}:{env['PATH']}"
    env["LC_ALL"] = "C"
    return env


def help_problem(cwd, script, env):
    """None when ``script --help`` run in ``cwd`` prints its usage without a traceback; else
    what went wrong."""
    path = cwd / script
    if not path.is_file():
        return f"{path} does not exist"
    argv = [sys.executable, script] if script.endswith(".py") else [script]
    try:
        done = subprocess.run([*argv, "--help"], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(argv)} --help: {e}"
    output = done.stdout + done.stderr
    if "Traceback" in output or "usage" not in output.lower():
        return (f"{' '.join(argv)} --help (exit {done.returncode}) printed no usage:\n"
                f"{output[-2000:]}")
    return None


def test_links_and_images_resolve():
    problems = [p for doc in doc_files() for p in link_problems(doc)]
    assert not problems, "\n".join(problems)


def test_inline_paths_exist():
    problems = [p for doc in doc_files() for p in inline_path_problems(doc)]
    assert not problems, "\n".join(problems)


def test_every_page_links_and_starts_with_an_example():
    """Each docs page is linked from the README and shows a runnable sh block before its first
    section."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for doc in doc_files()[1:]:
        assert f"(docs/{doc.name})" in readme, f"README.md does not link docs/{doc.name}"
        text = doc.read_text(encoding="utf-8")
        head = text.split("\n## ", 1)[0]
        assert re.search(r"^```(sh|bash)$", head, re.M), f"{doc.name}: no sh example at its top"


def test_commands_print_their_usage():
    found = [c for doc in doc_files() for c in commands(doc)]
    # The README's task examples are among them: the parser follows cd lines into recipes.
    scripts = {(cwd.relative_to(REPO).as_posix(), script) for _, cwd, script in found}
    for expected in ((".", "scripts/compute_vad.sh"), ("egs/sample_speakers/spk1", "./run.sh"),
                     (".", "scripts/score_trials.sh"), ("egs/vctk/spk1", "./run.sh")):
        assert expected in scripts, f"{expected} not found among the docs' commands: {scripts}"
    unique = {}
    for where, cwd, script in found:
        unique.setdefault((cwd, os.path.realpath(cwd / script)), (where, cwd, script))
    env = environment()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda item: (item[0], help_problem(item[1], item[2], env)),
                                unique.values()))
    problems = [f"{where}\n  {problem}" for where, problem in results if problem]
    assert not problems, "\n".join(problems)


def test_the_checks_fail_on_a_broken_page(tmp_path):
    """The checks above report what is missing: a link, an image, an anchor, an inline path, a
    script, and a script that prints no usage."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "quiet.sh").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "scripts" / "quiet.sh").chmod(0o755)
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Here\n")
    page = tmp_path / "README.md"
    page.write_text("# R\n\n[gone](docs/gone.md) ![img](docs/gone.png) [a](docs/a.md#there)\n"
                    "[ok](docs/a.md#here) `scripts/missing.sh --nj 2` `utils/<x>.sh`\n\n"
                    "```sh\ncd egs/x/y && ./run.sh --nj 2\nscripts/quiet.sh a b\n"
                    "VAR=1 python pyscripts/none.py \\\n    --x 1\necho scripts/not_run.sh\n```\n")
    links = link_problems(page)
    assert len(links) == 3 and "gone.md" in links[0] and "gone.png" in links[1], links
    assert "anchor" in links[2], links
    paths = inline_path_problems(page, root=tmp_path)
    assert len(paths) == 1 and "scripts/missing.sh" in paths[0], paths
    found = commands(page, root=tmp_path)
    assert [(cwd.relative_to(tmp_path).as_posix(), script) for _, cwd, script in found] == [
        ("egs/x/y", "./run.sh"), ("egs/x/y", "scripts/quiet.sh"),
        ("egs/x/y", "pyscripts/none.py")], found
    env = environment()
    assert "does not exist" in help_problem(tmp_path / "egs/x/y", "./run.sh", env)
    assert "printed no usage" in help_problem(tmp_path, "scripts/quiet.sh", env)
