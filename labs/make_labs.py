"""Build the student and solution versions of the labs, check that they are up to date, and grade submissions.

One source notebook per lab lives in ``labs/src/``. Inside its code cells, solution code sits between markers::

    def forward(params, X):
        ### BEGIN SOLUTION
        ### HINT: a1 = X @ W1 + b1, then tanh; a2 = h @ W2 + b2, then the sigmoid.
        a1 = X @ params["W1"] + params["b1"]
        ...
        ### END SOLUTION
        return p, {"X": X, "h": h, "p": p}

* ``labs/solution/<lab>.ipynb`` keeps the solution and drops the marker and hint lines;
* ``labs/student/<lab>.ipynb`` replaces each block by ``raise NotImplementedError("<hint>")`` at the marker's
  indentation.

Every exercise cell (a code cell with at least one solution block) must be followed by a check cell, a code cell whose
first line is ``### CHECK <id>: <title>``, before the next exercise cell. Check cells call a function of
``labs/labcheck.py``; they are kept as they are in both versions and are write-protected in the student version.
Both versions are written without outputs, with the kernel ``python3``, and a copy of ``labcheck.py`` is put next to
them so that ``labs/student/`` can be handed out as one folder.

Usage::

    python labs/make_labs.py                    # (re)generate labs/student and labs/solution
    python labs/make_labs.py --check            # exit 1 if a source is malformed or a generated file is stale
    python labs/make_labs.py --grade SUB.ipynb [SUB2.ipynb ...] [--fast] [--timeout 600] [--csv marks.csv]

``--grade`` runs each submission on a fresh kernel in a temporary folder with the instructor's ``labcheck.py`` and
the instructor's check cells (a student cannot weaken a check by editing it), then prints one line per exercise.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABS_DIR = Path(__file__).resolve().parent
SRC_DIR = LABS_DIR / "src"
OUT_DIRS = {"student": LABS_DIR / "student", "solution": LABS_DIR / "solution"}
CHECK_MODULE = LABS_DIR / "labcheck.py"

BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
HINT = re.compile(r"^[ \t]*### HINT:\s?(?P<text>.*?)\s*$")
CHECK = re.compile(r"^### CHECK (?P<id>[A-Za-z0-9_.-]+)\s*:?\s*(?P<title>.*?)\s*$")
DEFAULT_HINT = "see the exercise text above"
KERNEL_INFO = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


class LabFormatError(ValueError):
    """A source notebook breaks the lab format; the message names the file, the cell and the fix."""


@dataclass
class Block:
    indent: str
    hint: str
    code: list[str]


Notebook = dict[str, Any]  # a notebook as its JSON (nbformat v4); nbformat itself is only imported to execute


@dataclass
class Lab:
    name: str
    path: Path
    nb: Notebook
    checks: list[tuple[str, str]] = field(default_factory=list)  # (id, title) in notebook order
    n_exercises: int = 0


# ----------------------------------------------------------------------------------------------------------------------
# Parsing and rendering
# ----------------------------------------------------------------------------------------------------------------------

def check_id(source: str) -> tuple[str, str] | None:
    """``(id, title)`` when the cell's first line is a ``### CHECK <id>: <title>`` marker, else ``None``."""
    first = source.lstrip("\n").split("\n", 1)[0]
    m = CHECK.match(first)
    return (m["id"], m["title"]) if m else None


def split_blocks(source: str, where: str) -> list[str | Block]:
    """Split a code cell into plain lines and solution blocks; raise LabFormatError on unbalanced markers."""
    parts: list[str | Block] = []
    block: Block | None = None
    for no, line in enumerate(source.split("\n"), 1):
        if m := BEGIN.match(line):
            if block is not None:
                raise LabFormatError(f"{where}, line {no}: BEGIN SOLUTION inside another solution block; "
                                     f"close the first one with ### END SOLUTION")
            block = Block(m["indent"], "", [])
        elif END.match(line):
            if block is None:
                raise LabFormatError(f"{where}, line {no}: END SOLUTION without a matching ### BEGIN SOLUTION")
            block.hint = block.hint or DEFAULT_HINT
            parts.append(block)
            block = None
        elif block is not None and (m := HINT.match(line)):
            block.hint = f"{block.hint} {m['text']}".strip()
        elif block is not None:
            block.code.append(line)
        elif HINT.match(line):
            raise LabFormatError(f"{where}, line {no}: a ### HINT line outside a solution block; move it between "
                                 f"### BEGIN SOLUTION and ### END SOLUTION")
        else:
            parts.append(line)
    if block is not None:
        raise LabFormatError(f"{where}: a solution block is not closed; add ### END SOLUTION")
    return parts


