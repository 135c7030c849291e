"""Every command README.md and docs/ show (issue 32 item 1): each ``dinomask`` line names a command
that exists and options that command takes; the concrete ones run, on the repository's data and a
tiny random model, with the document's file names standing for fixtures of the same kind; the
README's example runs as written. A line that needs a camera, a display or a server that stays up
is said to (:func:`needs`) and checked for its options only.

A new documented line that is neither runnable here nor marked fails
:func:`test_every_concrete_documented_command_is_run_or_marked`, so no page can grow a command
that was never tried."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```")
COMMENT = re.compile(r"\s+#(\s.*)?$")


@dataclass(frozen=True)
class DocLine:
    page: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def documented_lines() -> list[DocLine]:
    """The shell lines of every fenced block of README.md and docs/*.md that run ``dinomask``
    (continuations joined, trailing comments cut)."""
    lines: list[DocLine] = []
    for page in PAGES:
        inside, pending, start = False, "", 0
        for number, raw in enumerate(page.read_text().splitlines(), 1):
            if FENCE.match(raw):
                inside, pending = not inside, ""
                continue
            if not inside:
                continue
            text = raw.strip()
            if not pending:
                start = number
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            text = COMMENT.sub("", pending + text).strip()
            pending = ""
            if text.startswith("dinomask "):
                lines.append(DocLine(page.relative_to(ROOT).as_posix(), start, " ".join(text.split())))
    return lines


#: The documents' example names that the suite has a stand-in for (:func:`stand_ins`).
STAND_INS = ("mug.npz", "ref.npz", "clip.mp4", "./sam-vit-base", "YOUR_DATA", "dinov2_vits14_reg", "run_2026_12_03/",
             "camera.mcap", "old.bag")


def is_synopsis(text: str) -> bool:
    """A line that shows a command's shape ([optional] parts, A|B choices, PLACEHOLDERS...),
    not one to paste."""
    bare = " ".join(w for w in text.split() if w not in STAND_INS)
    return any(mark in bare for mark in ("[", "...", "|")) or re.search(r"\b[A-Z][A-Z_]{2,}\b", bare) is not None


#: What a concrete line needs that the suite has not: checked for its options only.
NEEDS = {
    "--source 0": "a camera",
    "dinomask serve": "a server that stays up (its routes are tested in tests/serve)",
    "--rerun": "a Rerun viewer on a display (a bare --rerun spawns one; tests/test_rerun_view.py records to a file)",
    "--compare u2netp": "rembg's u2netp weights, which rembg downloads (tests/evaluate mock the download)",
}


def needs(text: str) -> str | None:
    for mark, what in NEEDS.items():
        if re.search(re.escape(mark) + r"(\s|$)", text):
            return what
    return None


def _command_for(words: list[str]):
    """The click command a documented line runs, and the words after its name; several with A|B."""
    import typer.main

    from dinomask.cli.app import app

    group = typer.main.get_command(app)
    commands, rest = [group], list(words)
    while rest and hasattr(commands[0], "commands"):
        names = rest[0].split("|")
        found = [commands[0].commands.get(name) for name in names]
        if not all(found):
            break
        commands, rest = found, rest[1:]
    return commands, rest


def test_the_documented_lines_are_found():
    lines = documented_lines()
    pages = {line.page for line in lines}
    assert len(lines) >= 30 and {"README.md", "docs/robotics.md", "docs/evaluation.md", "docs/refine.md"} <= pages
    assert not [line for line in lines if "\\" in line.text or "#" in line.text.split("--background")[0]]


def test_every_documented_command_exists_and_takes_the_options_it_shows():
    wrong = []
    for line in documented_lines():
        commands, rest = _command_for(line.text.split()[1:])
        if any(hasattr(c, "commands") and not (rest and rest[0].startswith("-")) for c in commands):
            wrong.append(f"{line}  <- no such command")
            continue
        shown = {m.group(1) for word in rest for m in [re.match(r"^\[?(--?[A-Za-z][\w-]*)", word)] if m}
        for command in commands:
            takes = {opt for p in command.params for opt in (*p.opts, *getattr(p, "secondary_opts", []))} | {"--help"}
            unknown = sorted(shown - takes)
            if unknown:
                wrong.append(f"{line}  <- {command.name} takes no {', '.join(unknown)}")
    assert not wrong, "documented commands that do not match the CLI:\n" + "\n".join(wrong)


# ------------------------------------------------------------------ running them


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory, davis, tiny_model_dir, tiny_refiner_dir):
    """The documents' file names, each replaced by a file of the same kind made here."""
    from dinomask.cli import main
    from dinomask.preprocess import load_image
    from tests.test_bags import _bag, _typestore, image_message, write_bag

    work = tmp_path_factory.mktemp("docs")
    frames = [load_image(p) for p in sorted((davis / "JPEGImages/480p/dog").glob("*.jpg"))[:3]]
    reference = work / "mug.npz"
    assert main(["reference", str(davis / "JPEGImages/480p/dog/00000.jpg"), "--mask",
                 str(davis / "Annotations/480p/dog/00000.png"), "-o", str(reference), "--model", str(tiny_model_dir)]) == 0
    clip = work / "clip.mp4"
    import cv2

    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 24, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    for folder in ("ros2", "ros1"):
        (work / folder).mkdir()
    ros2 = _bag(work / "ros2", frames, "sqlite")
    ros1 = _bag(work / "ros1", frames, "ros1")
    store = _typestore(False)
    mcap_folder = write_bag(work / "camera_bag", {"/camera/color/image_raw": (
        "sensor_msgs/msg/Image", [image_message(store, f, i) for i, f in enumerate(frames)])}, "mcap")
    mcap = work / "camera.mcap"
    shutil.move(str(next(mcap_folder.glob("*.mcap"))), mcap)
    made = {
        "mug.npz": reference, "ref.npz": reference, "clip.mp4": clip, "./sam-vit-base": tiny_refiner_dir,
        "YOUR_DATA": davis, "dinov2_vits14_reg": tiny_model_dir, "run_2026_12_03/": ros2, "camera.mcap": mcap,
        "old.bag": ros1,
    }
    assert set(made) == set(STAND_INS)
    return made


def _substituted(text: str, stand_ins: dict[str, Path], out: Path) -> list[str]:
    words = []
    previous = ""
    for word in text.split()[1:]:
        if word in stand_ins:
            word = str(stand_ins[word])
        elif previous in ("-o", "--output"):
            word = str(out / word)
        words.append(word)
        previous = word
    return words


def runnable_lines() -> list[DocLine]:
    return [line for line in documented_lines() if not is_synopsis(line.text) and needs(line.text) is None]


def test_every_concrete_documented_command_is_run_or_marked():
    """Every line that is not a synopsis either runs below or says what it needs."""
    concrete = [line for line in documented_lines() if not is_synopsis(line.text)]
    assert concrete and all(line in runnable_lines() or needs(line.text) for line in concrete)
    assert len(runnable_lines()) >= 5


@pytest.mark.parametrize("line", runnable_lines(), ids=str)
def test_a_documented_command_runs(line, stand_ins, tmp_path, monkeypatch, capsys):
    from dinomask.cli import main

    monkeypatch.chdir(tmp_path)
    words = _substituted(line.text, stand_ins, tmp_path)
    code = main(words)
    printed = capsys.readouterr()
    assert code == 0, f"{line}\nran: dinomask {' '.join(words)}\n{printed.out[-2000:]}\n{printed.err[-2000:]}"
    outputs = [Path(w) for w in words if w.startswith(str(tmp_path))]
    assert all(p.exists() for p in outputs), f"{line}: no output written"
    assert outputs or printed.out.strip(), f"{line}: printed nothing"


def test_the_readme_example_runs_as_written(tmp_path, tiny_model_dir):
    """``bash examples/run.sh`` (the README's first command, after setup): a reference and the
    background removed from the example's frames, on a tiny model named by DINOMASK_MODEL."""
    if not (ROOT / ".venv" / "bin" / "activate").exists():
        pytest.skip("examples/run.sh activates the .venv that scripts/setup.sh makes")
    env = {**os.environ, "DINOMASK_MODEL": str(tiny_model_dir), "OUT": str(tmp_path / "example"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["bash", str(ROOT / "examples" / "run.sh")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    removed = sorted((tmp_path / "example" / "removed").glob("*.png"))
    assert len(removed) == len(list((ROOT / "examples" / "dog" / "frames").glob("*.jpg"))) > 0
    assert len(sorted((tmp_path / "example" / "heatmaps").glob("*.png"))) == len(removed)


def test_the_robotics_read_back_snippet_reads_the_masks_remove_wrote(stand_ins, tmp_path, monkeypatch, capsys):
    """docs/robotics.md's Python block, run as written on the bag its own command writes."""
    from dinomask.cli import main

    page = (ROOT / "docs" / "robotics.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    snippet = next(b for b in blocks if "run_2026_12_03_masks" in b)
    monkeypatch.chdir(tmp_path)
    assert main(["remove", "--ref", str(stand_ins["mug.npz"]), str(stand_ins["run_2026_12_03/"]),
                 "-o", "run_2026_12_03_masks"]) == 0
    capsys.readouterr()
    exec(compile(snippet, "docs/robotics.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(0.0 <= float(line.split()[-1]) <= 1.0 for line in lines), lines
