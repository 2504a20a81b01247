"""The report's videos play in a real browser: headless Chromium on a loopback server.

Skipped where no Chromium is installed (``apt-get install chromium`` on Debian). The check is
what the docs' manual check does: the report opened in the browser, its first video loaded
(``readyState >= 2``) and ``canPlayType`` of H.264 Constrained Baseline answered.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading

import pytest

from steve1_env.evaluation.runner import evaluate
from steve1_env.evaluation.trial import RunSettings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here (apt-get install chromium)"
)

# The report has no scripts of its own: this page opens it in a same-origin frame and writes
# the first video's state where --dump-dom shows it. The handler is defined before the frame
# and attached as its onload attribute, and reads a video that is ready already: waiting for
# an event that had fired before (or reloading the video) left the page at "waiting" in about
# one run in three.
HARNESS = """<!doctype html><html><head><script>
function check(frame) {
  const out = document.getElementById("out");
  const page = frame.contentDocument;
  if (!page || page.URL === "about:blank") return;  // the frame's initial document
  const video = page.querySelector("video");
  if (!video) { out.textContent = "no video"; return; }
  const can = video.canPlayType('video/mp4; codecs="avc1.42E01E"');
  const show = () => {
    out.textContent = `readyState=${video.readyState} canPlayType=${can} ` +
      `error=${video.error ? video.error.code : "none"}`;
  };
  // A video delays its document's load until it has data, so it may be ready already.
  if (video.readyState >= 2 || video.error) { show(); return; }
  video.addEventListener("loadeddata", show);
  video.addEventListener("error", show);
  video.preload = "auto";
  if (video.readyState === 0) video.load();
}
</script></head><body><pre id="out">waiting</pre>
<iframe id="report" src="report.html" width="1200" height="800" onload="check(this)"></iframe>
</body></html>"""

# Chromium as root on a closed network: no sandbox, no GPU, no calls home.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_report_video_plays_in_headless_chromium(tmp_path):
    run = tmp_path / "run"
    settings = RunSettings(
        policy="scripted", prompt_encoder="hash", world_kwargs={"size": 48},
        video_dir=str(run / "videos"),
    )  # fmt: skip
    evaluate("quick_harvest", run, settings, trials=1, tasks=["dirt"], progress=False)
    (run / "_browser_check.html").write_text(HARNESS)
    handler = functools.partial(_Quiet, directory=str(run))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/_browser_check.html"
        dom = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=10000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120, check=False,
        ).stdout  # fmt: skip
    finally:
        server.shutdown()
    state = re.search(r"readyState=(\d) canPlayType=(\w*) error=(\w+)", dom)
    assert state is not None, dom[-2000:]
    ready, can_play, error = int(state[1]), state[2], state[3]
    assert ready >= 2 and can_play == "probably" and error == "none"
