"""Helpers for the serving tests: a small classifier model folder, free ports, a `dat-deploy serve` process.

Everything listens on 127.0.0.1 on ports picked at run time; every process is stopped by its id and every wait
is bounded.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from small_classifier import RANDOM_META, SIZE, small_classifier_onnx

REPO_ROOT = Path(__file__).resolve().parents[1]


def skip_unless_server_runs():
    """Skip (with the reason) where the bundled Triton cannot serve: no nvidia-pytriton, or numpy 2."""
    pytest.importorskip("tritonclient.http", reason="needs tritonclient[http,grpc] (dat-deploy[serve])")
    pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[http,grpc] (dat-deploy[serve])")
    from dat_deploy.errors import UserError
    from dat_deploy.serving.distribution import find_triton
    from dat_deploy.serving.server import require_numpy_1

    try:
        find_triton()
        require_numpy_1()
    except UserError as exc:
        pytest.skip(f"{exc} (.ci/run runs these tests in a numpy<2 environment with nvidia-pytriton)")


def small_classifier_folder(root: Path, name: str = "small", max_batch: int = 8) -> Path:
    """A Triton model folder (config.pbtxt, 1/model.onnx with dat-deploy's metadata) of the small classifier."""
    folder = root / name
    (folder / "1").mkdir(parents=True)
    small_classifier_onnx(folder / "1" / "model.onnx", RANDOM_META, random_bias=True)
    (folder / "config.pbtxt").write_text(f"""
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch}
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ 3, {SIZE}, {SIZE} ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 1000 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 100 }}
""")
    return folder


def png_bytes(seed: int, size: tuple[int, int] = (40, 52)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ServeProcess:
    """`dat-deploy serve` in a subprocess on free 127.0.0.1 ports."""

    def __init__(self, folders: list[Path], *options: str, ports: list[int] | None = None):
        self.http_port, self.grpc_port, self.metrics_port = ports or free_ports(3)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        command = [sys.executable, "-m", "dat_deploy.cli", "serve", *map(str, folders),
                   "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                   "--metrics-port", str(self.metrics_port), *options]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout_s: float = 120) -> "ServeProcess":
        """Read the log until the `ready:` line (bounded), then check Triton's readiness endpoint."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"serve exited ({self.process.poll()}):\n" + "".join(self.output))
            self.output.append(line)
            if line.startswith("ready:"):
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=5) as answer:
                    assert answer.status == 200
                return self
        raise AssertionError("serve was not ready in time:\n" + "".join(self.output))

    def triton_pid(self) -> int:
        import psutil

        children = psutil.Process(self.process.pid).children()
        names = [c for c in children if c.name() == "tritonserver"]
        assert names, f"no tritonserver child of {self.process.pid}"
        return names[0].pid

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout_s: float = 60) -> int:
        code = self.process.wait(timeout=timeout_s)
        self.output.append(self.process.stdout.read())
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout=30)
        if self.process.stdout:
            self.process.stdout.close()
