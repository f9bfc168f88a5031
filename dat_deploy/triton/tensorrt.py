"""The Triton side of an engine: config.pbtxt for the tensorrt backend and a README on loading the plugin."""

from __future__ import annotations

from pathlib import Path

from dat_deploy.triton.config import add_instance_group, model_config, tensor_config


def tensorrt_model_config(
    name: str,
    input_name: str,
    input_dims: tuple[int, ...],
    outputs: dict[str, tuple[int, ...]],
    max_batch: int,
    preferred_batches: tuple[int, ...] = (),
):
    """A ModelConfig for Triton's tensorrt backend with dynamic batching up to the profile's max batch.

    Dims exclude the batch dimension (max_batch_size > 0); -1 marks a dynamic dimension. Triton
    refuses dynamic batching unless the engine's profile covers max_batch_size, which build-trt
    guarantees by using the profile's max batch here.
    """
    config = model_config(
        name,
        "tensorrt_plan",
        [tensor_config(input_name, list(input_dims))],
        [tensor_config(out, list(dims)) for out, dims in outputs.items()],
        max_batch_size=max_batch,
        preferred_batch_sizes=sorted({b for b in preferred_batches if 1 < b <= max_batch}),
    )
    add_instance_group(config, gpu=True)
    return config


def plugin_readme(model_name: str, plugin_library: Path | None, tensorrt_version: str) -> str:
    if plugin_library is None:
        loading = (
            "This engine uses only TensorRT's own layers (native flavour): no plugin library is needed.\n\n"
            "    tritonserver --model-repository=/path/to/models\n"
        )
    else:
        lib = Path(plugin_library).name
        loading = (
            "This engine contains the DAT plugins (`DATDeformSample`, `DATDeformAttention`, `DATWindowAttention`,\n"
            f"`DATRelPosBias`) from `{lib}`.\n"
            "Triton's tensorrt backend must have that library loaded before it deserialises the plan:\n\n"
            f"    LD_PRELOAD=/path/to/{lib}:${{LD_PRELOAD}} tritonserver --model-repository=/path/to/models\n\n"
            "or, with the tensorrt backend's option,\n\n"
            f'    tritonserver --model-repository=/path/to/models --backend-config=tensorrt,plugins="/path/to/{lib}"\n\n'
            "Use the library this engine was built with (its path and sha256 are in `dat_deploy.json`), built\n"
            "against the TensorRT version of the Triton container.\n"
        )
    return (
        f"# {model_name}\n\n"
        f"A TensorRT {tensorrt_version} engine (`1/model.plan`) for Triton's tensorrt backend, written by\n"
        "`dat-deploy build-trt`. A plan only runs on the TensorRT version and GPU architecture it was built\n"
        "for (both recorded in `dat_deploy.json`); rebuild it for another container or GPU.\n"
        "`model_fp16.onnx` (fp16 engines only) is the fp16 graph the engine was built from; onnxruntime runs it too.\n\n"
        f"{loading}"
    )