def render_source(parts: list[str | Block], version: str) -> str:
    lines: list[str] = []
    for part in parts:
        if isinstance(part, str):
            lines.append(part)
        elif version == "solution":
            lines.extend(part.code)
        else:
            lines.append(f"{part.indent}raise NotImplementedError({json.dumps(part.hint, ensure_ascii=False)})")
    return "\n".join(lines)


def text(source: str | list[str]) -> str:
    """A cell's source as one string (the JSON may hold a list of lines)."""
    return source if isinstance(source, str) else "".join(source)


def lines(source: str) -> list[str]:
    """A source string as the list of lines that nbformat writes."""
    return source.splitlines(keepends=True)


def read_notebook(path: Path) -> Notebook:
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise LabFormatError(f"{path} is not a readable notebook ({err})") from err
    if nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise LabFormatError(f"{path} is not an nbformat-4 notebook; save it with Jupyter 4 or later")
    for cell in nb["cells"]:
        cell["source"] = text(cell.get("source", ""))
        cell.setdefault("metadata", {})
    return nb


def read_lab(path: Path) -> Lab:
    """Read and validate one source notebook."""
    nb = read_notebook(path)
    lab = Lab(path.stem, path, nb)
    pending: int | None = None  # index of the last exercise cell not yet followed by a check
    seen: set[str] = set()
    for i, cell in enumerate(nb["cells"]):
        where = f"{path.name}, cell {i}"
        if cell["cell_type"] != "code":
            continue
        found = check_id(cell["source"])
        parts = split_blocks(cell["source"], where)
        has_solution = any(isinstance(p, Block) for p in parts)
        if found:
            if has_solution:
                raise LabFormatError(f"{where}: a check cell cannot hold a solution block; put the exercise in the "
                                     f"cell above it")
            if found[0] in seen:
                raise LabFormatError(f"{where}: check id {found[0]!r} is used twice; give every check its own id")
            seen.add(found[0])
            lab.checks.append(found)
            pending = None
        elif has_solution:
            if pending is not None:
                raise LabFormatError(f"{path.name}, cell {pending}: the exercise is not followed by a check cell "
                                     f"(a code cell starting with '### CHECK <id>: <title>') before cell {i}")
            pending = i
            lab.n_exercises += 1
    if pending is not None:
        raise LabFormatError(f"{path.name}, cell {pending}: the last exercise is not followed by a check cell")
    if not lab.checks:
        raise LabFormatError(f"{path.name}: a lab needs at least one exercise and one check cell")
    return lab


def render(lab: Lab, version: str) -> Notebook:
    """The ``student`` or ``solution`` notebook of ``lab``: outputs stripped, kernel python3, cells tagged."""
    cells = []
    for i, src_cell in enumerate(lab.nb["cells"]):
        kind, source = src_cell["cell_type"], src_cell["source"]
        cell: dict[str, Any] = {"cell_type": kind, "id": src_cell.get("id") or f"{lab.name}-{i:03d}", "metadata": {}}
        if kind == "code":
            parts = split_blocks(source, f"{lab.path.name}, cell {i}")
            found = check_id(source)
            if found:
                cell["metadata"] = {"tags": ["check"], "dgmlab": {"check": found[0]}}
                if version == "student":
                    cell["metadata"].update({"editable": False, "deletable": False})
            elif any(isinstance(p, Block) for p in parts):
                cell["metadata"] = {"tags": ["exercise"]}
            cell.update({"execution_count": None, "outputs": [], "source": lines(render_source(parts, version))})
        else:
            cell["source"] = lines(source)
            if kind == "markdown" and src_cell.get("attachments"):
                cell["attachments"] = src_cell["attachments"]
        cells.append(cell)
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": dict(KERNEL_INFO), "language_info": {"name": "python"},
                         "dgmlab": {"lab": lab.name, "version": version}}}


