"""The numpy-only legacy .pth reader and the bundled EfficientNet-Lite0 (real weights, real images)."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from datacheck.embed.lite0 import (
    LITE0_SHA256,
    build_lite0,
    imagenet_class_names,
    lite0_weights_path,
    load_lite0_state_dict,
)
from datacheck.embed.torch_legacy import LegacyCheckpointError, load_legacy_state_dict

# (kernel, stride, expansion, in, out, repeats) from the published EfficientNet-Lite0 architecture,
# written out independently of datacheck.embed.lite0 so the file is checked against the spec.
STAGES = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
]


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {
        f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")
    }
    out[f"{prefix}.num_batches_tracked"] = ()
    return out


def expected_tensors() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"_conv_stem.weight": (32, 3, 3, 3), **_bn("_bn0", 32)}
    i = 0
    for k, _s, e, cin, cout, reps in STAGES:
        for r in range(reps):
            c_in = cin if r == 0 else cout
            mid = c_in * e
            p = f"_blocks.{i}."
            if e != 1:
                shapes[p + "_expand_conv.weight"] = (mid, c_in, 1, 1)
                shapes.update(_bn(p + "_bn0", mid))
            shapes[p + "_depthwise_conv.weight"] = (mid, 1, k, k)
            shapes.update(_bn(p + "_bn1", mid))
            shapes[p + "_project_conv.weight"] = (cout, mid, 1, 1)
            shapes.update(_bn(p + "_bn2", cout))
            i += 1
    shapes["_conv_head.weight"] = (1280, 320, 1, 1)
    shapes.update(_bn("_bn1", 1280))
    shapes["_fc.weight"] = (1000, 1280)
    shapes["_fc.bias"] = (1000,)
    return shapes


# ---------------------------------------------------------------- torch_legacy


def test_real_file_parses_to_expected_tensors() -> None:
    state = load_lite0_state_dict()
    assert {k: v.shape for k, v in state.items()} == expected_tensors()
    assert all(v.dtype == np.float32 for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert all(v.flags.c_contiguous for v in state.values())
    assert all((v >= 0).all() for k, v in state.items() if k.endswith("running_var"))


def test_tampered_copy_is_refused_by_sha256(tmp_path: Path) -> None:
    copy = tmp_path / "lite0.pth"
    shutil.copyfile(lite0_weights_path(), copy)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copy.write_bytes(bytes(raw))
    with pytest.raises(LegacyCheckpointError, match="SHA-256 mismatch"):
        load_lite0_state_dict(copy)


def test_untampered_copy_loads(tmp_path: Path) -> None:
    copy = tmp_path / "lite0.pth"
    shutil.copyfile(lite0_weights_path(), copy)
    assert "_fc.bias" in load_legacy_state_dict(copy, sha256=LITE0_SHA256)


def _legacy_file(state_pickle: bytes) -> bytes:
    header = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(obj, header, protocol=2)
    return header.getvalue() + state_pickle + pickle.dumps([], protocol=2)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_disallowed_global_is_refused_and_never_called(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = _legacy_file(pickle.dumps(OrderedDict(w=_Evil(marker)), protocol=2))
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    with pytest.raises(LegacyCheckpointError, match=r"disallowed global (os|posix)\.system"):
        load_legacy_state_dict(path, sha256=hashlib.sha256(data).hexdigest())
    assert not marker.exists()


def test_non_tensor_state_is_refused(tmp_path: Path) -> None:
    data = _legacy_file(pickle.dumps(OrderedDict(w=3), protocol=2))
    path = tmp_path / "odd.pth"
    path.write_bytes(data)
    with pytest.raises(LegacyCheckpointError, match="not a flat state dict"):
        load_legacy_state_dict(path, sha256=hashlib.sha256(data).hexdigest())


class _FakeStorage:
    def __init__(self, key: str, values: np.ndarray) -> None:
        self.key, self.values = key, values


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Stand-ins for ``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` so the stdlib pickler can
    write a genuine legacy-format file (torch itself is not a dependency)."""
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: object) -> None:
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    float_storage = type("FloatStorage", (), {"__module__": "torch"})
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    torch_mod.FloatStorage = float_storage  # type: ignore[attr-defined]
    torch_mod._utils = utils_mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)
    return types.SimpleNamespace(rebuild=_rebuild_tensor_v2, FloatStorage=float_storage)


