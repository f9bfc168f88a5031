"""Load test: N concurrent clients x M requests against `dat-deploy serve`, against the in-process Classifier.

    python benchmarks/bench_serve.py                              # DAT-T plugin flavour, 16 clients x 25 requests
    python benchmarks/bench_serve.py --model models/dat_t --clients 4 --requests 5
    python benchmarks/bench_serve.py --variant dat_pp_t --threads 2 --instances 1 --max-batch 8

Every request carries its own input (seeded, distinct per request) and its answer is checked against the
in-process result for that same input, computed one call after another before the server starts: a lost,
mixed-up or wrong answer fails the run. Reported: throughput, latency p50/p90/p99, the batch sizes Triton
formed (its statistics API, before/after difference), and the in-process `dat_deploy.api.Classifier`
throughput at its best batch size (chosen by a first sweep) in the same run: the load is split into rounds,
each followed by the in-process run on as many images, so on a machine shared with other work both sides
sample the same minutes. Clients are gRPC, one client per thread, in this process.
CPU seconds per image (the server process tree plus the clients, against the in-process run) are reported
too: on a machine shared with other work, throughput follows the share of the cores each side gets, while CPU
time per image is what the serving path itself costs.
Exit code 1 if an answer is wrong or missing, or the throughput ratio is below --goal.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a model folder (default: export --variant --flavor)")
    parser.add_argument("--variant", default="dat_t")
    parser.add_argument("--flavor", default="plugin")
    parser.add_argument("--models", type=Path, default=Path("reports") / "bench-serve-models",
                        help="where the export goes (reused between runs)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=25, help="requests per client")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-queue-delay-us", type=int, default=50_000,
                        help="how long Triton may wait to fill a batch: with clients that answer late on a busy "
                             "machine, 100 us sends part batches, which cost more per image")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per instance")
    parser.add_argument("--baseline-batches", default="4,8,16")
    parser.add_argument("--baseline-images", type=int, default=32, help="images per batch size in the first sweep")
    parser.add_argument("--rounds", type=int, default=5,
                        help="the load is split into rounds, each followed by the in-process baseline on as many "
                             "images, so both sample the same minutes of a shared machine")
    parser.add_argument("--goal", type=float, default=0.85, help="server / in-process throughput to pass")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--output", type=Path, default=None, help="markdown report (default: benchmarks/results/)")
    return parser.parse_args(argv)


def machine_slug() -> str:
    """'amd-epyc': the CPU model, for the report's file name."""
    from dat_deploy.profiling.machine import cpu_model  # noqa: PLC0415 (dat_deploy from REPO, put on sys.path by main)

    words = "".join(c if c.isalnum() else "-" for c in cpu_model().lower()).split("-")
    return "-".join(w for w in words if w) or "cpu"


def model_folder(args, log) -> Path:
    if args.model:
        return args.model
    from dat_deploy.export import export_onnx

    name = f"{args.variant}_{args.flavor}_serve_bench"
    folder = args.models / name
    if not (folder / "1" / "model.onnx").is_file():
        log(f"exporting {args.variant} ({args.flavor} flavour) to {folder}")
        export_onnx(args.variant, output_dir=args.models, name=name, flavor=args.flavor, check=False)
    return folder


