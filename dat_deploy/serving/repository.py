"""The model repository that `dat-deploy serve` hands to Triton, written into a folder of its own.

The tensor models are exactly what `dat-deploy triton` writes (the same `gather`: configs checked, the
op library copied in, the plugin graphs with the CPU-only ops), with the serving settings applied to the
copy's config: max batch size, queue delay, CPU instances and onnxruntime threads. Next to every classifier
goes a companion `<name>_images` (python backend) that takes encoded images and answers top-k classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from dat_deploy.errors import UserError
from dat_deploy.triton.config import CONFIG_NAME
from dat_deploy.serving.distribution import IMAGE_MODEL_SOURCE

IMAGES_SUFFIX = "_images"
IMAGE_INPUT = "image"
DAT_DEPLOY_PATH = str(Path(__file__).resolve().parents[2])  # the models Triton runs import this same dat_deploy


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int | None = None  # None: keep the exported config's max_batch_size
    max_queue_delay_us: int | None = None  # None: keep the config's
    instances: int = 1
    threads: int | None = None  # onnxruntime intra-op threads per instance; None: cores / instances
    topk: int = 5

    def intra_op_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, self.instances))


@dataclass
class ServedModel:
    name: str  # the tensor model
    input: str
    output: str
    max_batch_size: int
    images_model: str | None = None  # the companion, when the model is a classifier
    notes: list[str] = field(default_factory=list)


def write_serving_repository(sources: Sequence[str | os.PathLike], repository: Path, settings: ServeSettings,
                             models_root: Path = Path("models")) -> list[ServedModel]:
    from dat_deploy.triton import repository as triton_repo

    result = triton_repo.gather(sources, repository, models_root=models_root)
    served = []
    for model in result.models:
        if model.kind != "onnxruntime":
            raise UserError(f"{model.name} is a TensorRT engine: the Triton that nvidia-pytriton ships has no TensorRT "
                            "backend. Serve it with the container command `dat-deploy triton` prints.")
        served.append(_apply_settings(model.path, settings))
    names = {m.name for m in served}
    for model in served:
        companion = model.name + IMAGES_SUFFIX
        if companion in names:
            model.notes.append(f"no {companion}: a model of that name is served already")
            continue
        info = _classifier_info(repository / model.name)
        if isinstance(info, str):
            model.notes.append(f"no {companion}: {info}")
            continue
        _write_images_model(repository / companion, model, info, settings)
        model.images_model = companion
    return served


def _apply_settings(folder: Path, settings: ServeSettings) -> ServedModel:
    from dat_deploy.triton.config import add_instance_group, config_text, load_config

    config = load_config(folder / CONFIG_NAME)
    if settings.max_batch is not None:
        if config.max_batch_size <= 0:
            raise UserError(f"{folder.name} was exported with a fixed batch (max_batch_size 0): --max-batch needs a "
                            "dynamic-batch export (`dat-deploy export --batch dynamic`).")
        config.max_batch_size = settings.max_batch
        kept = [b for b in config.dynamic_batching.preferred_batch_size if b <= settings.max_batch]
        del config.dynamic_batching.preferred_batch_size[:]
        config.dynamic_batching.preferred_batch_size.extend(kept)
    if settings.max_queue_delay_us is not None and config.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    del config.instance_group[:]
    add_instance_group(config, gpu=False, count=settings.instances)
    config.parameters["intra_op_thread_count"].string_value = str(settings.intra_op_threads())
    config.parameters["dat_deploy_path"].string_value = DAT_DEPLOY_PATH  # the backend sets up sessions as we do
    libraries = [str(folder / Path(name).name) for name in config.model_operations.op_library_filename]
    del config.model_operations.op_library_filename[:]
    config.model_operations.op_library_filename.extend(libraries)  # this machine's copy, not the container path
    (folder / CONFIG_NAME).write_text(config_text(config), encoding="utf-8")
    return ServedModel(folder.name, config.input[0].name, config.output[0].name, config.max_batch_size)


def _classifier_info(folder: Path):
    """The preprocessing a classifier export records, or why the folder gets no image companion."""
    from dat_deploy.api import model_info
    from dat_deploy.artifacts import open_artifact

    try:
        return model_info(open_artifact(folder))
    except UserError as exc:
        return str(exc)


def _write_images_model(folder: Path, tensor: ServedModel, info, settings: ServeSettings) -> None:
    from dat_deploy.triton.config import add_instance_group, config_text, model_config, tensor_config

    topk = min(settings.topk, info.num_classes)
    outputs = [tensor_config("labels", [topk], "TYPE_STRING"), tensor_config("probabilities", [topk]),
               tensor_config("indices", [topk], "TYPE_INT32")]
    config = model_config(folder.name, "", [tensor_config(IMAGE_INPUT, [1], "TYPE_STRING")], outputs,
                          max_batch_size=max(1, tensor.max_batch_size), backend="python")
    config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us or 100
    add_instance_group(config, gpu=False)
    parameters = {
        "tensor_model": tensor.name, "tensor_input": tensor.input, "tensor_output": tensor.output,
        "tensor_max_batch": tensor.max_batch_size, "input_size": info.input_size, "resize_size": info.resize_size,
        "mean": json.dumps(list(info.mean)), "std": json.dumps(list(info.std)), "num_classes": info.num_classes,
        "topk": topk, "dat_deploy_path": DAT_DEPLOY_PATH,
    }
    for key, value in parameters.items():
        config.parameters[key].string_value = str(value)
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_bytes(IMAGE_MODEL_SOURCE.read_bytes())
    (folder / CONFIG_NAME).write_text(config_text(config), encoding="utf-8")