class _Tensor:
    def __init__(
        self, fake: types.SimpleNamespace, storage: _FakeStorage, offset: int, size: tuple, stride: tuple
    ):
        self.fake, self.args = fake, (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self) -> tuple[object, tuple]:
        return self.fake.rebuild, self.args


def _write_legacy(
    fake: types.SimpleNamespace, tensors: dict[str, _Tensor], storages: list[_FakeStorage]
) -> bytes:
    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> tuple | None:
            if isinstance(obj, _FakeStorage):
                return ("storage", fake.FloatStorage, obj.key, "cpu", obj.values.size, None)
            return None

    body = io.BytesIO()
    _Pickler(body, protocol=2).dump(OrderedDict(tensors))
    out = _legacy_file(body.getvalue()).removesuffix(pickle.dumps([], protocol=2))
    out += pickle.dumps([s.key for s in storages], protocol=2)
    for s in storages:
        out += np.int64(s.values.size).tobytes() + s.values.astype("<f4").tobytes()
    return out


def test_strided_views_and_shared_storage(tmp_path: Path, fake_torch: types.SimpleNamespace) -> None:
    store = _FakeStorage("7", np.arange(7, dtype=np.float32))
    data = _write_legacy(
        fake_torch,
        {
            "t": _Tensor(fake_torch, store, 1, (2, 3), (1, 2)),  # a transposed view starting at element 1
            "row": _Tensor(fake_torch, store, 4, (3,), (1,)),  # shares the storage
        },
        [store],
    )
    path = tmp_path / "views.pth"
    path.write_bytes(data)
    state = load_legacy_state_dict(path, sha256=hashlib.sha256(data).hexdigest())
    np.testing.assert_array_equal(state["t"], [[1, 3, 5], [2, 4, 6]])
    np.testing.assert_array_equal(state["row"], [4, 5, 6])
    assert state["t"].flags.c_contiguous


def test_view_past_end_of_storage_is_refused(tmp_path: Path, fake_torch: types.SimpleNamespace) -> None:
    store = _FakeStorage("3", np.arange(3, dtype=np.float32))
    data = _write_legacy(fake_torch, {"t": _Tensor(fake_torch, store, 1, (3,), (1,))}, [store])
    path = tmp_path / "overrun.pth"
    path.write_bytes(data)
    with pytest.raises(LegacyCheckpointError, match="past the end"):
        load_legacy_state_dict(path, sha256=hashlib.sha256(data).hexdigest())


# ---------------------------------------------------------------- lite0 on real images


@pytest.fixture(scope="module")
def lite0_224():
    return build_lite0(224)


def _resized(image: np.ndarray, size: int = 224) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def _predict(model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bottleneck, logits = model(_resized(image)[None], training=False)  # uint8 straight in
    logits = np.asarray(logits)[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    return np.asarray(bottleneck), probs / probs.sum()


def test_chelsea_is_a_cat(lite0_224) -> None:
    from skimage import data

    bottleneck, probs = _predict(lite0_224, data.chelsea())
    assert bottleneck.shape == (1, 1280)
    top1 = imagenet_class_names()[int(probs.argmax())]
    assert top1 in {"tiger cat", "Egyptian cat", "tabby, tabby cat"}


def test_coffee_is_espresso(lite0_224) -> None:
    from skimage import data

    _, probs = _predict(lite0_224, data.coffee())
    assert imagenet_class_names()[int(probs.argmax())] == "espresso"
    assert probs.max() > 0.8


def test_uint8_and_float_inputs_agree(lite0_224) -> None:
    from skimage import data

    x = _resized(data.astronaut())[None]
    a = np.asarray(lite0_224(x, training=False)[0])
    b = np.asarray(lite0_224(x.astype(np.float32), training=False)[0])
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_class_names() -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[967] == "espresso"
