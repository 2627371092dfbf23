"""Helpers for the real-browser test (tests/test_browser.py): a throwaway JupyterLab server.

The server runs on 127.0.0.1 with a random token, in a temporary root folder holding copies of the
notebooks, with its own user-settings, workspaces and runtime folders (so nothing of the developer's
own JupyterLab leaks in or is written to), and with the "Jupyter news" toast switched off by a user
settings file (it would cover the screenshots). ``MINIDIFF_FAST=1`` is set in the server's
environment, so every kernel it starts runs the notebooks in fast mode.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Debian's Chromium (`apt-get install -y chromium`); MINIDIFF_CHROMIUM overrides the path.
CHROMIUM = os.environ.get("MINIDIFF_CHROMIUM", "/usr/bin/chromium")
# Flags that work on a closed network and as root (see shared/design/notebooks.md).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]

# JupyterLab user settings: no news fetch, no update check (the toast covers screenshots).
NOTIFICATION_SETTINGS = {
    "@jupyterlab/apputils-extension": {
        "notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    },
    # JupyterLab 4 renders only the cells in view by default ("windowing"); the tests look for players
    # anywhere in the notebook, so render every cell.
    "@jupyterlab/notebook-extension": {
        "tracker.jupyterlab-settings": {"windowingMode": "none"},
    },
}


@dataclass
class LabServer:
    url: str          # http://127.0.0.1:PORT
    token: str
    root: Path        # the server's root_dir (copies of the notebooks)
    log: Path         # combined stdout/stderr of the server
    proc: subprocess.Popen

    def lab_url(self, notebook: str) -> str:
        # `reset` drops any saved workspace layout, so the page shows exactly this notebook.
        return f"{self.url}/lab/tree/{notebook}?token={self.token}&reset"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return "<no server log>"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_user_settings(settings_dir: Path) -> None:
    for plugin, files in NOTIFICATION_SETTINGS.items():
        d = settings_dir / plugin
        d.mkdir(parents=True, exist_ok=True)
        for name, value in files.items():
            (d / name).write_text(json.dumps(value, indent=2))


def start_lab(notebooks: list[Path], workdir: Path, *, timeout: float = 120.0) -> LabServer:
    """Start JupyterLab serving copies of ``notebooks``; return once ``/api/status`` answers.
    The caller must call :func:`stop_lab` (also on failure)."""
    root, settings, workspaces, runtime = (workdir / n for n in ("root", "settings", "workspaces", "runtime"))
    for d in (root, settings, workspaces, runtime):
        d.mkdir(parents=True, exist_ok=True)
    for nb in notebooks:
        shutil.copy2(nb, root / nb.name)
    write_user_settings(settings)

    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        MINIDIFF_FAST="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
        JUPYTER_RUNTIME_DIR=str(runtime), JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(workspaces), PYTHONUNBUFFERED="1",
    )
    env.pop("MPLBACKEND", None)  # would replace the notebooks' inline figures
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
        "--ServerApp.open_browser=False",
    ]
    log = workdir / "jupyterlab.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = LabServer(url=f"http://127.0.0.1:{port}", token=token, root=root, log=log, proc=proc)
    try:
        _wait_until_up(server, timeout)
    except BaseException:
        stop_lab(server)
        raise
    return server


def _wait_until_up(server: LabServer, timeout: float) -> None:
    """Poll the server's status endpoint (a state, not a fixed sleep) until it answers."""
    deadline = time.monotonic() + timeout
    status = f"{server.url}/api/status?token={server.token}"
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {server.proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(status, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{server.log_tail()}")
        try:
            server.proc.wait(timeout=0.25)  # returns early if the server dies
        except subprocess.TimeoutExpired:
            pass


def stop_lab(server: LabServer, timeout: float = 20.0) -> None:
    """Stop the server and its kernels: SIGTERM to its process group, then SIGKILL if needed."""
    proc = server.proc
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Kernels live in the same session/process group; make sure nothing is left behind.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=5)
