"""``iter-sr-app`` prints where it serves and nothing a command-line user cannot act on (gradio's share-link hint)."""

from __future__ import annotations

import socket

import gradio

from iter_diffusers.app import ui
from iter_diffusers.app.cli import main


def _small_demo(store, max_pixels):
    with gradio.Blocks() as demo:  # the page does not matter here, only what launching it prints
        gradio.Markdown("ITER")
    return demo


def test_the_app_prints_its_url_and_no_share_link_hint(monkeypatch, capfd):
    real_launch = gradio.Blocks.launch

    def launch_and_stop(self, *args, **kwargs):  # the real launch, without blocking: then the server is closed
        real_launch(self, *args, **kwargs, prevent_thread_lock=True)
        self.close()

    monkeypatch.setattr(gradio.Blocks, "launch", launch_and_stop)
    monkeypatch.setattr(ui, "build_demo", _small_demo)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["--host", "127.0.0.1", "--port", str(port)]) == 0
    out = capfd.readouterr().out
    assert f"iter-sr-app: serving the ITER demo on http://127.0.0.1:{port}/ (Ctrl+C to stop)" in out
    assert "share=True" not in out and "public link" not in out, out


