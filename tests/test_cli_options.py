"""Every hint names options that exist where it is printed, and the same option has the same short form.

The hint walk is static: every string literal in dat_deploy/ that mentions `--option` (messages,
help texts, notes) is attributed to the commands that can print it, and the option must be one of
theirs. A mention inside "dat-deploy <cmd> ..." is checked against <cmd> instead. Commands reach a
library module through the imports in their function bodies and the modules' top-level imports,
which over-approximates; the few mentions reachable only through functions a command never calls
are listed in NOT_PRINTED_BY with the reason.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections import defaultdict
from pathlib import Path

import typer.main
from import_graph import imported_modules, module_file

from dat_deploy.commands._app import app
import dat_deploy.cli  # noqa: F401  (registers the commands)

PACKAGE = Path(dat_deploy.cli.__file__).parent
GROUP = typer.main.get_command(app)
OPTIONS = {name: {o for p in cmd.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
           for name, cmd in GROUP.commands.items()}

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
OUR_COMMAND = re.compile(r"dat-deploy ([a-z0-9-]+)([^`'\"\n;)]*)")
OTHER_PROGRAM = re.compile(r"\b(pip|docker|nvidia-smi|nvcc|g\+\+|cmake|tritonserver|trtexec|python)\b[^`'\"\n;)]*")

# (module, option, command): mentions the import graph attributes to a command that never prints them.
NOT_PRINTED_BY = {
    # load_weights' "use --variant <guess>": validate passes the variant its artifact recorded with the
    # weights whose sha256 the artifact recorded, so a mismatch cannot reach it.
    ("dat_deploy.model", "--variant", "validate"),
    # RANDOM_WEIGHTS_NOTICE and the checkpoint errors: info and variants build no model.
    ("dat_deploy.model", "--weights", "info"),
    ("dat_deploy.model", "--weights", "variants"),
    ("dat_deploy.model", "--variant", "variants"),
    ("dat_deploy.model.checkpoint", "--weights", "info"),
    ("dat_deploy.model.checkpoint", "--weights", "variants"),
    # "already exists. Pass --overwrite": validate writes its report with overwrite=True; profile refuses
    # existing report files up front with its own message (profiling/pipeline.py).
    ("dat_deploy.atomic", "--overwrite", "validate"),
    ("dat_deploy.atomic", "--overwrite", "profile"),
    ("dat_deploy.export.repository", "--overwrite", "validate"),  # validate writes no model folder
}


def _reached_modules(callback) -> set[str]:
    body = ast.parse(inspect.getsource(callback).lstrip())
    todo = list(imported_modules(ast.walk(body), callback.__module__))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        tree = ast.parse(module_file(module).read_text())
        todo += imported_modules([n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], module)
    return seen


def _strings(tree) -> list[tuple[int, str]]:
    """Prose string literals (f-strings with their holes as {}), docstrings and bare option tokens left out."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found = []
    for node in ast.walk(tree):
        if id(node) in parts:
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        else:
            continue
        if " " in text.strip():  # "--output" alone declares an option or builds an argv; hints are prose
            found.append((node.lineno, text))
    return found


def _violations(module: str, tree, commands: set[str]) -> list[str]:
    bad = []
    for line, text in _strings(tree):
        for match in OUR_COMMAND.finditer(text):
            target = match.group(1)
            for option in OPTION.findall(match.group(2)):
                if target in OPTIONS and option not in OPTIONS[target]:
                    bad.append(f"{module}:{line}: `dat-deploy {target}` has no {option}")
        prose = OTHER_PROGRAM.sub("", OUR_COMMAND.sub("", text))
        for option in OPTION.findall(prose):
            for command in sorted(commands):
                if option not in OPTIONS[command] and (module, option, command) not in NOT_PRINTED_BY:
                    bad.append(f"{module}:{line}: {command} has no {option}: {text[:90]!r}")
    return bad


def test_every_hint_names_an_option_of_the_command_that_prints_it():
    reached: dict[str, set[str]] = defaultdict(set)
    bad = []
    for name, command in GROUP.commands.items():
        callback = command.callback
        # A command module's strings count for the command whose function holds them.
        bad += _violations(callback.__module__, ast.parse(inspect.getsource(callback).lstrip()), {name})
        for module in _reached_modules(callback):
            if not module.startswith("dat_deploy.commands"):
                reached[module].add(name)
    helpers = ast.parse((PACKAGE / "commands" / "common.py").read_text())
    bad += _violations("dat_deploy.commands.common", helpers, {"export", "validate"})
    for module, commands in sorted(reached.items()):
        bad += _violations(module, ast.parse(module_file(module).read_text()), commands)
    assert not bad, "\n".join(bad)


def test_the_walk_sees_hints_in_library_modules():
    """The walk is only worth something if it reads the messages: a known hint must be found and attributed."""
    tree = ast.parse(module_file("dat_deploy.atomic").read_text())
    texts = [text for _, text in _strings(tree)]
    assert any("--overwrite" in t for t in texts)
    assert _violations("dat_deploy.atomic", ast.parse('raise UserError("choose another --name")'), {"visualize"})


def test_the_same_long_option_has_the_same_short_option_everywhere():
    shorts: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    longs_of_short: dict[str, set[str]] = defaultdict(set)
    for command in GROUP.commands.values():
        for param in command.params:
            opts = [*getattr(param, "opts", [])]
            long = [o for o in opts if o.startswith("--")]
            short = tuple(sorted(o for o in opts if not o.startswith("--")))
            for name in long:
                shorts[name].add(short)
            for s in short:
                longs_of_short[s] |= set(long)
    mixed = {name: forms for name, forms in shorts.items() if len(forms) > 1}
    assert not mixed, f"options spelled with different short forms across commands: {mixed}"
    reused = {s: longs for s, longs in longs_of_short.items() if len(longs) > 1}
    assert not reused, f"one short option for different things: {reused}"
    for name in ("--variant", "--weights", "--output"):  # the README's examples rely on these
        assert shorts[name] == {(dict(variant="-v", weights="-w", output="-o")[name[2:]],)}
