"""What gets quantized and how: one recipe per target, the quantizer's arguments derived from it.

Both targets put Q/DQ on the inputs of MatMul / Gemm / Conv whose weight is a constant (linear layers,
1x1 and stem/downsample convs): weights int8 per output channel, symmetric; activations per tensor.
LayerNorm, Softmax, GELU, residual Adds and every `dat` op stay float, and so does every tensor that is
not the input of a quantized node (the quantizer gives other consumers the original float tensor).

- onnxruntime: activations uint8 with a zero point (what MLAS's U8S8 / U8U8 kernels take on x86), biases
  int32, Gemm / MatMul outputs float (QGemm / MatMulIntegerToFloat write fp32 straight into the LayerNorm,
  GELU or residual that follows), Conv outputs uint8 (QLinearConv; a Conv on dequantized inputs with a
  float output has no int8 kernel in onnxruntime and would only add work).
- tensorrt: everything symmetric int8 (all zero points 0), weights clamped to [-127, 127], biases float,
  no output quantized: TensorRT's explicit-quantization rules (its developer guide: Q/DQ on the inputs of
  weighted ops only).

Two graphs, not one, by measurement (DAT-T batch 8, 2 threads, AMD EPYC with AVX-512 VNNI, interleaved;
benchmarks/results/): onnxruntime ran the tensorrt graph at 1.01x our fp32 plugin flavour and its own
graph at 1.87x. With float biases and int8 activations onnxruntime fuses no QGemm: every Gemm runs in fp32
on dequantized inputs, after the Q/DQ work.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field

QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")
TARGETS = ("onnxruntime", "tensorrt")


@dataclass
class Recipe:
    target: str = "onnxruntime"
    method: str = "minmax"
    reduce_range: bool = False
    exclude_patterns: list[str] = field(default_factory=list)
    quantized_nodes: list[str] = field(default_factory=list)
    float_nodes: dict[str, str] = field(default_factory=dict)  # node name -> why it stayed float

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(weights="int8 per output channel, symmetric", activations=self.activation_scheme,
                    quantized_op_types=list(QUANTIZED_OPS), quantized_inputs="inputs of matrix products and convs "
                    "with constant weights; LayerNorm, Softmax, GELU, residual Adds and dat ops stay float")
        return data

    @property
    def activation_scheme(self) -> str:
        return ("int8 per tensor, symmetric (zero point 0)" if self.target == "tensorrt"
                else "uint8 per tensor, asymmetric")


def constant_weight_nodes(model) -> list:
    """MatMul / Gemm / Conv nodes of the main graph whose second input (the weight) is an initializer."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n for n in model.graph.node if n.op_type in QUANTIZED_OPS and not n.domain and len(n.input) > 1
            and n.input[1] in constants]


def excluded_by_pattern(name: str, patterns: list[str]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def quantizer_arguments(recipe: Recipe) -> dict:
    """Keyword arguments of onnxruntime.quantization.quantize_static for the recipe (the nodes come separately)."""
    from onnxruntime.quantization import QuantFormat, QuantType

    from dat_deploy.quantize.calibrate import calibration_method

    tensorrt = recipe.target == "tensorrt"
    extra = {
        "MatMulConstBOnly": True,
        "WeightSymmetric": True,
        "ActivationSymmetric": tensorrt,
        "QuantizeBias": not tensorrt,
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS) if tensorrt else ["MatMul", "Gemm"],
    }
    return dict(quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                reduce_range=recipe.reduce_range, activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=calibration_method(recipe.method), extra_options=extra)
