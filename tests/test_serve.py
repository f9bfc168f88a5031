"""`dat-deploy serve`: Triton's own server answering over HTTP and gRPC, its image companion, and its faults.

The model is a small classifier (milliseconds per batch) so that every test starts a real server in seconds;
the reference is dat-deploy's in-process `Classifier` on the same folder. Servers listen on 127.0.0.1 only,
on ports picked at run time, and are stopped by process id.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serving_helpers import ServeProcess, png_bytes, skip_unless_server_runs, small_classifier_folder

SHAPE = (3, 32, 32)


def test_serve_without_the_server_says_how_to_install_it(monkeypatch, capsys):
    from dat_deploy import cli
    from dat_deploy.serving import distribution

    monkeypatch.setattr(distribution, "_pytriton_folder", lambda: None)
    monkeypatch.setattr(sys, "argv", ["dat-deploy", "serve", "models/anything"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'dat-deploy[serve]'" in err


def _send_async(client, inputs: dict[int, np.ndarray]) -> tuple[dict, threading.Semaphore]:
    """One async gRPC request per input to model "small"; answers[i] gets its logits or its error, and
    `done` is released once per answer."""
    import tritonclient.grpc as grpcclient

    answers, done = {}, threading.Semaphore(0)

    def callback(i):
        def receive(result, error):  # tritonclient calls it with keywords result= and error=
            answers[i] = error if error is not None else result.as_numpy("logits")
            done.release()
        return receive

    for i, x in inputs.items():
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        client.async_infer("small", [tensor], callback(i), client_timeout=60)
    return answers, done


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return small_classifier_folder(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def reference(model_folder):
    from dat_deploy.api import Classifier

    return Classifier.from_artifact(model_folder)


@pytest.fixture(scope="module")
def server(model_folder):
    skip_unless_server_runs()
    process = ServeProcess([model_folder], "--max-queue-delay-us", "20000").wait_ready()
    yield process
    process.stop()


def _tensor(seed: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, *SHAPE)).astype(np.float32)


def _infer_tensor(module, client, x, name="small"):
    tensor = module.InferInput("input", list(x.shape), module.np_to_triton_dtype(x.dtype))
    tensor.set_data_from_numpy(x)
    return client.infer(name, [tensor]).as_numpy("logits")


def _infer_images(module, client, images: list[bytes]):
    tensor = module.InferInput("image", [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_).reshape(-1, 1))
    result = client.infer("small_images", [tensor])
    return result.as_numpy("labels"), result.as_numpy("probabilities"), result.as_numpy("indices")


def test_tensors_over_http_and_grpc_batched_by_triton(server, reference):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(server.http)
    x = _tensor(0, batch=3)
    np.testing.assert_allclose(_infer_tensor(httpclient, http, x), reference.predict_batch(x), rtol=1e-5, atol=1e-5)

    grpc = grpcclient.InferenceServerClient(server.grpc)
    inputs = {i: _tensor(100 + i) for i in range(12)}  # distinct per request: a swapped answer shows
    answers, done = _send_async(grpc, inputs)
    for _ in inputs:
        assert done.acquire(timeout=60)
    for i, x in inputs.items():
        assert not isinstance(answers[i], Exception), answers[i]
        np.testing.assert_allclose(answers[i], reference.predict_batch(x), rtol=1e-5, atol=1e-5)

    stats = http.get_inference_statistics("small")["model_stats"][0]
    assert max(int(b["batch_size"]) for b in stats["batch_stats"]) > 1  # Triton merged concurrent requests
    assert stats["execution_count"] < stats["inference_count"]


def test_images_companion_answers_what_the_classifier_predicts(server, reference):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    images = [png_bytes(seed, size=(30 + seed, 44 + 3 * seed)) for seed in range(4)]
    expected = reference.predict(images, topk=5)
    for module, url in ((httpclient, server.http), (grpcclient, server.grpc)):
        labels, probabilities, indices = _infer_images(module, module.InferenceServerClient(url), images)
        assert labels.shape == (4, 5)
        for row, prediction in enumerate(expected):
            assert [label.decode() for label in labels[row]] == list(prediction.labels)
            assert indices[row].tolist() == list(prediction.indices)
            np.testing.assert_allclose(probabilities[row], prediction.probabilities, rtol=1e-5, atol=1e-6)


def test_health_and_metrics_endpoints(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/small/ready", "/v2/models/small_images/ready"):
        with urllib.request.urlopen(f"http://{server.http}{path}", timeout=5) as answer:
            assert answer.status == 200, path
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert 'nv_inference_count{model="small",version="1"}' in text


def test_bad_requests_get_an_error_and_the_server_keeps_serving(server, reference):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(server.http)
    good = _tensor(7)
    bad_requests = {
        "shape": lambda: _infer_tensor(httpclient, client, np.zeros((1, 3, 31, 32), np.float32)),
        "dtype": lambda: _infer_tensor(httpclient, client, np.zeros((1, *SHAPE), np.float64)),
        "image": lambda: _infer_images(httpclient, client, [b"this is not an image"]),
        "batch": lambda: _infer_tensor(httpclient, client, np.zeros((9, *SHAPE), np.float32)),  # max batch 8
    }
    messages = {}
    for kind, send in bad_requests.items():
        with pytest.raises(InferenceServerException) as error:
            send()
        messages[kind] = str(error.value)
        np.testing.assert_allclose(_infer_tensor(httpclient, client, good), reference.predict_batch(good),
                                   rtol=1e-5, atol=1e-5)  # the next request is served
    assert "not an image Pillow can read" in messages["image"]
    assert "FP64" in messages["dtype"] or "data-type" in messages["dtype"]


def test_an_undecodable_image_fails_only_its_own_request(server, reference):
    """Requests batched together with a bad one are answered as if it were not there."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc)
    images = {i: png_bytes(50 + i) for i in range(5)}
    images[2] = b"\x89PNG truncated"
    answers, done = {}, threading.Semaphore(0)

    def callback(i):
        def receive(result, error):
            answers[i] = error if error is not None else result.as_numpy("indices")[0].tolist()
            done.release()
        return receive

    for i, data in images.items():
        tensor = grpcclient.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        client.async_infer("small_images", [tensor], callback(i), client_timeout=60)
    for _ in images:
        assert done.acquire(timeout=60)
    assert isinstance(answers[2], Exception)
    for i in (0, 1, 3, 4):
        assert answers[i] == list(reference.predict([images[i]], topk=5)[0].indices)


