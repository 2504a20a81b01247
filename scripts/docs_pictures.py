"""Regenerates the pictures the docs show, from real runs on the embedded synthetic world.

    python scripts/docs_pictures.py          # writes docs/pictures/*

- ``quickstart.gif``: the scripted oracle chopping a tree in the synthetic world, with the
  ``--overlay`` caption (instruction, tick, outcome, inventory changes), as ``steve1-env run``
  records it; frames are sampled from the H.264 video and written as an animated GIF.
- ``heat-map.svg``: the heat map of a ``paper``-protocol report (scripted oracle against its
  unconditional baseline), cut out of the run's ``report.html``: the page's own SVG.

Both come from seeded runs, so running the script again gives the same pictures.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

PICTURES = Path(__file__).resolve().parent.parent / "docs" / "pictures"
GIF_WIDTH = 320
GIF_FRAME_STEP = 1  # every tick, played at half speed so the caption can be read


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "steve1_env.cli", *args], check=True)


def quickstart_gif(folder: Path) -> Path:
    """Records the oracle chopping a tree and turns its captioned video into a GIF."""
    video = folder / "chop.mp4"
    _cli(
        "run", "chop a tree", "--policy", "scripted", "--seed", "3", "--k", "20",
        "--video", str(video), "--overlay",
    )  # fmt: skip
    frames = []
    with av.open(str(video)) as source:
        for index, frame in enumerate(source.decode(video=0)):
            if index % GIF_FRAME_STEP == 0:
                height = round(frame.height * GIF_WIDTH / frame.width / 2) * 2
                frames.append(frame.to_ndarray(width=GIF_WIDTH, height=height, format="rgb24"))
    target = PICTURES / "quickstart.gif"
    with av.open(str(target), "w", format="gif") as out:
        stream = out.add_stream("gif", rate=10)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "rgb8"
        for array in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array))))
        out.mux(stream.encode(None))
    return target


def heat_map_svg(folder: Path) -> Path:
    """Runs the paper protocol (short horizon) and saves its report's heat map."""
    run = folder / "paper"
    _cli(
        "eval", "--task-set", "paper", "--horizon", "300", "--baseline", "both",
        "--policy", "scripted", "--out", str(run), "--quiet",
    )  # fmt: skip
    page = (run / "report.html").read_text(encoding="utf-8")
    found = [svg for svg in re.findall(r"<svg.*?</svg>", page, re.S) if "heat-cell" in svg]
    if not found:
        raise SystemExit("the report has no heat map; was the run a fixed-horizon one?")
    svg = found[0]
    if "xmlns=" not in svg.split(">", 1)[0]:  # a standalone file needs the namespace
        svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)
    target = PICTURES / "heat-map.svg"
    target.write_text(svg + "\n", encoding="utf-8")
    return target


def main() -> None:
    """Writes every picture into docs/pictures/."""
    PICTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for make in (quickstart_gif, heat_map_svg):
            print(f"wrote {make(Path(scratch))}")


if __name__ == "__main__":
    main()
