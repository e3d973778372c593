"""A local Label Studio as a peer service, like the broker: for the tests and the demo.

Label Studio (~1 GB with its dependencies: pyarrow, opencv, pandas, Django) never enters the
project's own environment: `install()` puts the pinned version in a venv of its own under
~/.cache/active-stream (`label-studio-VERSION`), once (72 s measured); later runs reuse it.
`LabelStudioServer` runs it on a free loopback port with its own data directory: SQLite, no
browser, no telemetry, the legacy token auth on, and SSRF protection off so that it may call
the bridge's webhook on loopback. A fresh database takes ~28 s of migrations, so the first
start also keeps a copy of the migrated directory (the template); later servers start from a
copy of it in ~4 s, with the same user and token.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from services.streaming.embedded import _die_with_parent, free_port

VERSION = "1.23.2"
CACHE_ENV = "ACTIVE_STREAM_LABEL_STUDIO_CACHE"
_STAMP = ".active-stream-installed"
USER = "admin@active-stream.local"
# Not secrets worth the name: the server listens on loopback only, for the life of a test run
# or a demo. The template keeps them (credentials.json) so copies share them.
_CREDENTIALS = "credentials.json"


class LabelStudioUnavailable(RuntimeError):
    """Label Studio cannot be installed or started here; the message says why."""


def cache_root() -> Path:
    """$ACTIVE_STREAM_LABEL_STUDIO_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/active-stream."""
    root = os.environ.get(CACHE_ENV) or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "active-stream")
    return Path(root)


def venv_dir() -> Path:
    return cache_root() / f"label-studio-{VERSION}"


def template_dir() -> Path:
    return cache_root() / f"label-studio-{VERSION}-template"


def installed() -> bool:
    return (venv_dir() / _STAMP).is_file() and (venv_dir() / "bin" / "python").exists()


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock across processes (two test runs installing at once)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(timeout_s: float = 900.0) -> Path:
    """The venv with Label Studio VERSION, installed from PyPI with pip if missing; returns it.
    Raises LabelStudioUnavailable with pip's output tail when the install fails."""
    if installed():
        return venv_dir()
    with _locked("label-studio-install"):
        if installed():
            return venv_dir()
        target = venv_dir()
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        commands = [[sys.executable, "-m", "venv", str(partial)],
                    [str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet",
                     "--disable-pip-version-check", f"label-studio=={VERSION}"]]
        for command in commands:
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                      check=False)
            except subprocess.TimeoutExpired:
                raise LabelStudioUnavailable(f"installing Label Studio took over {timeout_s:.0f}"
                                             f" s: {' '.join(command)}") from None
            if done.returncode != 0:
                tail = (done.stdout + done.stderr)[-2000:]
                raise LabelStudioUnavailable(f"installing Label Studio failed: "
                                             f"{' '.join(command)}\n{tail}")
        (partial / _STAMP).write_text(VERSION)
        # A venv runs from where it lies (bin/python is a link to the base interpreter); the
        # server is started as `python -m label_studio.server`, never through bin/ scripts
        # whose first line names the .partial path.
        partial.rename(target)
    return target


def _environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ACTIVE_STREAM"))}
    env.update({
        # Without it Label Studio writes under ~/.local/share even for --help.
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        # Nothing leaves the machine: no error reports, analytics or version check.
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        # It must call the bridge's webhook on loopback, which SSRF protection refuses.
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    })
    return env


class LabelStudioServer:
    """One Label Studio process on 127.0.0.1. `data_dir=None`: a temp dir (removed by stop()),
    started from a copy of the template when there is one."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="label-studio-") if data_dir is None \
            else None
        self.data_dir = Path(self._tmp.name) / "data" if self._tmp else Path(str(data_dir))
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(12)
        self.token = secrets.token_hex(20)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self, timeout_s: float = 180.0, *, use_template: bool = True) -> float:
        """Install if needed, start, wait for /health; returns the seconds the start took.
        Raises LabelStudioUnavailable with the log tail when it does not come up."""
        python = install() / "bin" / "python"
        if use_template and not self.data_dir.exists():
            self._from_template(timeout_s)
        credentials = self.data_dir / _CREDENTIALS
        if credentials.is_file():
            saved = json.loads(credentials.read_text())
            self.password, self.token = saved["password"], saved["token"]
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            credentials.write_text(json.dumps({"password": self.password, "token": self.token}))
        started = time.monotonic()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(python), "-m", "label_studio.server", "start", "--no-browser",
                 "--internal-host", "127.0.0.1", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), "--username", USER,
                 "--password", self.password, "--user-token", self.token,
                 "--enable-legacy-api-token"],
                env=_environment(self.data_dir), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509
                start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LabelStudioUnavailable(f"Label Studio did not come up on {self.url}; "
                                             f"log tail:\n{self.log_tail()}")
            time.sleep(0.25)
        return time.monotonic() - started

    def _from_template(self, timeout_s: float) -> None:
        with _locked("label-studio-template"):
            template = template_dir()
            if not (template / _CREDENTIALS).is_file():
                shutil.rmtree(template, ignore_errors=True)
                first = LabelStudioServer(template, self.port)
                first.start(timeout_s, use_template=False)
                first.stop()
            shutil.copytree(template, self.data_dir)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return bool(json.loads(response.read()).get("status") == "UP")
        except (OSError, ValueError):
            return False

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, SIGKILL past `timeout_s`; removes a temp data dir. Idempotent."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LabelStudioServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m services.label_studio.server`: install Label Studio and build the template
    (what `make label-studio` runs before the tests); prints what it did and how long it took."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.parse_args(argv)
    started = time.monotonic()
    was_installed = installed()
    try:
        path = install()
        took = time.monotonic() - started
        print(f"Label Studio {VERSION}: {path} "
              f"({'present' if was_installed else f'installed in {took:.0f} s'})", flush=True)
        if not (template_dir() / _CREDENTIALS).is_file():
            started = time.monotonic()
            server = LabelStudioServer()
            server.start()
            server.stop()
            print(f"Label Studio data template: {template_dir()} (built in "
                  f"{time.monotonic() - started:.0f} s)", flush=True)
    except LabelStudioUnavailable as exc:
        print(f"Label Studio unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
