"""Run the bundled Triton server on a repository, wait until it is ready, stop it cleanly.

`serve` is what `dat-deploy serve` does: a private folder (repository + backend folder), Triton started on
it, SIGTERM / SIGINT passed on to Triton (which stops taking new requests, answers the ones in flight and
unloads its models, `--exit-timeout-secs`), the folder removed, Triton's exit code returned.
Triton dies with this process (PR_SET_PDEATHSIG): a killed `dat-deploy serve` leaves no server behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from dat_deploy.errors import UserError
from dat_deploy.serving.distribution import (TritonDistribution, find_triton, server_environment,
                                             write_backend_directory)
from dat_deploy.serving.repository import ServedModel, ServeSettings, write_serving_repository

WORKDIR_PREFIX = "dat-deploy-serve-"
SHM_PREFIX = "dat_deploy_serve_"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Endpoints:
    address: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = 8002  # None: no metrics endpoint

    @property
    def http(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{self.address}:{self.grpc_port}"


def require_numpy_1() -> None:
    """The python backend stub in nvidia-pytriton 0.7 is built against numpy 1.x; with numpy 2 it passes
    tensors of zero bytes and crashes on BYTES inputs (measured). The stubs import this environment's numpy."""
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise UserError(f"the Triton python backend in nvidia-pytriton needs numpy<2, this environment has numpy "
                        f"{numpy.__version__}: serve from an environment made with `pip install 'dat-deploy[serve]'` "
                        "(it installs numpy 1.26).")


def triton_command(dist: TritonDistribution, repository: Path, backends: Path, endpoints: Endpoints,
                   shm_prefix: str, exit_timeout_s: int = 30, verbose: bool = False) -> list[str]:
    command = [
        str(dist.binary), f"--model-repository={repository}", f"--backend-directory={backends}",
        f"--http-address={endpoints.address}", f"--http-port={endpoints.http_port}",
        f"--grpc-address={endpoints.address}", f"--grpc-port={endpoints.grpc_port}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        f"--exit-timeout-secs={exit_timeout_s}", "--strict-readiness=true",
        f"--log-info={'true' if verbose else 'false'}",
        # CPU serving: no pinned host memory, no GPU metrics (both only warn without a GPU)
        "--pinned-memory-pool-byte-size=0", "--allow-gpu-metrics=false",
    ]
    if endpoints.metrics_port is None:
        command.append("--allow-metrics=false")
    else:
        command += ["--allow-metrics=true", f"--metrics-address={endpoints.address}",
                    f"--metrics-port={endpoints.metrics_port}"]
    return command


def check_ports_free(endpoints: Endpoints) -> None:
    """A port in use is the commonest start failure: name it before Triton prints a page of log about it."""
    ports = [("--http-port", endpoints.http_port), ("--grpc-port", endpoints.grpc_port),
             ("--metrics-port", endpoints.metrics_port)]
    for option, port in ports:
        if port is None:
            continue
        with socket.socket(socket.AF_INET6 if ":" in endpoints.address else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds: TIME_WAIT is no conflict
            try:
                probe.bind((endpoints.address, port))
            except OSError as exc:
                raise UserError(f"cannot listen on {endpoints.address}:{port} ({exc.strerror}): "
                                 f"choose another {option}.") from None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def remove_stale_files(tmp: Path | None = None, shm: Path = Path("/dev/shm")) -> None:
    """Folders and shared-memory regions left by a `dat-deploy serve` that was killed (its pid is gone)."""
    tmp = Path(tmp or tempfile.gettempdir())
    for root, prefix in ((tmp, WORKDIR_PREFIX), (shm, SHM_PREFIX)):
        if not root.is_dir():
            continue
        for path in root.glob(prefix + "*"):
            pid = path.name[len(prefix):].split("-")[0].split("_")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until_ready(process: subprocess.Popen, endpoints: Endpoints, timeout_s: float) -> None:
    """Poll Triton's /v2/health/ready (every model loaded) until it answers 200, the process dies or time is up."""
    url = f"http://{endpoints.http}/v2/health/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"Triton exited with code {process.returncode} while loading the models "
                            "(its messages are above; a port in use is a common cause).")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise UserError(f"Triton was not ready after {timeout_s:.0f} s ({url}).")


def serve(sources: Sequence[str | os.PathLike], endpoints: Endpoints, settings: ServeSettings,
          models_root: Path = Path("models"), ready_timeout_s: float = 300, verbose: bool = False,
          on_ready: Callable[[list[ServedModel], Endpoints], None] | None = None) -> int:
    """Serve the model folders until SIGTERM / SIGINT; returns Triton's exit code (0 after a clean stop)."""
    dist = find_triton()
    require_numpy_1()
    check_ports_free(endpoints)
    remove_stale_files()
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    process = None
    previous = {}
    try:
        served = write_serving_repository(sources, workdir / "models", settings, models_root=models_root)
        backends = write_backend_directory(dist, workdir / "backends")
        command = triton_command(dist, workdir / "models", backends, endpoints,
                                 shm_prefix=f"{SHM_PREFIX}{os.getpid()}_", verbose=verbose)
        process = subprocess.Popen(command, env=server_environment(dist), preexec_fn=_die_with_parent)

        stopping = []

        def forward(signum, _frame):
            stopping.append(signum)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # Triton's graceful stop, for SIGINT too

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, forward)
        try:
            wait_until_ready(process, endpoints, ready_timeout_s)
        except UserError:
            if stopping:  # stopped while loading: not a failure
                return process.wait()
            raise
        if on_ready is not None:
            on_ready(served, endpoints)
        return process.wait()
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        shutil.rmtree(workdir, ignore_errors=True)
