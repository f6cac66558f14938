"""The Hub path for real: `AutoModel` / `AutoProcessor.from_pretrained("<org>/<name>", revision=...,
trust_remote_code=True)` in a fresh process without this package, through huggingface_hub's own download code
(HEAD + GET of /{repo}/resolve/{revision}/{file}, LFS redirect, the cache layout, the remote-code files), against a
Hub-compatible HTTP server on 127.0.0.1 reached through HF_ENDPOINT.

The server is a few dozen lines of stdlib `http.server` (olah, the self-hosted Hub mirror on PyPI, needs
fastapi-utils, which pins psutil < 6 and would downgrade the environment's psutil 7). It serves the endpoints
huggingface_hub 1.x/2.x calls for a model repository, with the headers `file_download.py` reads: `X-Repo-Commit`,
`ETag` (git blob sha1; for LFS files `X-Linked-Etag` = sha256 and `X-Linked-Size`), `Location` (LFS files redirect to
a second server on another port, as the Hub redirects to its CDN on another host), `Content-Length`, and `X-Error-Code` (`EntryNotFound`,
`RevisionNotFound`, `RepoNotFound`) on 404s. It listens on loopback only, answers loopback clients only, and stops
when the test ends (or after a deadline, whatever happens to the test).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_trace import TraceModel, TraceProcessor
from tests.conftest import run_fresh_python, save_tiny_text_model, tiny_config

REPO_ID = "trace-org/trace-tiny-hub"
CHANNEL_NAMES = ["temperature", "humidity", "wind"]
TEXTS = ["Heavy snow closed the pass.", "Calm, dry and sunny."]
LFS_SUFFIXES = (".safetensors", ".bin", ".npy")
SERVER_DEADLINE_S = 600


class HubRepository:
    """Commits of one model repository: `{commit_sha: {path: bytes}}` and refs (branches / tags) -> commit."""

    def __init__(self, repo_id: str):
        self.repo_id = repo_id
        self.commits: dict[str, dict[str, bytes]] = {}
        self.refs: dict[str, str] = {}

    def commit(self, folder: Path, refs: list[str]) -> str:
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        sha = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode()).hexdigest()
        self.commits[sha] = files
        for ref in refs:
            self.refs[ref] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        return revision if revision in self.commits else self.refs.get(revision)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HubServer

    def log_message(self, format, *args):  # the test reads `server.requests` instead of stderr
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    # -- responses ---------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, code: str, message: str, head: bool, commit: str | None = None):
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(404, json.dumps({"error": message}).encode(), headers, head)

    def _json(self, payload, head: bool):
        self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, head)

    def _answer(self, head: bool):
        if self.client_address[0] != "127.0.0.1":  # loopback only, even if the socket were reachable
            self._send(403, b"loopback only", head=head)
            return
        raw_path = urllib.parse.urlsplit(self.path).path
        parts = [urllib.parse.unquote(p) for p in raw_path.strip("/").split("/")]
        self.server.requests.append((self.command, urllib.parse.unquote(raw_path)))
        repo = self.server.repository
        # /api/models/{org}/{name}[/revision/{rev}] and /api/models/{org}/{name}/tree/{rev}[/{path}]
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            if "/".join(parts[2:4]) != repo.repo_id:
                return self._error("RepoNotFound", f"Repository {'/'.join(parts[2:4])} not found", head)
            rest = parts[4:]
            revision = rest[1] if len(rest) >= 2 and rest[0] in ("revision", "tree") else "main"
            sha = repo.resolve(revision)
            if sha is None:
                return self._error("RevisionNotFound", f"Invalid rev id: {revision}", head)
            files = repo.commits[sha]
            if rest[:1] == ["tree"]:
                prefix = "/".join(rest[2:])
                entries = [
                    {"type": "file", "path": p, "size": len(d), "oid": _git_blob_sha1(d)}
                    for p, d in files.items()
                    if not prefix or p.startswith(prefix.rstrip("/") + "/")
                ]
                if prefix and not entries:
                    return self._error("EntryNotFound", f"{prefix} does not exist on {revision}", head, sha)
                return self._json(entries, head)
            return self._json(
                {
                    "_id": sha[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": False,
                    "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": ["transformers", "trace"],
                    "library_name": "transformers", "siblings": [{"rfilename": p} for p in files],
                    "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
                },  # fmt: skip
                head,
            )
        # /lfs/{sha256}: the "CDN" an LFS file redirects to
        if len(parts) == 2 and parts[0] == "lfs":
            blob = self.server.lfs_blobs.get(parts[1])
            if blob is None:
                return self._send(404, b"no such blob", head=head)
            return self._send(200, blob, {"Content-Type": "application/octet-stream", "ETag": f'"{parts[1]}"'}, head)
        # /{org}/{name}/resolve/{rev}/{path}
        if len(parts) >= 5 and parts[2] == "resolve":
            if "/".join(parts[:2]) != repo.repo_id:
                return self._error("RepoNotFound", f"Repository {'/'.join(parts[:2])} not found", head)
            revision, filename = parts[3], "/".join(parts[4:])
            sha = repo.resolve(revision)
            if sha is None:
                return self._error("RevisionNotFound", f"Invalid rev id: {revision}", head)
            data = repo.commits[sha].get(filename)
            if data is None:
                return self._error("EntryNotFound", f"{filename} does not exist on {revision}", head, sha)
            if filename.endswith(LFS_SUFFIXES):
                digest = hashlib.sha256(data).hexdigest()
                self.server.lfs_blobs[digest] = data
                location = f"http://127.0.0.1:{self.server.cdn_port}/lfs/{digest}"
                return self._send(
                    302,
                    headers={"Location": location, "X-Repo-Commit": sha, "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data))},
                    head=head,
                )  # fmt: skip
            headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_blob_sha1(data)}"', "Content-Type": "application/octet-stream"}
            return self._send(200, data, headers, head)
        return self._error("RepoNotFound", f"{raw_path} is not an endpoint of this test Hub", head)


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, repository: HubRepository, requests: list, lfs_blobs: dict):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.repository = repository
        self.requests = requests  # (method, path) of every request, shared by the Hub and its "CDN"
        self.lfs_blobs = lfs_blobs
        self.cdn_port = None


@contextlib.contextmanager
def serve_hub(repository: HubRepository):
    """The Hub on 127.0.0.1 (a free port) and its LFS "CDN" (another port, so another origin: huggingface_hub takes
    the metadata from the redirect itself, as from the real Hub), each in a thread. Yields `(endpoint, hub)`; both
    stop on exit, or by themselves after `SERVER_DEADLINE_S`."""
    requests, blobs = [], {}
    hub, cdn = _HubServer(repository, requests, blobs), _HubServer(repository, requests, blobs)
    hub.cdn_port = cdn.server_address[1]
    servers = (hub, cdn)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True) for s in servers]
    deadline = threading.Timer(SERVER_DEADLINE_S, lambda: [s.shutdown() for s in servers])
    deadline.daemon = True
    for thread in threads:
        thread.start()
    deadline.start()
    try:
        yield f"http://127.0.0.1:{hub.server_address[1]}", hub
    finally:
        deadline.cancel()
        for server, thread in zip(servers, threads):
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)


def _series():
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(60, 3)), rng.normal(size=(20, 3))]
    series[1][4, 2] = np.nan
    return series


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """Two commits of one repo: tag v1.0 (first weights) and main (weights changed since), model + processor."""
    text_dir = save_tiny_text_model(tmp_path_factory.mktemp("hub_text_tower"))
    torch.manual_seed(0)
    model = TraceModel.from_time_series_text_pretrained(tiny_config(channel_names=CHANNEL_NAMES), text_model_name_or_path=text_dir).eval()
    processor = TraceProcessor.from_model(model, max_length=64)
    repo = HubRepository(REPO_ID)
    expected = {}
    for ref in ("v1.0", "main"):
        if ref == "main":
            with torch.no_grad():
                model.time_series_model.embeddings.cls_token.normal_()
                model.text_projection.layer_norm.bias.normal_()
        folder = tmp_path_factory.mktemp(f"hub_{ref.replace('.', '_')}")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        sha = repo.commit(folder, [ref])
        expected[ref] = {"sha": sha, "time_series": model.encode_time_series(_series()), "text": model.encode_text(TEXTS)}
    return repo, expected


def test_auto_classes_download_a_revision_with_remote_code_from_a_hub_endpoint(repository, tmp_path):
    repo, expected = repository
    v1_sha, main_sha = expected["v1.0"]["sha"], expected["main"]["sha"]
    assert v1_sha != main_sha
    np.save(tmp_path / "series_0.npy", _series()[0])
    np.save(tmp_path / "series_1.npy", _series()[1])
    with serve_hub(repo) as (endpoint, server):
        code = f"""
        import json, os
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.pop(name, None)  # online, through the endpoint below (set before huggingface_hub is imported)
        os.environ["HF_ENDPOINT"] = {endpoint!r}
        os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
        os.environ["HF_HUB_DISABLE_XET"] = "1"
        import numpy as np
        from huggingface_hub import constants
        from transformers import AutoModel, AutoProcessor
        assert constants.ENDPOINT == {endpoint!r} and not constants.HF_HUB_OFFLINE
        series = [np.load("series_0.npy"), np.load("series_1.npy")]
        out = {{}}
        for revision in ("v1.0", "main"):
            model = AutoModel.from_pretrained({REPO_ID!r}, revision=revision, trust_remote_code=True).eval()
            processor = AutoProcessor.from_pretrained({REPO_ID!r}, revision=revision, trust_remote_code=True)
            for obj in (model, processor, processor.feature_extractor):
                assert type(obj).__module__.startswith("transformers_modules."), type(obj).__module__
            batch = processor(time_series=series, text={TEXTS!r})
            out[revision] = {{
                "time_series": model.encode_time_series(series).tolist(),
                "text": model.encode_text({TEXTS!r}).tolist(),
                "logits": list(model(**batch).logits_per_text.shape),
                "module": type(model).__module__,
                "channel_names": processor.feature_extractor.channel_names,
            }}
        # everything needed is in the cache now: the same revision loads without the server
        cached = AutoModel.from_pretrained({REPO_ID!r}, revision="v1.0", trust_remote_code=True, local_files_only=True)
        out["cached"] = cached.eval().encode_time_series(series).tolist()
        print(json.dumps(out))
        """
        result = run_fresh_python(code, tmp_path)
        requests = list(server.requests)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for ref in ("v1.0", "main"):
        np.testing.assert_allclose(np.asarray(out[ref]["time_series"]), expected[ref]["time_series"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(out[ref]["text"]), expected[ref]["text"], rtol=1e-5, atol=1e-6)
        assert out[ref]["logits"] == [2, 2] and out[ref]["channel_names"] == CHANNEL_NAMES
    # the revision is honoured: v1.0 and main are different weights
    assert not np.allclose(out["v1.0"]["time_series"], out["main"]["time_series"], atol=1e-4)
    np.testing.assert_allclose(np.asarray(out["cached"]), expected["v1.0"]["time_series"], rtol=1e-5, atol=1e-6)

    # what huggingface_hub asked for: the revision resolved to its commit (/api/models/{repo}/revision/{ref}, as
    # huggingface_hub >= 1.x does before downloading), then HEAD + GET of each file, the remote code among them, at
    # that commit (or at the ref name, as older versions ask)
    # that commit (or at the ref name, as older versions ask). A file whose content (ETag) main shares with v1.0 is
    # not downloaded twice: its blob is in the cache already.
    fetched = {path for method, path in requests if method == "GET"}
    checked = {path for method, path in requests if method == "HEAD"}
    for ref in ("v1.0", "main"):
        sha = expected[ref]["sha"]
        assert f"/api/models/{REPO_ID}/revision/{ref}" in fetched or f"/{REPO_ID}/resolve/{ref}/config.json" in checked
        for name in ("config.json", "configuration_trace.py", "modeling_trace.py", "processing_trace.py",
                     "processor_config.json", "tokenizer.json", "model.safetensors"):  # fmt: skip
            at = {f"/{REPO_ID}/resolve/{rev}/{name}" for rev in (ref, sha)}
            assert at & checked, (ref, name, sorted(checked))
            if ref == "v1.0" and name != "model.safetensors":
                assert at & fetched, (ref, name, sorted(fetched))
    lfs = sorted(p for p in fetched if p.startswith("/lfs/"))  # the weights of each commit, by the LFS redirect
    assert len(lfs) == 2 and all(path.startswith("/lfs/") and len(path) == 5 + 64 for path in lfs)

    # the cache, in huggingface_hub's layout: refs -> commit, snapshots/<commit>/<file>, the remote code modules
    cache = tmp_path / "hf_home" / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    assert (cache / "refs" / "v1.0").read_text() == v1_sha and (cache / "refs" / "main").read_text() == main_sha
    for sha in (v1_sha, main_sha):
        for name in ("config.json", "model.safetensors", "modeling_trace.py", "processor_config.json"):
            assert (cache / "snapshots" / sha / name).is_file(), (sha, name)
    modules = tmp_path / "hf_home" / "modules" / "transformers_modules"
    assert list(modules.rglob("modeling_trace.py")) and out["v1.0"]["module"].startswith("transformers_modules.")


def test_missing_repo_revision_and_file_are_the_hub_errors(repository, tmp_path):
    repo, expected = repository
    with serve_hub(repo) as (endpoint, server):
        code = f"""
        import json, os
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ.pop(name, None)
        os.environ["HF_ENDPOINT"] = {endpoint!r}
        os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
        out = {{}}
        for name, call in (
            ("repo", lambda: hf_hub_download("nobody/nothing", "config.json")),
            ("revision", lambda: hf_hub_download({REPO_ID!r}, "config.json", revision="v9")),
            ("file", lambda: hf_hub_download({REPO_ID!r}, "missing.json")),
        ):
            try:
                call()
                out[name] = "no error"
            except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as err:
                out[name] = type(err).__name__
        info = HfApi().model_info({REPO_ID!r}, revision="v1.0")
        out["info"] = [info.sha, sorted(s.rfilename for s in info.siblings)]
        print(json.dumps(out))
        """
        result = run_fresh_python(code, tmp_path)
        assert server.requests  # the fresh process did talk to the server
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["repo"] == "RepositoryNotFoundError" and out["revision"] == "RevisionNotFoundError"
    assert out["file"] in ("EntryNotFoundError", "RemoteEntryNotFoundError")
    sha, files = out["info"]
    assert sha == expected["v1.0"]["sha"] and {"config.json", "model.safetensors", "modeling_trace.py"} <= set(files)


def test_the_server_stops_and_serves_loopback_only(repository):
    import urllib.error
    import urllib.request

    repo, _ = repository
    with serve_hub(repo) as (endpoint, server):
        assert server.server_address[0] == "127.0.0.1"
        request = urllib.request.Request(f"{endpoint}/{REPO_ID}/resolve/main/config.json", method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and response.headers["X-Repo-Commit"] == repo.refs["main"]
            assert response.headers["ETag"].strip('"') == _git_blob_sha1(repo.commits[repo.refs["main"]]["config.json"])
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{endpoint}/{REPO_ID}/resolve/main/config.json", timeout=2)
