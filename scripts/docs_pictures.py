"""Regenerates the pictures the docs show, from real runs on the embedded synthetic world.

    python scripts/docs_pictures.py          # writes docs/pictures/*

- ``quickstart.gif``: the scripted oracle chopping a tree in the synthetic world, with the
  ``--overlay`` caption (instruction, tick, outcome, inventory changes), as ``steve1-env run``
  records it; frames are sampled from the H.264 video and written as an animated GIF.
- ``heat-map.svg``: the heat map of a ``paper``-protocol report (scripted oracle against its
  unconditional baseline), cut out of the run's ``report.html``: the page's own SVG.
- ``report.png``: the top of an evaluation report with videos (``quick_harvest``, scripted
  oracle, ``--video --overlay``), as headless Chromium shows it (needs ``chromium``).

Both come from seeded runs, so running the script again gives the same pictures.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
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


def report_png(folder: Path) -> Path:
    """Runs a short evaluation with videos and screenshots its report in headless Chromium."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("report.png needs Chromium (Debian: apt-get install chromium)")
    run = folder / "report"
    _cli(
        "eval", "--task-set", "quick_harvest", "--policy", "scripted", "--trials", "2",
        "--video", "--overlay", "--out", str(run), "--quiet",
    )  # fmt: skip
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(run))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = PICTURES / "report.png"
    try:
        subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={folder / 'profile'}", "--hide-scrollbars",
                "--virtual-time-budget=5000", "--window-size=1100,2000",
                f"--screenshot={target}",
                f"http://127.0.0.1:{server.server_address[1]}/report.html",
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        server.shutdown()
    return target


def main() -> None:
    """Writes every picture into docs/pictures/."""
    PICTURES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for make in (quickstart_gif, heat_map_svg, report_png):
            print(f"wrote {make(Path(scratch))}")


if __name__ == "__main__":
    main()