def baseline(classifier, inputs: np.ndarray, batches: list[int], images: int) -> tuple[dict[int, float], dict[int, float]]:
    """Per batch size: images/s of Classifier.predict_batch, and CPU seconds per image (this process, all its
    threads). One warm-up call each, then `images` images."""
    rates, cpu = {}, {}
    for size in batches:
        count = max(size, images // size * size)
        classifier.predict_batch(inputs[:size])
        start, start_cpu = time.perf_counter(), time.process_time()
        for first in range(0, count, size):
            classifier.predict_batch(inputs[first % len(inputs):][:size])
        rates[size] = count / (time.perf_counter() - start)
        cpu[size] = (time.process_time() - start_cpu) / count
    return rates, cpu


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (serve, tritonserver, the python stubs)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_server(folder: Path, args, ports: list[int], log) -> subprocess.Popen:
    command = [sys.executable, "-m", "dat_deploy.cli", "serve", str(folder), "--http-port", str(ports[0]),
               "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--max-batch", str(args.max_batch),
               "--instances", str(args.instances)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    command += ["--max-queue-delay-us", str(args.max_queue_delay_us)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"dat-deploy serve exited with {process.wait()} before it was ready")
        if line.startswith(("ready:", "serving", "note:", "error")):
            log(line.rstrip())
        if line.startswith("ready:"):
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # drain the log
            return process
    process.kill()
    raise SystemExit("dat-deploy serve was not ready within 300 s")


def batch_counts(client, name: str) -> dict[int, int]:
    stats = client.get_inference_statistics(name).model_stats[0]
    return {int(b.batch_size): int(b.compute_infer.count) for b in stats.batch_stats}


def load(grpc_url: str, name: str, input_name: str, output_name: str, inputs: np.ndarray, clients: int,
         requests: int, first: int = 0, count: int | None = None) -> tuple[list[float], dict[int, object], float]:
    """Client w sends its inputs w * requests + first ... + count - 1 one after another (all of them by default);
    returns latencies, answers by input index, wall time."""
    count = requests - first if count is None else count
    import tritonclient.grpc as grpcclient

    latencies: list[float] = []
    answers: dict[int, object] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client_loop(worker: int):
        client = grpcclient.InferenceServerClient(grpc_url)  # one client per thread
        barrier.wait()
        for i in range(first, first + count):
            index = worker * requests + i
            tensor = grpcclient.InferInput(input_name, [1, *inputs.shape[1:]], "FP32")
            tensor.set_data_from_numpy(inputs[index:index + 1])
            start = time.perf_counter()
            try:
                answer = client.infer(name, [tensor], client_timeout=300).as_numpy(output_name)
            except Exception as exc:  # noqa: BLE001 - counted as an error in the report
                answer = exc
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                answers[index] = answer
        client.close()

    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join(timeout=3600)
    return latencies, answers, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import tritonclient.grpc as grpcclient

    from dat_deploy.api import Classifier
    from dat_deploy.profiling.machine import cpu_model

    def log(message):
        print(message, flush=True)

    folder = model_folder(args, log)
    classifier = Classifier.from_artifact(folder)
    backend = classifier.backend
    size = classifier.info.input_size
    total = args.clients * args.requests
    inputs = np.random.default_rng(0).normal(size=(total, 3, size, size)).astype(np.float32)
    batches = [int(b) for b in args.baseline_batches.split(",")]

    log(f"in-process baseline ({backend.name}, batches {batches}) ...")
    before, _ = baseline(classifier, inputs, batches, args.baseline_images)
    log("  " + ", ".join(f"b{b}: {r:.2f} img/s" for b, r in before.items()))
    log(f"reference answers: {total} inputs, in-process, one call after another ...")
    best = max(before, key=before.get)
    reference = np.concatenate([classifier.predict_batch(inputs[i:i + best]) for i in range(0, total, best)])

    ports = free_ports(3)
    server = start_server(folder, args, ports, log)
    try:
        grpc_url = f"127.0.0.1:{ports[1]}"
        client = grpcclient.InferenceServerClient(grpc_url)
        name = folder.name
        metadata = client.get_model_metadata(name)
        input_name, output_name = metadata.inputs[0].name, metadata.outputs[0].name
        load(grpc_url, name, input_name, output_name, inputs[:2 * args.max_batch], 2 * args.max_batch, 1)  # warm-up
        counts_before = batch_counts(client, name)
        log(f"load: {args.clients} clients x {args.requests} requests in {args.rounds} rounds, each followed by "
            f"the in-process Classifier at batch {best} on as many images ...")
        latencies, answers, wall, server_cpu, clients_cpu = [], {}, 0.0, 0.0, 0.0
        local_images, local_wall, local_cpu = 0, 0.0, 0.0
        bounds = np.linspace(0, args.requests, args.rounds + 1).astype(int)
        for first, last in zip(bounds[:-1], bounds[1:]):
            tree, own = tree_cpu_seconds(server.pid), time.process_time()
            lat, ans, seconds = load(grpc_url, name, input_name, output_name, inputs, args.clients, args.requests,
                                     int(first), int(last - first))
            server_cpu += tree_cpu_seconds(server.pid) - tree
            clients_cpu += time.process_time() - own
            latencies += lat
            answers.update(ans)
            wall += seconds
            time.sleep(0.2)  # the server's onnxruntime threads stop spinning before the local run
            images = args.clients * int(last - first)
            rates, cpu = baseline(classifier, inputs, [best], images)
            local_images += images
            local_wall += images / rates[best]
            local_cpu += cpu[best] * images
            log(f"  round: server {len(lat) / seconds:.2f} img/s, in-process {rates[best]:.2f} img/s")
            time.sleep(0.2)
        answered = sum(not isinstance(a, Exception) for a in answers.values())
        deadline = time.monotonic() + 10
        while True:  # Triton counts an execution after its responses went out: wait for the last one
            counts_after = batch_counts(client, name)
            done = sum(b * (n - counts_before.get(b, 0)) for b, n in counts_after.items())
            if done >= answered or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server_exit = server.wait(timeout=120)
    formed = {b: counts_after.get(b, 0) - counts_before.get(b, 0) for b in counts_after}
    formed = {b: n for b, n in sorted(formed.items()) if n}

    errors = [i for i in range(total) if isinstance(answers.get(i), Exception) or i not in answers]
    wrong = [i for i in range(total) if i not in errors
             and not np.allclose(answers[i][0], reference[i], rtol=args.atol, atol=args.atol)]
    throughput = len(latencies) / wall
    local_rate = local_images / local_wall
    ratio = throughput / local_rate
    cpu_per_image = (server_cpu + clients_cpu) / max(1, len(latencies))
    cpu_baseline = local_cpu / local_images
    passed = not errors and not wrong and ratio >= args.goal and server_exit == 0

    lines = [
        f"# dat-deploy serve under load: {folder.name}",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {os.cpu_count()} cores; "
        f"`python benchmarks/bench_serve.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip(),
        "",
        f"Server: `dat-deploy serve` (Triton 2.51 from nvidia-pytriton, Python-based onnxruntime backend), "
        f"max batch {args.max_batch}, {args.instances} instance(s), threads {args.threads or 'cores / instances'}, "
        f"queue delay {args.max_queue_delay_us} us. "
        f"Clients: {args.clients} gRPC clients x {args.requests} requests of one image each, in the benchmark's "
        "process on the same machine.",
        "",
        "| | value |",
        "|---|---|",
        f"| requests answered / sent | {total - len(errors)} / {total} |",
        f"| wrong answers (vs in-process result for the same input, atol=rtol={args.atol}) | {len(wrong)} |",
        f"| errors | {len(errors)} |",
        f"| server throughput | {throughput:.2f} img/s |",
        f"| latency p50 / p90 / p99 | {percentile(latencies, 50) * 1e3:.0f} / {percentile(latencies, 90) * 1e3:.0f} / "
        f"{percentile(latencies, 99) * 1e3:.0f} ms |",
        f"| batch sizes Triton formed (size: executions) | {', '.join(f'{b}: {n}' for b, n in formed.items())} |",
        f"| in-process Classifier ({backend.name}) before the run, per batch | "
        + "; ".join(f"b{b}: {before[b]:.2f} img/s" for b in batches) + " |",
        f"| baseline: in-process at batch {best}, run between the server's rounds on as many images | "
        f"{local_rate:.2f} img/s |",
        f"| server / in-process | **{ratio:.3f}** (goal >= {args.goal}) |",
        f"| CPU seconds per image: server processes + clients / in-process at batch {best} | "
        f"{cpu_per_image:.3f} ({server_cpu / max(1, len(latencies)):.3f} + {clients_cpu / max(1, len(latencies)):.3f}) "
        f"/ {cpu_baseline:.3f}: the server costs **{cpu_per_image / cpu_baseline:.3f}x** the CPU time per image |",
        f"| server exit code after SIGTERM | {server_exit} |",
        f"| result | {'PASSED' if passed else 'FAILED'} |",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    output = args.output or REPO / "benchmarks" / "results" / (
        f"{datetime.now(timezone.utc):%Y-%m-%d-%H%M}-{machine_slug()}-serve.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=output.parent, delete=False, suffix=".partial") as handle:
        handle.write(report)
    os.replace(handle.name, output)
    log(f"wrote {output}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