def dumps(nb: Notebook) -> str:
    """JSON text as nbformat writes it (sorted keys, indent 1), so that Jupyter saves cause no spurious diffs."""
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def source_paths(names: list[str] | None = None) -> list[Path]:
    paths = sorted(SRC_DIR.glob("*.ipynb"))
    if names:
        by_name = {p.stem: p for p in paths}
        unknown = [n for n in names if Path(n).stem not in by_name]
        if unknown:
            raise SystemExit(f"unknown lab(s) {unknown}; available: {sorted(by_name)}")
        paths = [by_name[Path(n).stem] for n in names]
    if not paths:
        raise SystemExit(f"no source notebooks in {SRC_DIR}")
    return paths


def shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (for messages)."""
    try:
        return str(path.relative_to(LABS_DIR.parent))
    except ValueError:
        return str(path)


def outputs_present(nb: Notebook) -> bool:
    return any(c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count")) for c in nb["cells"])


def expected_files(labs: list[Lab]) -> dict[Path, str]:
    files = {}
    module = CHECK_MODULE.read_text(encoding="utf-8")
    for version, folder in OUT_DIRS.items():
        files[folder / CHECK_MODULE.name] = module
        for lab in labs:
            files[folder / f"{lab.name}.ipynb"] = dumps(render(lab, version))
    return files


def generate(names: list[str] | None = None, check: bool = False) -> int:
    """Write (or with ``check`` only compare) the generated files; return the number of problems found."""
    labs = [read_lab(p) for p in source_paths(names)]
    problems = 0
    for lab in labs:
        if outputs_present(lab.nb):
            msg = (f"{shown(lab.path)} holds outputs; clear them (Jupyter: Edit > Clear Outputs "
                   f"of All Cells) before committing")
            if check:
                print(f"ERROR: {msg}")
                problems += 1
            else:
                print(f"warning: {msg}")
    for path, text in expected_files(labs).items():
        rel = shown(path)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            print(f"ERROR: {rel} is {'missing' if current is None else 'out of date'}; run python labs/make_labs.py")
            problems += 1
        else:
            write_atomic(path, text)
            print(f"wrote {rel}")
    if not problems:
        for lab in labs:
            print(f"{lab.name}: {lab.n_exercises} exercises, checks {', '.join(c for c, _ in lab.checks)}")
    return problems


# ----------------------------------------------------------------------------------------------------------------------
# Executing and grading
# ----------------------------------------------------------------------------------------------------------------------

def execute_notebook(nb, cwd: Path, allow_errors: bool = False, timeout: int = 600,
                     env: dict[str, str] | None = None):
    """Run ``nb`` (a dict or NotebookNode) top to bottom on a fresh ``python3`` kernel with working directory ``cwd``;
    return the executed ``nbformat.NotebookNode``.

    ``env`` entries are added to this process' environment for the kernel (e.g. ``{"DGMLAB_FAST": "1"}``).
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.from_dict(copy.deepcopy(dict(nb)))
    for cell in nb.cells:
        cell.source = text(cell.source)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(cwd)}})
    client.execute(env={**os.environ, **(env or {})})
    return nb


def error_of(cell) -> tuple[str, str] | None:
    """``(ename, evalue)`` of the first error output of an executed code cell, else ``None``."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", ""), out.get("evalue", "")
    return None


def cell_check_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("dgmlab", {})
    if isinstance(meta, dict) and meta.get("check"):
        return str(meta["check"])
    found = check_id(text(cell.get("source", ""))) if cell.get("cell_type") == "code" else None
    return found[0] if found else None


@dataclass
class Result:
    exercise: str
    title: str
    status: str  # PASS, FAIL, MISSING
    message: str = ""


def identify_lab(nb: Notebook, path: Path) -> Path:
    meta = nb.get("metadata", {}).get("dgmlab")
    name = meta.get("lab") if isinstance(meta, dict) else None
    candidates = {p.stem: p for p in source_paths()}
    for key in (name, path.stem):
        if key in candidates:
            return candidates[key]
    for stem, src in candidates.items():  # e.g. "lab01_backprop (1).ipynb" or "alice_lab01_backprop.ipynb"
        if stem in path.stem:
            return src
    raise SystemExit(f"cannot tell which lab {path} is; name it like one of {sorted(candidates)} or keep the "
                     f"notebook metadata written by make_labs.py")


def prepare_submission(sub: Notebook, lab: Lab) -> tuple[Notebook, set[str]]:
    """The submission with every check cell restored to the instructor's version; also the ids that were found."""
    reference = {cell_check_id(c): c for c in render(lab, "solution")["cells"] if cell_check_id(c)}
    sub = copy.deepcopy(sub)
    sub.setdefault("metadata", {})["kernelspec"] = dict(KERNEL_INFO)
    found = set()
    for cell in sub["cells"]:
        cid = cell_check_id(cell)
        if cid in reference and cell["cell_type"] == "code":
            cell.update(source=reference[cid]["source"], outputs=[], execution_count=None)
            found.add(cid)
    return sub, found


