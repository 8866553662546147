"""The official weights by name (``iter_diffusers.official``): downloads from a real HTTP server on 127.0.0.1 that
serves the tiny official fixtures under the release file names, conversion once, the cache, offline use."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import constants

from iter_diffusers import ITERPipeline, load_official_pipeline
from iter_diffusers.cli.upscale import main as iter_sr
from iter_diffusers.model_card import recorded_source_files
from iter_diffusers.official import OfficialWeightsError, cache_dir, official_pipeline_path

VQGAN, X4 = "ITER_swinvqgan.pth", "ITER_x4.pth"


class ReleaseServer:
    """Serves ``files`` over HTTP with ``Range`` support; ``behaviour[name]`` is "ok", "cut" (half the bytes, then
    the connection closes), "unsized" (no Content-Length: the end of the file is the end of the connection), "html"
    (an HTML error page with status 200) or "html-as-binary" (the same page labelled application/octet-stream).
    Unknown names get a 404."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.behaviour, self.requests = dict(files), {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                if server.behaviour.get(name, "").startswith("html"):
                    page = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
                    kind = "application/octet-stream" if server.behaviour[name] == "html-as-binary" else "text/html"
                    self._send(200, page, {"Content-Type": kind})
                    return
                data, start = server.files[name], 0
                headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                cut = len(body) // 2 if server.behaviour.get(name) == "cut" else len(body)
                sized = server.behaviour.get(name) != "unsized"
                self._send(206 if start else 200, body, headers, send=cut, sized=sized)

            def _send(self, status, body, headers, send=None, sized=True):
                self.send_response(status)
                for key, value in dict(headers, **({"Content-Length": str(len(body))} if sized else {})).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body[:send])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/release/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def fixture_bytes(official_dir):
    return {VQGAN: (official_dir / "tiny_swinvqgan.pth").read_bytes(),
            X4: (official_dir / "tiny_iter_x4.pth").read_bytes()}


