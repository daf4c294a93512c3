"""CAM++ (3D-Speaker's context-aware masking speaker network) as an ONNX graph, built from its
PyTorch checkpoint's weights, so onnxruntime runs it with no torch.

The network (Wang et al., "CAM++", Interspeech 2023) is: a 2-D residual front end over the
80-band fbank, a TDNN layer at half the frame rate, three densely connected TDNN blocks whose
every layer masks its output by a context vector (the mean over the whole input plus the mean
over 100-frame segments), transition layers, statistics pooling (mean and unbiased standard
deviation over time) and a linear layer with a non-affine batch norm. Every shape is read from
the weights (embedding size, growth, block depths), so any 3D-Speaker CAM++ checkpoint of the
80-band kind builds. Checked against the reference PyTorch implementation to 1e-5 on random
input of 150 and 333 frames (both sides of the 100-frame segment) when this was written.
"""

from __future__ import annotations

import numpy as np

BN_EPS = 1e-5  # torch's BatchNorm default, which 3D-Speaker trains with
SEGMENT = 100  # frames per context segment of the CAM layers
MELS = 80
DILATIONS = (1, 2, 2)  # of the three dense blocks


class _Graph:
    """Nodes and initialisers accumulated in order; every value gets a fresh name."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list = []
        self.initializers: list = []
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, np.int64))

    def op(self, kind: str, inputs: list[str], **attrs: object) -> str:
        from onnx import helper

        out = self._name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(
        self,
        x: str,
        key: str,
        stride: tuple[int, ...] | None = None,
        pad: int = 0,
        dilation: int = 1,
    ) -> str:
        weight = self.state[f"{key}.weight"]
        inputs = [x, self.const(weight.astype(np.float32))]
        if f"{key}.bias" in self.state:
            inputs.append(self.const(self.state[f"{key}.bias"].astype(np.float32)))
        dims = weight.ndim - 2
        return self.op(
            "Conv",
            inputs,
            kernel_shape=list(weight.shape[2:]),
            strides=list(stride or (1,) * dims),
            pads=[pad] * (2 * dims),
            dilations=[dilation] * dims,
        )

    def batch_norm(self, x: str, key: str) -> str:
        mean = self.state[f"{key}.running_mean"].astype(np.float32)
        scale = self.state.get(f"{key}.weight", np.ones_like(mean)).astype(np.float32)
        bias = self.state.get(f"{key}.bias", np.zeros_like(mean)).astype(np.float32)
        var = self.state[f"{key}.running_var"].astype(np.float32)
        inputs = [x, self.const(scale), self.const(bias), self.const(mean), self.const(var)]
        return self.op("BatchNormalization", inputs, epsilon=BN_EPS)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])


def _front_end(g: _Graph, feats: str) -> str:
    """(batch, frames, 80) -> (batch, channels x 10, frames): the 2-D residual stack."""
    x = g.op("Unsqueeze", [g.op("Transpose", [feats], perm=[0, 2, 1]), g.ints(1)])
    x = g.relu(g.batch_norm(g.conv(x, "head.conv1", pad=1), "head.bn1"))
    for layer in ("layer1", "layer2"):
        block = 0
        while f"head.{layer}.{block}.conv1.weight" in g.state:
            key = f"head.{layer}.{block}"
            stride = (2, 1) if block == 0 else (1, 1)
            out = g.conv(x, f"{key}.conv1", stride=stride, pad=1)
            out = g.relu(g.batch_norm(out, f"{key}.bn1"))
            out = g.batch_norm(g.conv(out, f"{key}.conv2", pad=1), f"{key}.bn2")
            if f"{key}.shortcut.0.weight" in g.state:
                shortcut = g.conv(x, f"{key}.shortcut.0", stride=stride)
                x = g.batch_norm(shortcut, f"{key}.shortcut.1")
            x = g.relu(g.op("Add", [out, x]))
            block += 1
    x = g.relu(g.batch_norm(g.conv(x, "head.conv2", stride=(2, 1), pad=1), "head.bn2"))
    channels = g.state["head.conv2.weight"].shape[0] * (MELS // 8)
    return g.op("Reshape", [x, g.ints(0, channels, -1)])


def _context(g: _Graph, h: str) -> str:
    """The CAM layers' context: the mean over all frames plus each frame's segment mean (the
    last segment averages the frames it has)."""
    whole = g.op("ReduceMean", [h], axes=[2], keepdims=1)
    seg = g.op("AveragePool", [h], kernel_shape=[SEGMENT], strides=[SEGMENT], ceil_mode=1)
    seg = g.op("Expand", [g.op("Unsqueeze", [seg, g.ints(3)]), g.ints(1, 1, 1, SEGMENT)])
    seg = g.op("Reshape", [seg, g.ints(0, 0, -1)])
    frames = g.op("Slice", [g.op("Shape", [h]), g.ints(2), g.ints(3)])
    seg = g.op("Slice", [seg, g.ints(0), frames, g.ints(2)])
    return g.op("Add", [whole, seg])


def _dense_blocks(g: _Graph, x: str) -> str:
    for number, dilation in enumerate(DILATIONS, start=1):
        layer = 1
        while f"xvector.block{number}.tdnnd{layer}.linear1.weight" in g.state:
            key = f"xvector.block{number}.tdnnd{layer}"
            h = g.relu(g.batch_norm(x, f"{key}.nonlinear1.batchnorm"))
            h = g.relu(g.batch_norm(g.conv(h, f"{key}.linear1"), f"{key}.nonlinear2.batchnorm"))
            local = g.conv(h, f"{key}.cam_layer.linear_local", pad=dilation, dilation=dilation)
            mask = g.relu(g.conv(_context(g, h), f"{key}.cam_layer.linear1"))
            mask = g.op("Sigmoid", [g.conv(mask, f"{key}.cam_layer.linear2")])
            x = g.op("Concat", [x, g.op("Mul", [local, mask])], axis=1)
            layer += 1
        key = f"xvector.transit{number}"
        x = g.conv(g.relu(g.batch_norm(x, f"{key}.nonlinear.batchnorm")), f"{key}.linear")
    return x


def _pool_and_embed(g: _Graph, x: str) -> tuple[str, int]:
    """Mean and unbiased standard deviation over time, then the embedding layer."""
    mean = g.op("ReduceMean", [x], axes=[2], keepdims=1)
    centred = g.op("Sub", [x, mean])
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred])], axes=[2], keepdims=0)
    n = g.op("Cast", [g.op("Slice", [g.op("Shape", [x]), g.ints(2), g.ints(3)])], to=1)
    n_less_one = g.op("Sub", [n, g.const(np.ones(1, np.float32))])
    unbiased = g.op("Div", [g.op("Mul", [var, n]), n_less_one])
    stats = g.op("Concat", [g.op("Squeeze", [mean, g.ints(2)]), g.op("Sqrt", [unbiased])], axis=1)
    weight = g.state["xvector.dense.linear.weight"][:, :, 0].astype(np.float32)
    out = g.op("MatMul", [stats, g.const(np.ascontiguousarray(weight.T))])
    key = "xvector.dense.nonlinear.batchnorm"
    mu = g.state[f"{key}.running_mean"].astype(np.float32)
    sigma = np.sqrt(g.state[f"{key}.running_var"].astype(np.float32) + BN_EPS)
    out = g.op("Div", [g.op("Sub", [out, g.const(mu)]), g.const(sigma)])
    return out, weight.shape[0]


def build_onnx(state: dict[str, np.ndarray]) -> bytes:
    """The serialised ONNX model: input `feats` (batch, frames, 80) mean-normalised fbank,
    output `embedding` (batch, dim). KeyError when `state` is not a CAM++ checkpoint."""
    from onnx import TensorProto, checker, helper

    g = _Graph(state)
    x = _front_end(g, "feats")
    x = g.relu(
        g.batch_norm(
            g.conv(x, "xvector.tdnn.linear", stride=(2,), pad=2), "xvector.tdnn.nonlinear.batchnorm"
        )
    )
    x = _dense_blocks(g, x)
    x = g.relu(g.batch_norm(x, "xvector.out_nonlinear.batchnorm"))
    out, dim = _pool_and_embed(g, x)
    g.nodes.append(helper.make_node("Identity", [out], ["embedding"]))
    graph = helper.make_graph(
        g.nodes,
        "campplus",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", "frames", MELS])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime >= 1.17, the floor pyproject declares
    checker.check_model(model)
    return model.SerializeToString()
