"""Run-time dispatch of the CPU kernels: libdat_ort_ops holds one copy of the kernels per instruction-set layer and
picks one from CPUID. Every layer this CPU has, forced through DAT_DEPLOY_CPU_LAYER, must give the portable layer's
outputs within fp32 rounding, and DATDeformSample must match F.grid_sample in each."""

from __future__ import annotations

import collections
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpu_layer_graphs import load_outputs, write_graphs
from dat_deploy.errors import UserError
from dat_deploy.native import ort_library_path
from dat_deploy.native.cpu_layer import LAYERS, read_cpu_layer, register_ort_ops, runtime_requirements

RUNNER = Path(__file__).with_name("run_plugin_graphs.py")
# The layers differ in vector width (4 / 8 / 16 lanes: sums in another order) and in FMA; measured differences are
# below 2.1e-7 of the output's largest magnitude on these graphs (2026-12-06, AMD EPYC).
RELATIVE_TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def library() -> Path:
    return ort_library_path(build=True)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    return write_graphs(tmp_path_factory.mktemp("cpu_layer_graphs"))


def run_layer(library: Path, graphs: dict[str, Path], out: Path, layer: str | None) -> str:
    """Outputs of every graph in a fresh process with DAT_DEPLOY_CPU_LAYER=layer; returns its stdout."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "DAT_DEPLOY_CPU_LAYER"}
    if layer is not None:
        env["DAT_DEPLOY_CPU_LAYER"] = layer
    proc = subprocess.run([sys.executable, str(RUNNER), str(library), str(out), *map(str, graphs.values())],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def assert_close_to(reference: dict, outputs: dict, what: str) -> None:
    assert reference.keys() == outputs.keys()
    for graph, tensors in reference.items():
        for name, expected in tensors.items():
            expected = expected.astype(np.float64)
            got = outputs[graph][name].astype(np.float64)
            scale = max(float(np.abs(expected).max()), 1.0)
            error = float(np.abs(got - expected).max())
            assert error <= RELATIVE_TOLERANCE * scale, f"{what}: {graph}/{name} differs by {error:.3g} (scale {scale:.3g})"


def grid_sample_reference(inputs_path: Path, groups: int) -> np.ndarray:
    """DATDeformSample's contract: F.grid_sample of each group's channels at pos (y, x), align_corners=True."""
    feeds = np.load(inputs_path)
    x = torch.from_numpy(feeds["x"].astype(np.float32))
    pos = torch.from_numpy(feeds["pos"])
    b, c, h, w = x.shape
    grouped = x.reshape(b * groups, c // groups, h, w)
    out = F.grid_sample(grouped, pos[..., (1, 0)], mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(b, c, *pos.shape[1:3]).numpy()


def test_the_library_reports_the_widest_layer_the_cpu_has(library):
    choice = read_cpu_layer(library)  # this process: DAT_DEPLOY_CPU_LAYER unset unless the user set it
    if os.environ.get("DAT_DEPLOY_CPU_LAYER"):
        pytest.skip("DAT_DEPLOY_CPU_LAYER is set in this environment")
    assert choice.supported[0] == "portable" and set(choice.supported) <= set(LAYERS)
    assert choice.layer == choice.supported[-1]
    assert "CPUID" in choice.reason
    if platform.machine() in ("x86_64", "AMD64"):
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        if re.search(r"\bavx512vl\b", flags) and re.search(r"\bavx512bw\b", flags):
            assert choice.layer == "avx512"


def test_every_layer_agrees_with_the_portable_one_and_with_grid_sample(library, graphs, tmp_path):
    supported = read_cpu_layer(library).supported
    outputs = {}
    for layer in supported:
        stdout = run_layer(library, graphs, tmp_path / layer, layer)
        assert f'"layer": "{layer}"' in stdout and "forced by DAT_DEPLOY_CPU_LAYER" in stdout
        outputs[layer] = load_outputs(tmp_path / layer)
        assert outputs[layer].keys() == graphs.keys()
        for name in ("deform_sample", "deform_sample_fp16"):
            expected = grid_sample_reference(graphs[name].with_suffix(".inputs.npz"), groups=2)
            tolerance = 2e-6 if name == "deform_sample" else 2e-3  # fp16 output: half an fp16 ulp at |y| ~ 2-4
            np.testing.assert_allclose(outputs[layer][name]["y"].astype(np.float32), expected, atol=tolerance,
                                       err_msg=f"{layer}: {name} against F.grid_sample")
    for layer in supported[1:]:
        assert_close_to(outputs["portable"], outputs[layer], f"{layer} against portable")


def test_an_unknown_layer_is_refused_with_the_names_to_use(library, graphs, tmp_path):
    env = {**os.environ, "DAT_DEPLOY_CPU_LAYER": "sse9"}
    proc = subprocess.run([sys.executable, str(RUNNER), str(library), str(tmp_path), str(graphs["deform_sample"])],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert '"layer": ""' in proc.stdout
    assert "DAT_DEPLOY_CPU_LAYER=sse9 is not a layer of this library; use one of: portable, avx2, avx512" in proc.stderr


def test_register_turns_a_refused_layer_into_a_user_error(library, monkeypatch):
    import dat_deploy.native.cpu_layer as cpu_layer

    class Options:
        registered = None

        def register_custom_ops_library(self, path):
            self.registered = path

    options = Options()
    assert register_ort_ops(options, library).layer and options.registered == str(library)
    refused = cpu_layer.CpuLayer("", "DAT_DEPLOY_CPU_LAYER=avx512 needs x86-64-v4 ...", ("portable",))
    monkeypatch.setattr(cpu_layer, "read_cpu_layer", lambda _: refused)
    with pytest.raises(UserError, match=f"{re.escape(library.name)}: DAT_DEPLOY_CPU_LAYER=avx512 needs"):
        cpu_layer.register_ort_ops(Options(), library)


@pytest.mark.skipif(shutil.which("objdump") is None or platform.machine() not in ("x86_64", "AMD64"),
                    reason="needs objdump on x86-64")
def test_no_avx_instruction_outside_the_avx_layers(library):
    """A function that every layer may call (the standard library's templates, the dispatcher, the op registry)
    must be baseline x86-64 code: one merged from an AVX layer would kill the library on an older CPU."""
    listing = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(library)], capture_output=True,
                             text=True, check=True).stdout
    function = None
    offenders: dict[str, set[str]] = collections.defaultdict(set)
    per_layer = collections.Counter()
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
            continue
        fields = line.split("\t")
        if function is None or len(fields) < 2 or not fields[1].split():
            continue
        mnemonic = fields[1].split()[0]
        if not mnemonic.startswith("v"):  # VEX / EVEX encodings (AVX and later) are the v-prefixed mnemonics
            continue
        layer = next((name for name in ("avx2", "avx512") if f"::{name}::" in function), None)
        if layer is None:
            offenders[function].add(mnemonic)
        else:
            per_layer[layer] += 1
    assert not offenders, "AVX instructions outside a layer: " + "; ".join(
        f"{name[:120]}: {sorted(m)[:4]}" for name, m in list(offenders.items())[:5])
    assert per_layer["avx2"] > 100 and per_layer["avx512"] > 100  # the layers are there and vectorised
    # Each layer runs its own vector width: DATGemm's 6-row tile does its FMAs on ymm (avx2) / zmm (avx512)
    # registers, not on the portable layer's 4 lanes (what the layers compiled had they missed their vector path).
    for layer, register in (("avx2", "%ymm"), ("avx512", "%zmm")):
        fmas = _fmas_of(listing, f"dat::cpu::{layer}::(anonymous namespace)::tile<6>(")
        assert fmas and all(register in fma for fma in fmas), f"{layer} DATGemm tile: {fmas[:3]}"


def _fmas_of(listing: str, function_prefix: str) -> list[str]:
    """The FMA instructions of the function whose demangled name starts with function_prefix."""
    fmas, inside = [], False
    for line in listing.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            inside = header.group(1).startswith(function_prefix) or (" " + function_prefix) in header.group(1)
            continue
        if inside and "vfmadd" in line:
            fmas.append(line.split("\t")[-1])
    return fmas


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump")
def test_runtime_requirements_are_the_newest_versions_objdump_lists(library):
    listing = subprocess.run(["objdump", "-T", str(library)], capture_output=True, text=True, check=True).stdout

    def newest(prefix: str) -> str:
        versions = {tuple(map(int, v.split("."))) for v in re.findall(rf"\(?\b{prefix}_(\d+(?:\.\d+)+)\)?", listing)}
        return ".".join(map(str, max(versions)))

    needs = runtime_requirements(library)
    assert needs["glibc"] == newest("GLIBC")
    assert needs["glibcxx"] == newest("GLIBCXX")


def test_doctor_says_which_layer_runs_and_why(library, monkeypatch):
    from dat_deploy import native
    from dat_deploy.doctor import check_plugins

    monkeypatch.setenv("DAT_DEPLOY_ORT_OPS", str(library))
    choice = read_cpu_layer(library)
    (entry,) = [c for c in check_plugins() if c.name == "CPU kernel layer"]
    assert entry.status == "ok" and entry.detail.startswith(f"{choice.layer}: {choice.reason}")
    assert "DAT_DEPLOY_CPU_LAYER" in entry.fix
    assert native.bundled_build_info() is None  # a source checkout: no wheel's libraries