def grade_one(path: Path, timeout: int = 600, fast: bool = False) -> tuple[str, list[Result], int]:
    """Execute one submission; return the lab name, one Result per check and the number of other failing cells."""
    sub = read_notebook(path)
    lab = read_lab(identify_lab(sub, path))
    prepared, found = prepare_submission(sub, lab)
    with tempfile.TemporaryDirectory(prefix="dgmlab-grade-") as tmp:
        shutil.copy(CHECK_MODULE, Path(tmp) / CHECK_MODULE.name)
        env = {"DGMLAB_FAST": "1"} if fast else {}
        executed = execute_notebook(prepared, Path(tmp), allow_errors=True, timeout=timeout, env=env)
    errors = {cell_check_id(c): error_of(c) for c in executed.cells if cell_check_id(c)}
    other = sum(1 for c in executed.cells if c.cell_type == "code" and not cell_check_id(c) and error_of(c))
    results = []
    for cid, title in lab.checks:
        if cid not in found:
            results.append(Result(cid, title, "MISSING", "the check cell was deleted from the submission"))
        elif errors.get(cid):
            ename, evalue = errors[cid]
            results.append(Result(cid, title, "FAIL", f"{ename}: {evalue}".strip()))
        else:
            results.append(Result(cid, title, "PASS"))
    return lab.name, results, other


def print_table(path: Path, lab: str, results: list[Result], other: int, width: int = 100) -> None:
    passed = sum(r.status == "PASS" for r in results)
    print(f"\n{path}  ({lab}): {passed}/{len(results)} checks passed")
    print(f"  {'exercise':<9} {'result':<8} {'title / message'}")
    for r in results:
        message = re.sub(rf"^(AssertionError: )?Exercise {re.escape(r.exercise)}:? ", "", " ".join(r.message.split()))
        if message.startswith("is not implemented yet"):
            message = "not implemented yet"
        text = r.title if r.status == "PASS" else f"{r.title}: {message}"
        print(f"  {r.exercise:<9} {r.status:<8} {text[:width] + ('...' if len(text) > width else '')}")
    if other:
        print(f"  ({other} other cell(s) raised errors, e.g. cells that use an unfinished exercise)")


def grade(paths: list[Path], timeout: int, fast: bool, csv_path: Path | None) -> int:
    all_passed = True
    rows = []
    for path in paths:
        if not path.exists():
            raise SystemExit(f"no such submission: {path}")
        start = time.time()
        lab, results, other = grade_one(path, timeout=timeout, fast=fast)
        print_table(path, lab, results, other)
        print(f"  graded in {time.time() - start:.1f} s")
        all_passed &= all(r.status == "PASS" for r in results)
        rows += [[str(path), lab, r.exercise, r.status, r.message] for r in results]
    if csv_path:
        new = not csv_path.exists()
        with open(csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["submission", "lab", "exercise", "status", "message"])
            writer.writerows(rows)
        print(f"\nappended {len(rows)} rows to {csv_path}")
    return 0 if all_passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("labs", nargs="*", help="lab names (default: every notebook in labs/src)")
    parser.add_argument("--check", action="store_true", help="only check that sources are valid and outputs current")
    parser.add_argument("--grade", nargs="+", type=Path, metavar="SUBMISSION",
                        help="execute submitted notebooks and print a pass/fail table per exercise")
    parser.add_argument("--fast", action="store_true", help="grade with DGMLAB_FAST=1 (small loops)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell when grading")
    parser.add_argument("--csv", type=Path, help="append the grading results to this CSV file")
    args = parser.parse_args(argv)
    try:
        if args.grade:
            return grade(args.grade, args.timeout, args.fast, args.csv)
        return 1 if generate(args.labs, check=args.check) else 0
    except LabFormatError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
