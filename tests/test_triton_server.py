"""The repository `dat-deploy triton` writes, loaded by a real Triton server (config.pbtxt files unchanged).

Triton's C++ onnxruntime backend exists only in NVIDIA's containers, so the server runs the Python-based
backend named `onnxruntime` from dat_deploy/serving (onnxruntime package, `op_library_filename` registered).
What this proves: Triton 2.51's model manager, scheduler, dynamic batcher and HTTP/gRPC front ends accept the
repository and its plugin-flavour model as written. What it does not: the C++ backend itself.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from serving_helpers import free_ports, skip_unless_server_runs


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_dat_t_plugin_repository_served_by_real_triton(export_once, tmp_path):
    skip_unless_server_runs()
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from dat_deploy.cli import app  # importing cli registers the commands
    from dat_deploy.runtime import OrtBackend
    from dat_deploy.serving.distribution import find_triton, server_environment, write_backend_directory
    from dat_deploy.serving.server import Endpoints, triton_command, wait_until_ready

    exported = export_once("dat_t", flavor="plugin", check=False)  # the reference here is onnxruntime
    models_root, name = exported.folder.parent, exported.name
    repository = tmp_path / "repo"
    result = CliRunner().invoke(app, ["triton", name, "--models", str(models_root), "--output", str(repository)])
    assert result.exit_code == 0, result.output
    config_text = (repository / name / "config.pbtxt").read_text()
    assert 'op_library_filename: "/models/' in config_text  # the container path: the backend falls back
    written = _digest(repository)

    dist = find_triton()
    backends = write_backend_directory(dist, tmp_path / "backends")
    http_port, grpc_port, metrics_port = free_ports(3)
    endpoints = Endpoints("127.0.0.1", http_port, grpc_port, metrics_port)
    command = triton_command(dist, repository, backends, endpoints, shm_prefix=f"dat_deploy_test_{tmp_path.name}_")
    process = subprocess.Popen(command, env=server_environment(dist), stdout=subprocess.DEVNULL)
    try:
        wait_until_ready(process, endpoints, timeout_s=300)
        reference = OrtBackend(repository / name / "1" / "model.onnx",
                               plugin_library=repository / name / "libdat_ort_ops.so")
        rng = np.random.default_rng(0)
        inputs = {i: rng.normal(size=(1, 3, 224, 224)).astype(np.float32) for i in range(8)}
        answers, done = {}, threading.Semaphore(0)

        def callback(i):
            def receive(result, error):  # keyword names are tritonclient's: result=, error=
                answers[i] = error if error is not None else result.as_numpy("logits")
                done.release()
            return receive

        http = httpclient.InferenceServerClient(endpoints.http, concurrency=4)
        grpc = grpcclient.InferenceServerClient(endpoints.grpc)
        pending_http = {}
        for i, x in inputs.items():
            if i % 2:
                tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                grpc.async_infer(name, [tensor], callback(i), client_timeout=240)
            else:
                tensor = httpclient.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                pending_http[i] = http.async_infer(name, [tensor], timeout=240)
        for i, request in pending_http.items():
            answers[i] = request.get_result(timeout=240).as_numpy("logits")
        for _ in range(len(inputs) - len(pending_http)):
            assert done.acquire(timeout=240)
        for i, x in inputs.items():
            assert not isinstance(answers[i], Exception), answers[i]
            expected = reference.run(x)["logits"]
            np.testing.assert_allclose(answers[i], expected, rtol=1e-4, atol=1e-4)
            assert np.argmax(answers[i]) == np.argmax(expected)
        stats = http.get_inference_statistics(name)["model_stats"][0]
        assert int(stats["inference_count"]) == len(inputs)
        assert int(stats["execution_count"]) < len(inputs)  # Triton merged the concurrent requests
        http.close()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    assert code == 0
    assert _digest(repository) == written  # served as written, nothing rewritten