def _pending(server) -> int:
    """Triton's gauge of requests queued for `small`, from the Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith('nv_inference_pending_request_count{model="small"'):
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def test_sigterm_answers_the_requests_in_flight_and_exits_0(model_folder, reference, tmp_path):
    """Requests waiting in the batcher (3 s queue delay) when SIGTERM arrives are still answered."""
    skip_unless_server_runs()
    import psutil
    import tritonclient.grpc as grpcclient

    server = ServeProcess([model_folder], "--max-queue-delay-us", "3000000").wait_ready()
    try:
        triton = server.triton_pid()
        client = grpcclient.InferenceServerClient(server.grpc)
        inputs = {i: _tensor(300 + i) for i in range(6)}
        answers, done = _send_async(client, inputs)
        deadline = time.monotonic() + 2.5
        while _pending(server) < len(inputs):  # all six sit in the queue, waiting for a batch of 8 or the delay
            assert time.monotonic() < deadline, "the requests did not reach the server's queue in time"
            time.sleep(0.05)
        server.signal(signal.SIGTERM)
        for _ in inputs:
            assert done.acquire(timeout=60)
        assert server.wait(timeout_s=60) == 0
    finally:
        server.stop()
    for i, x in inputs.items():
        assert not isinstance(answers[i], Exception), answers[i]
        np.testing.assert_allclose(answers[i], reference.predict_batch(x), rtol=1e-5, atol=1e-5)
    assert not psutil.pid_exists(triton) or psutil.Process(triton).status() == psutil.STATUS_ZOMBIE


def test_sigkill_gives_connection_errors_never_wrong_answers_and_a_restart_serves(model_folder, reference):
    skip_unless_server_runs()
    import psutil
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from dat_deploy.serving.server import WORKDIR_PREFIX

    server = ServeProcess([model_folder]).wait_ready()
    killed_pid = server.process.pid
    triton = server.triton_pid()
    results: list[tuple[int, int, object]] = []
    stop_at = time.monotonic() + 30

    def client_loop(worker: int):
        client = grpcclient.InferenceServerClient(server.grpc)  # one client per thread
        errors_in_a_row = 0
        for i in range(20_000):  # bounded in count and in time; on a quiet machine 400 took under a second
            if time.monotonic() > stop_at or errors_in_a_row >= 3:
                return
            x = _tensor(10_000 * worker + i)
            tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            try:
                results.append((worker, i, client.infer("small", [tensor], client_timeout=10).as_numpy("logits")))
                errors_in_a_row = 0
            except InferenceServerException as exc:
                results.append((worker, i, exc))
                errors_in_a_row += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(4)]
    try:
        for thread in threads:
            thread.start()
        answers_before_kill = time.monotonic() + 20
        while len(results) < 40 and time.monotonic() < answers_before_kill:  # kill mid-load, whatever the speed
            time.sleep(0.01)
        server.signal(signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        deadline = time.monotonic() + 20
        while psutil.pid_exists(triton) and psutil.Process(triton).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "tritonserver outlived its killed parent"
            time.sleep(0.1)
    finally:
        server.stop()

    answered = [(w, i, r) for w, i, r in results if not isinstance(r, Exception)]
    failed = [r for _, _, r in results if isinstance(r, Exception)]
    assert answered and failed
    for worker, i, logits in answered:
        x = _tensor(10_000 * worker + i)
        np.testing.assert_allclose(logits, reference.predict_batch(x), rtol=1e-5, atol=1e-5)
    assert all("StatusCode.UNAVAILABLE" in str(exc) or "StatusCode.CANCELLED" in str(exc) for exc in failed), failed

    restarted = ServeProcess([model_folder], ports=[server.http_port, server.grpc_port, server.metrics_port])
    try:
        restarted.wait_ready()
        import tritonclient.http as httpclient

        x = _tensor(9)
        answer = _infer_tensor(httpclient, httpclient.InferenceServerClient(restarted.http), x)
        np.testing.assert_allclose(answer, reference.predict_batch(x), rtol=1e-5, atol=1e-5)
        import tempfile

        leftovers = list(Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}{killed_pid}-*"))
        assert not leftovers  # the restarted server removed what the killed one left
    finally:
        restarted.stop()


def test_a_port_in_use_is_named_and_nothing_starts(model_folder):
    skip_unless_server_runs()
    import socket
    import subprocess

    from serving_helpers import REPO_ROOT, free_ports

    http_port, grpc_port, metrics_port = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", grpc_port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "dat_deploy.cli", "serve", str(model_folder), "--http-port", str(http_port),
             "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)],
            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{grpc_port} (Address already in use): choose another --grpc-port."]


def test_the_served_repository_carries_the_settings(model_folder, tmp_path):
    """What `serve` hands Triton, parsed with Triton's own ModelConfig schema (no server needed)."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    from dat_deploy.serving.repository import ServeSettings, write_serving_repository

    settings = ServeSettings(max_batch=4, max_queue_delay_us=2500, instances=2, threads=3, topk=7)
    served = write_serving_repository([model_folder], tmp_path / "repo", settings)
    assert [(m.name, m.images_model, m.max_batch_size) for m in served] == [("small", "small_images", 4)]

    def parse(name):
        return text_format.Parse((tmp_path / "repo" / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())

    tensor, images = parse("small"), parse("small_images")
    assert tensor.platform == "onnxruntime_onnx" and tensor.max_batch_size == 4
    assert tensor.dynamic_batching.max_queue_delay_microseconds == 2500
    assert [(g.kind, g.count) for g in tensor.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)]
    assert tensor.parameters["intra_op_thread_count"].string_value == "3"
    assert images.backend == "python" and images.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in images.output] == [("labels", [7]), ("probabilities", [7]), ("indices", [7])]
    assert images.parameters["tensor_model"].string_value == "small"
    assert images.parameters["input_size"].string_value == "32"
    assert (tmp_path / "repo" / "small_images" / "1" / "model.py").is_file()


def test_files_of_a_killed_server_are_removed_and_a_running_ones_kept(tmp_path):
    import os
    import subprocess

    from dat_deploy.serving.server import SHM_PREFIX, WORKDIR_PREFIX, remove_stale_files

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead, alive = finished.pid, os.getpid()
    tmp, shm = tmp_path / "tmp", tmp_path / "shm"
    tmp.mkdir(), shm.mkdir()
    for pid in (dead, alive):
        (tmp / f"{WORKDIR_PREFIX}{pid}-abc" / "models").mkdir(parents=True)
        (shm / f"{SHM_PREFIX}{pid}_small_0_0").write_bytes(b"region")
    (tmp / "unrelated-folder").mkdir()
    remove_stale_files(tmp, shm)
    assert sorted(p.name for p in tmp.iterdir()) == sorted([f"{WORKDIR_PREFIX}{alive}-abc", "unrelated-folder"])
    assert [p.name for p in shm.iterdir()] == [f"{SHM_PREFIX}{alive}_small_0_0"]