@pytest.fixture()
def server(fixture_bytes, monkeypatch, tmp_path):
    """The release server, with the cache in tmp_path and ITER_RELEASE_URL pointing at the server."""
    release = ReleaseServer(fixture_bytes)
    monkeypatch.setattr(constants, "HF_ASSETS_CACHE", str(tmp_path / "assets"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("ITER_RELEASE_URL", release.url)
    yield release
    release.stop()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cache_entries() -> list[str]:
    """The release files (complete or partial) and the pipeline folders in the cache."""
    root = cache_dir()
    files = [f"release/{p.name}" for p in (root / "release").glob("*")]
    return sorted(files + [p.name for p in root.glob("*") if p.is_dir() and p.name != "release"])


def _one_line_error(call, match: str) -> str:
    with pytest.raises(OfficialWeightsError, match=match) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


def test_download_converts_once_then_serves_the_cache_offline(server, fixture_bytes, converted_dir, monkeypatch):
    folder = official_pipeline_path("official-x4", progress=False)
    assert folder == cache_dir() / "official-x4" and (folder / "model_index.json").is_file()
    assert sorted(server.requests) == [(VQGAN, None), (X4, None)]
    assert recorded_source_files(folder) == {name: _sha(data) for name, data in fixture_bytes.items()}
    card = (folder / "README.md").read_text()
    assert server.url in card and "converted checkpoints" in card
    assert "official weights, converted" not in card  # random tiny weights from a test server are not official
    for name, data in fixture_bytes.items():
        assert (cache_dir() / "release" / name).read_bytes() == data

    server.stop()  # a connection attempt would now fail
    pipe = load_official_pipeline("official-x4", progress=False)
    assert isinstance(pipe, ITERPipeline) and len(server.requests) == 2
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert official_pipeline_path("official-x4", progress=False) == folder
    reference = ITERPipeline.from_pretrained(converted_dir)
    for name in ("vqvae", "encoder", "evaluator", "refiner"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(reference, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name


def test_a_release_file_that_changed_in_the_cache_is_converted_again(server, official_dir):
    folder = official_pipeline_path("official-x4", progress=False)
    state = torch.load(official_dir / "tiny_iter_x4.pth", weights_only=True)["params"]
    key = "token_refine_net.token_refine_net.conv_out.2.bias"
    state[key] = state[key] + 1.0
    torch.save({"params": state}, cache_dir() / "release" / X4)
    assert official_pipeline_path("official-x4", progress=False) == folder
    assert recorded_source_files(folder)[X4] == _sha((cache_dir() / "release" / X4).read_bytes())
    refiner = ITERPipeline.from_pretrained(folder).refiner
    assert torch.equal(refiner.conv_out.bias, state[key])


def test_a_cache_entry_of_the_earlier_layout_is_converted_again(server):
    """A folder cached before folders carried their code (package entries, no code files) is converted again, so
    that plain diffusers can load it as well."""
    folder = official_pipeline_path("official-x4", progress=False)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "ITERPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    for code in folder.rglob("iter_diffusers_*.py"):
        code.unlink()
    assert official_pipeline_path("official-x4", progress=False) == folder
    assert json.loads((folder / "model_index.json").read_text())["_class_name"][0] == "iter_diffusers_pipeline"
    assert (folder / "iter_diffusers_pipeline.py").is_file() and (folder / "vqvae" / "iter_diffusers_models.py").is_file()


def test_a_cut_off_download_leaves_no_cache_entry_and_resumes(server, fixture_bytes):
    server.behaviour[X4] = "cut"
    message = _one_line_error(lambda: official_pipeline_path("official-x4", progress=False), "run again to resume")
    assert _cache_entries() == [f"release/{VQGAN}", f"release/{X4}.incomplete"]  # no short file under X4's name
    partial = (cache_dir() / "release" / f"{X4}.incomplete").read_bytes()
    assert 0 < len(partial) <= len(fixture_bytes[X4]) // 2 and fixture_bytes[X4].startswith(partial)
    assert f"download of {X4} from 127.0.0.1:" in message
    assert f"was cut off after {len(partial)} of {len(fixture_bytes[X4])} bytes" in message
    assert "IncompleteRead" not in message and "Connection broken" not in message

    server.behaviour[X4] = "ok"
    folder = official_pipeline_path("official-x4", progress=False)
    assert server.requests[-1] == (X4, f"bytes={len(partial)}-")
    assert recorded_source_files(folder)[X4] == _sha(fixture_bytes[X4])
    assert _cache_entries() == ["official-x4", f"release/{VQGAN}", f"release/{X4}"]


def _refused_url() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on (bound to get a free number, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/release/"


@pytest.mark.parametrize("url, host, reason", [
    (None, "127.0.0.1:", "Connection refused"),
    ("http://iter-release.invalid/release/", "iter-release.invalid", ""),  # .invalid never resolves (RFC 2606)
])
def test_no_network_says_which_host_and_what_to_download_by_hand(server, monkeypatch, url, host, reason):
    url = url or _refused_url()
    monkeypatch.setenv("ITER_RELEASE_URL", url)
    message = _one_line_error(lambda: official_pipeline_path("official-x4", progress=False), "could not reach")
    assert message.startswith(f"cannot download official-x4: could not reach {host}") and reason in message
    assert f"download {VQGAN} and {X4} from {url} into {cache_dir() / 'release'}" in message
    assert f"pass the path of {X4} (with {VQGAN} next to it)" in message
    assert "HTTPConnectionPool" not in message and "Max retries" not in message
    assert _cache_entries() == []


def test_iter_sr_without_network_is_one_whole_line(server, monkeypatch, tmp_path):
    monkeypatch.setenv("ITER_RELEASE_URL", _refused_url())
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert iter_sr(["-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "official-x4"]) == 2
    (line,) = err.getvalue().strip().splitlines()
    assert line.startswith("iter-sr: error: --model official-x4: cannot download official-x4: could not reach "
                           "127.0.0.1:")
    assert line.endswith(f"pass the path of {X4} (with {VQGAN} next to it) instead")  # not cut short


def test_a_download_without_content_length_completes(server, fixture_bytes):
    server.behaviour[VQGAN] = server.behaviour[X4] = "unsized"
    folder = official_pipeline_path("official-x4", progress=False)
    assert recorded_source_files(folder) == {VQGAN: _sha(fixture_bytes[VQGAN]), X4: _sha(fixture_bytes[X4])}


def test_a_missing_file_is_a_one_line_404(server):
    message = _one_line_error(lambda: official_pipeline_path("official-x2", progress=False), "HTTP 404")
    assert "ITER_x2.pth" in message
    assert _cache_entries() == [f"release/{VQGAN}"]  # the VQGAN file came first and is complete


@pytest.mark.parametrize("behaviour", ["html", "html-as-binary"])
def test_an_html_error_page_is_refused(server, behaviour):
    server.behaviour[VQGAN] = behaviour
    _one_line_error(lambda: official_pipeline_path("official-x4", progress=False), "HTML")
    assert _cache_entries() == []


@pytest.mark.parametrize("model, served, reason", [
    ("official-x4", VQGAN, "no lq_encoder"),  # a readable checkpoint, but not an ITER one
    ("official-x2", X4, "ITER_x2.pth holds a x4 model"),
])
def test_a_wrong_file_is_refused_and_removed(server, fixture_bytes, model, served, reason):
    server.files[f"ITER_{model[-2:]}.pth"] = fixture_bytes[served]
    _one_line_error(lambda: official_pipeline_path(model, progress=False), f"do not convert.*{reason}")
    assert _cache_entries() == []


def test_offline_without_a_cache_says_what_to_download_and_where(server, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = _one_line_error(lambda: official_pipeline_path("official-x4", progress=False), "HF_HUB_OFFLINE=1")
    assert f"{VQGAN} and {X4}" in message and server.url in message
    assert server.requests == [] and _cache_entries() == []


def test_local_release_files_convert_into_the_cache(server, fixture_bytes, tmp_path):
    local = tmp_path / "downloads"
    local.mkdir()
    (local / X4).write_bytes(fixture_bytes[X4])
    _one_line_error(lambda: official_pipeline_path(str(local / X4)), f"{VQGAN}: no such file")
    (local / VQGAN).write_bytes(fixture_bytes[VQGAN])
    folder = official_pipeline_path(str(local / X4))
    assert folder.parent == cache_dir() and folder.name.startswith("local-") and server.requests == []
    card = (folder / "README.md").read_text()
    assert "(local files)" in card and "official weights, converted" not in card
    assert official_pipeline_path(str(local / X4)) == folder


def test_iter_sr_runs_the_official_alias(server, tmp_path):
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = iter_sr(["-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "official-x4",
                        "--steps", "2", "-q"])
    assert code == 0, err.getvalue()
    assert PIL.Image.open(tmp_path / "out" / "a_x4.png").size == (80, 64)
    with contextlib.redirect_stderr(err):
        assert iter_sr(["-i", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", "official-x2"]) == 2
    assert err.getvalue().strip().splitlines()[-1].startswith("iter-sr: error: --model official-x2: cannot download")


def test_iter_sr_offline_with_an_empty_cache_is_one_line(tmp_path):
    """A real process, so that HF_HUB_OFFLINE and HF_HOME are read from the environment as a user sets them."""
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), OMP_NUM_THREADS="1")
    env.pop("HF_ASSETS_CACHE", None)
    env.pop("ITER_RELEASE_URL", None)
    result = subprocess.run([sys.executable, "-m", "iter_diffusers.cli.upscale", "-i", str(tmp_path / "a.png"),
                             "-o", str(tmp_path / "out"), "--model", "official-x4"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "HF_HUB_OFFLINE=1" in lines[0], result.stderr
    assert "https://github.com/chaofengc/ITER/releases/download/v0.1.0/" in lines[0]
    assert not (tmp_path / "hf" / "assets" / "iter-diffusers" / "official" / "official-x4").exists()
