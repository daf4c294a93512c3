"""Synthetic sherpa-onnx models for wiring tests: a pyannote-shaped segmentation net and a
WeSpeaker-shaped embedding net, random weights, carrying the metadata sherpa-onnx reads.

No real segmentation or sherpa embedding model can be had here (none ships in a package this
project installs), so these prove the path (settings -> engine -> sherpa-onnx -> turns ->
words, files and streams), never its accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(graph, meta: dict[str, object], path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def embedding_model(path: Path) -> Path:
    """fbank (N, T, 80) -> mean over time -> (N, 16)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(80, 16)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["mean", "W"], ["embs"]),
        ],
        "embedding",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 80])],
        [helper.make_tensor_value_info("embs", TensorProto.FLOAT, ["N", 16])],
        [numpy_helper.from_array(weights, "W")],
    )
    meta = {
        "framework": "wespeaker",
        "output_dim": 16,
        "sample_rate": 16000,
        "normalize_samples": 0,
        "language": "English",
    }
    return _save(graph, meta, path)


def segmentation_model(path: Path) -> Path:
    """samples (N, 1, T) -> frames of 7 powerset classes, pyannote's receptive field."""
    from onnx import TensorProto, helper, numpy_helper

    kernel = (np.random.default_rng(1).normal(size=(7, 1, 991)) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "K"], ["c"], kernel_shape=[991], strides=[270]),
            helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 1]),
            helper.make_node("LogSoftmax", ["t"], ["y"], axis=-1),
        ],
        "segmentation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "F", 7])],
        [numpy_helper.from_array(kernel, "K")],
    )
    meta = {
        "sample_rate": 16000,
        "window_size": 160000,
        "receptive_field_size": 991,
        "receptive_field_shift": 270,
        "num_speakers": 3,
        "powerset_max_classes": 2,
        "num_classes": 7,
    }
    return _save(graph, meta, path)
