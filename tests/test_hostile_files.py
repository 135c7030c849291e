"""A corpus of hostile and careless files users hand in: reference ``.npz``, checkpoints
(``.pth``, ``.safetensors``), Hugging Face folders, ONNX exports, class maps and paths.

Each goes through the real CLI and must end in one clear error naming the file (exit 2, no
traceback) within a time budget and a memory budget set before the work starts. Without the
budgets these files took minutes and gigabytes (issue 21): a 1.2 MB zip bomb 4.1 GB, a 350 KB
checkpoint naming ``blocks.200000`` 4.6 GB, billion-laughs YAML 3.8 GB.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dinomask.cli import main
from tests.helpers import peak_rss_growth

#: Per case: peak RSS growth (MiB) and wall time (s) that a refusal may take.
RSS_BUDGET_MB = 300
SECONDS_BUDGET = 10.0


# ----------------------------------------------------------------------------- reference files


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _npy_declaring(shape: tuple, dtype: str = "<f4") -> bytes:
    """An .npy whose header declares ``shape`` but which holds 16 bytes of data."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 16


def _reference_zip(path: Path, members: dict[str, bytes], deflate: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _valid_members(good: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(good) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _with_meta(good: Path, change) -> dict[str, bytes]:
    members = _valid_members(good)
    meta = json.loads(str(np.load(io.BytesIO(members["meta.npy"]))))
    changed = change(meta)
    members["meta.npy"] = _npy(np.array(json.dumps(changed if changed is not None else meta)))
    return members


def _zip_bomb(path: Path, inflated_mb: int) -> Path:
    """A reference-shaped .npz whose foreground member inflates to ``inflated_mb`` MiB of zeros."""
    rows = inflated_mb * 2**20 // (64 * 4)
    header = _npy_declaring((rows, 64))[:-16]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("foreground.npy", "w", force_zip64=True) as handle:
            handle.write(header)
            chunk = b"\0" * 2**24
            for _ in range(inflated_mb // 16):
                handle.write(chunk)
    return path


def reference_cases(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase its error must hold)."""
    cases = {
        "zip bomb (300 MiB inflated)": (_zip_bomb(folder / "bomb.npz", 300), "inflating to"),
        "declares 1e9 rows": (_reference_zip(folder / "rows.npz", _valid_members(good) | {
            "foreground.npy": _npy_declaring((1_000_000_000, 64))}), "declares"),
        "meta is a list": (_reference_zip(folder / "list.npz", _with_meta(good, lambda m: [1, 2])), "not a dinomask reference"),
        "meta lacks the backbone": (_reference_zip(folder / "nobackbone.npz", _with_meta(good, lambda m: m.pop("backbone") and None)), "backbone"),
        "feature_dim is text": (_reference_zip(folder / "dimtext.npz", _with_meta(
            good, lambda m: m["backbone"].update(feature_dim="sixty-four"))), "feature_dim"),
        "settings of the wrong type": (_reference_zip(folder / "settings.npz", _with_meta(
            good, lambda m: m.update(settings=[1]))), "not a dinomask reference"),
        "no foreground array": (_reference_zip(folder / "nofg.npz", {k: v for k, v in _valid_members(good).items()
                                                                     if k != "foreground.npy"}), "foreground"),
        "object array (pickle)": (_reference_zip(folder / "pickle.npz", _valid_members(good) | {
            "cls.npy": _npy(np.array([{"a": 1}], dtype=object))}), "declares"),
        "arrays of another width": (_reference_zip(folder / "width.npz", _valid_members(good) | {
            "foreground.npy": _npy(np.ones((4, 7), np.float32))}), "expected N x 64"),
        "NaN features": (_reference_zip(folder / "nan.npz", _valid_members(good) | {
            "foreground.npy": _npy(np.full((4, 64), np.nan, np.float32))}), "NaN"),
        "zero-vector features": (_reference_zip(folder / "zeros.npz", _valid_members(good) | {
            "foreground.npy": _npy(np.zeros((4, 64), np.float32))}), "zero vector"),
        "text named .npz": (folder / "text.npz", "not a dinomask reference"),
    }
    (folder / "text.npz").write_text("hello")
    return cases


# ----------------------------------------------------------------------------- checkpoints and folders


def _meta_state(layers: int = 1, dim: int = 64) -> dict:
    """A Meta-layout DINOv2 state dict of ``layers`` blocks (random values)."""
    torch.manual_seed(0)
    state = {"cls_token": torch.randn(1, 1, dim), "mask_token": torch.randn(1, dim), "pos_embed": torch.randn(1, 17, dim),
             "patch_embed.proj.weight": torch.randn(dim, 3, 14, 14), "patch_embed.proj.bias": torch.randn(dim),
             "norm.weight": torch.ones(dim), "norm.bias": torch.zeros(dim)}
    for i in range(layers):
        b = f"blocks.{i}."
        state |= {b + "norm1.weight": torch.ones(dim), b + "norm1.bias": torch.zeros(dim),
                  b + "norm2.weight": torch.ones(dim), b + "norm2.bias": torch.zeros(dim),
                  b + "attn.qkv.weight": torch.randn(3 * dim, dim) * 0.02, b + "attn.qkv.bias": torch.zeros(3 * dim),
                  b + "attn.proj.weight": torch.randn(dim, dim) * 0.02, b + "attn.proj.bias": torch.zeros(dim),
                  b + "ls1.gamma": torch.full((dim,), 0.1), b + "ls2.gamma": torch.full((dim,), 0.1),
                  b + "mlp.fc1.weight": torch.randn(4 * dim, dim) * 0.02, b + "mlp.fc1.bias": torch.zeros(4 * dim),
                  b + "mlp.fc2.weight": torch.randn(dim, 4 * dim) * 0.02, b + "mlp.fc2.bias": torch.zeros(dim)}
    return state


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _folder_with_config(tiny: Path, folder: Path, **changes) -> Path:
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def model_cases(folder: Path, tiny: Path) -> dict[str, tuple[Path, str]]:
    state = _meta_state()
    missing = {k: v for k, v in state.items() if k != "norm.weight"}
    reshaped = state | {"blocks.0.attn.proj.weight": torch.randn(64, 32)}
    zero = _meta_state(dim=64) | {"cls_token": torch.zeros(1, 1, 0)}
    many = {**state, "blocks.200000.norm1.weight": torch.ones(64)}
    strided = state | {"pos_embed": torch.randn(1, 1, 64).expand(1, 12_750_000, 64)}  # 359 KB declaring 12.75 M positions
    nan_state = state | {"blocks.0.mlp.fc1.weight": torch.full((256, 64), float("nan"))}
    with zipfile.ZipFile(folder / "bomb.pth", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as handle:
            for _ in range(20):
                handle.write(b"\0" * 2**24)
    (folder / "garbage.safetensors").write_bytes(b"\x07" * 4096)
    (folder / "header.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    incomplete = shutil.copytree(tiny, folder / "incomplete")
    from safetensors.torch import load_file, save_file

    weights = load_file(str(incomplete / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if ".layer.1." not in k}, str(incomplete / "model.safetensors"),
              metadata={"format": "pt"})
    return {
        ".pth holding a list": (_save([1, 2, 3], folder / "list.pth"), "not a state dict"),
        ".pth holding a tensor": (_save(torch.zeros(3), folder / "tensor.pth"), "not a state dict"),
        ".pth missing a weight": (_save(missing, folder / "missing.pth"), "missing.pth"),
        ".pth with a reshaped weight": (_save(reshaped, folder / "reshaped.pth"), "reshaped.pth"),
        ".pth with a zero dimension": (_save(zero, folder / "zero.pth"), "hidden_size"),
        ".pth naming blocks.200000": (_save(many, folder / "many.pth"), "at most 64 blocks"),
        ".pth with NaN weights": (_save(nan_state, folder / "nan.pth"), "NaN"),
        ".pth zip bomb": (folder / "bomb.pth", "would inflate"),
        ".pth with a stride-0 pos_embed": (_save(strided, folder / "strided.pth"), "strided view"),
        "garbage .safetensors": (folder / "garbage.safetensors", "garbage.safetensors"),
        ".safetensors with a 1 TB header": (folder / "header.safetensors", "header.safetensors"),
        "folder: 0 heads": (_folder_with_config(tiny, folder / "heads0", num_attention_heads=0), "num_attention_heads"),
        "folder: patch 0": (_folder_with_config(tiny, folder / "patch0", patch_size=0), "patch_size"),
        "folder: negative width": (_folder_with_config(tiny, folder / "negative", hidden_size=-64), "hidden_size"),
        "folder: sizes as text": (_folder_with_config(tiny, folder / "text", hidden_size="64"), "whole number"),
        "folder: 10,000 layers": (_folder_with_config(tiny, folder / "deep", num_hidden_layers=10_000), "num_hidden_layers"),
        # each field in bounds, their product not (issue 26: 3.8 GB before the weights were refused)
        "folder: image_size 51800": (_folder_with_config(tiny, folder / "wide", image_size=51_800), "position table"),
        "folder: 64 layers 8192 wide": (_folder_with_config(tiny, folder / "huge", hidden_size=8192, num_hidden_layers=64,
                                                            num_attention_heads=64), "billion parameters"),
        "folder: config larger than its weights": (_folder_with_config(
            tiny, folder / "big", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16), "does not belong"),
        "folder: weights of a layer missing": (incomplete, "missing"),
        "folder: config.json not JSON": (_broken_config(tiny, folder / "notjson"), "notjson"),
        "path too long": (folder / ("x" * 5000 + ".pth"), "not a usable path"),
    }


def _broken_config(tiny: Path, folder: Path) -> Path:
    shutil.copytree(tiny, folder)
    (folder / "config.json").write_text("{not json")
    return folder


# ----------------------------------------------------------------------------- ONNX


def onnx_cases(folder: Path, export: Path) -> dict[str, tuple[Path, str]]:
    import onnx
    from onnx import TensorProto, helper

    sidecar, embeddings = export.with_suffix(".json"), export.with_suffix(".embeddings.safetensors")

    def beside(name: str, graph_bytes: bytes, sidecar_text: str | None = None) -> Path:
        path = folder / f"{name}.onnx"
        path.write_bytes(graph_bytes)
        path.with_suffix(".json").write_text(sidecar_text if sidecar_text is not None else sidecar.read_text())
        shutil.copy(embeddings, path.with_suffix(".embeddings.safetensors"))
        return path

    identity = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])]))
    info = json.loads(sidecar.read_text())
    info["config"]["num_hidden_layers"] = 10_000

    def spec(**changes) -> str:
        changed = json.loads(sidecar.read_text())
        changed["spec"].update(changes)
        return json.dumps(changed)

    (folder / "nosidecar.onnx").write_bytes(export.read_bytes())
    return {
        "garbage .onnx": (beside("garbage", b"\x08\x01garbage" * 100), "garbage.onnx"),
        "foreign graph": (beside("foreign", onnx._serialize(identity) if hasattr(onnx, "_serialize")
                                 else identity.SerializeToString()), "foreign.onnx"),
        "sidecar not JSON": (beside("badjson", export.read_bytes(), "{nope"), "badjson.json"),
        "sidecar of 10,000 layers": (beside("deep", export.read_bytes(), json.dumps(info)), "num_hidden_layers"),
        "no sidecar": (folder / "nosidecar.onnx", "nosidecar.json"),
        # the spec bounded, not only typed (issue 26: patch_size 5000 peaked at 2.4 GB)
        "sidecar patch_size 5000": (beside("patch", export.read_bytes(), spec(patch_size=5000)), "spec.patch_size"),
        "sidecar patch_size 20000": (beside("patch2", export.read_bytes(), spec(patch_size=20000)), "spec.patch_size"),
        "sidecar negative std": (beside("std", export.read_bytes(), spec(std=[-0.2, 0.2, 0.2])), "spec.std"),
        "sidecar one-value mean": (beside("mean", export.read_bytes(), spec(mean=[0.5])), "spec.mean"),
        "sidecar unknown family": (beside("family", export.read_bytes(), spec(family="dinov9")), "spec.family"),
        "sidecar width unlike its config": (beside("dim", export.read_bytes(), spec(feature_dim=128)), "spec.feature_dim"),
    }


# ----------------------------------------------------------------------------- class maps


def class_map_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        laughs.append(f"{name}: &{name} [" + ",".join(f"*{prev}" for _ in range(9)) + "]")
    files = {
        "billion laughs": ("laughs.yaml", "\n".join(laughs) + "\n", "aliases"),
        "YAML that does not parse": ("broken.yaml", "dog: [unclosed\n", "not valid YAML"),
        "YAML null category": ("null.yaml", "dog: animal\ncar-shadow: null\n", "line 2"),
        "YAML duplicate name": ("dup.yaml", "dog: animal\ndog: vehicle\n", "twice"),
        "CSV duplicate name": ("dup.csv", "dog,animal\ncar-shadow,vehicle\ndog,vehicle\n", "line 3"),
        "not UTF-8": ("latin.csv", "d\xf6g,animal\n".encode("latin-1"), "not UTF-8"),
        "YAML nested value": ("nested.yaml", "dog: {kind: animal}\n", "nested"),
    }
    cases = {}
    for case, (name, text, phrase) in files.items():
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        cases[case] = (path, phrase)
    return cases


# ----------------------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model_dir, davis):
    folder = tmp_path_factory.mktemp("hostile")
    good = folder / "good.npz"
    frame = davis / "JPEGImages/480p/dog/00000.jpg"
    assert main(["reference", str(frame), "--mask", str(davis / "Annotations/480p/dog/00000.png"), "-o", str(good),
                 "--model", str(tiny_model_dir), "--runtime", "torch", "--device", "cpu"]) == 0
    from dinomask.backbones import export_onnx, load_backbone

    export = folder / "onnx" / "tiny.onnx"
    export.parent.mkdir()
    export_onnx(load_backbone(str(tiny_model_dir), device="cpu", runtime="torch", dtype="float32"), export)
    parts = {name: folder / name for name in ("refs", "models", "onnx-cases", "maps")}
    for part in parts.values():
        part.mkdir()
    return {
        "frame": frame, "good": good, "export": export,
        "refs": reference_cases(parts["refs"], good), "models": model_cases(parts["models"], tiny_model_dir),
        "onnx": onnx_cases(parts["onnx-cases"], export), "maps": class_map_cases(parts["maps"]),
    }


def _refused(argv: list[str], path: Path, phrase: str, capsys) -> tuple[float, float]:
    """Run the CLI; it must exit 2 with one message naming ``path`` and holding ``phrase``."""
    code = [None]
    started = time.perf_counter()
    growth = peak_rss_growth(lambda: code.__setitem__(0, main(argv)))
    seconds = time.perf_counter() - started
    said = capsys.readouterr().err
    assert code[0] == 2, (argv[:3], code[0], said[-2000:])
    assert "Traceback" not in said, said[-2000:]
    assert str(path)[:150] in said or path.name[:150] in said, said[-1000:]
    assert phrase.lower() in said.lower(), (phrase, said[-1000:])
    return growth, seconds


def _check_budgets(results: dict[str, tuple[float, float]]) -> None:
    for case, (growth, seconds) in results.items():
        print(f"  {case:40s} peak RSS +{growth:5.0f} MiB  {seconds:5.2f} s")
    over = {c: r for c, r in results.items() if r[0] >= RSS_BUDGET_MB or r[1] >= SECONDS_BUDGET}
    assert not over, f"over the budgets ({RSS_BUDGET_MB} MiB, {SECONDS_BUDGET} s): {over}"


def test_hostile_reference_files_are_refused_naming_the_file_within_budgets(corpus, tmp_path, capsys):
    results = {}
    for case, (path, phrase) in corpus["refs"].items():
        argv = ["remove", str(corpus["frame"]), "--ref", str(path), "-o", str(tmp_path / "out"), "--runtime", "torch"]
        results[case] = _refused(argv, path, phrase, capsys)
    _check_budgets(results)


def test_hostile_checkpoints_and_folders_are_refused_naming_the_file_within_budgets(corpus, tmp_path, capsys):
    results = {}
    for case, (path, phrase) in corpus["models"].items():
        argv = ["reference", str(corpus["frame"]), "-o", str(tmp_path / "r.npz"), "--model", str(path),
                "--runtime", "torch", "--device", "cpu"]
        results[case] = _refused(argv, path, phrase, capsys)
    _check_budgets(results)


def test_hostile_onnx_files_are_refused_naming_the_file_within_budgets(corpus, tmp_path, capsys):
    results = {}
    for case, (path, phrase) in corpus["onnx"].items():
        named = path.with_suffix(".json") if "sidecar" in case else path  # the file at fault is named
        argv = ["reference", str(corpus["frame"]), "-o", str(tmp_path / "r.npz"), "--model", str(path)]
        results[case] = _refused(argv, named, phrase, capsys)
    _check_budgets(results)


def test_hostile_class_maps_are_refused_naming_the_file_within_budgets(corpus, davis, tmp_path, capsys):
    results = {}
    for case, (path, phrase) in corpus["maps"].items():
        argv = ["eval", "recognition", "-d", str(davis), "--classes", str(path), "-o", str(tmp_path / case.replace(" ", "_")),
                "--model", "/nonexistent-model-never-loaded"]
        results[case] = _refused(argv, path, phrase, capsys)
    _check_budgets(results)


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path):
    from dinomask.evaluate.recognition import read_class_map

    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffdog,animal\ncar-shadow,vehicle\n".encode("utf-8"))
    assert read_class_map(path) == {"dog": "animal", "car-shadow": "vehicle"}
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffdog: animal\n".encode("utf-8"))
    assert read_class_map(path) == {"dog": "animal"}


def test_an_onnx_export_still_loads_and_a_valid_reference_still_works(corpus, tmp_path, capsys):
    """The budgets refuse only what is wrong: the corpus's own good files pass."""
    out = tmp_path / "out"
    assert main(["remove", str(corpus["frame"]), "--ref", str(corpus["good"]), "-o", str(out), "--runtime", "torch"]) == 0
    mask = corpus["frame"].parents[3] / "Annotations/480p/dog/00000.png"
    assert main(["reference", str(corpus["frame"]), "--mask", str(mask), "-o", str(tmp_path / "r.npz"),
                 "--model", str(corpus["export"])]) == 0


# ----------------------------------------------------------------------------- refiner folders


def refiner_cases(folder: Path, good_refiner: Path) -> dict[str, tuple[Path, str]]:
    """SAM folders: each in bounds field by field, or loadable, yet hostile (issue 26)."""
    def copy(name: str, preprocessor: dict | None = None) -> Path:
        target = shutil.copytree(good_refiner, folder / name)
        if preprocessor is not None:
            (target / "preprocessor_config.json").write_text(json.dumps(preprocessor))
        return target

    from safetensors.torch import load_file, save_file

    nan = copy("nan")
    weights = load_file(str(nan / "model.safetensors"))
    first = next(k for k, v in weights.items() if v.is_floating_point() and v.dim() > 1)
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, str(nan / "model.safetensors"), metadata={"format": "pt"})
    base = {"size": {"longest_edge": 256}, "pad_size": {"height": 256, "width": 256}}
    return {
        "refiner weights holding NaN": (nan, "NaN"),
        "preprocessor longest_edge 60000": (copy("edge", base | {"size": {"longest_edge": 60000}}), "longest_edge"),
        "preprocessor longest_edge 0": (copy("edge0", base | {"size": {"longest_edge": 0}}), "longest_edge"),
        "preprocessor pad 100000": (copy("pad", base | {"pad_size": {"height": 100000, "width": 256}}), "pad_size.height"),
        "preprocessor size as text": (copy("text", base | {"size": "big"}), "size"),
        "the folder's config.json given": (good_refiner / "config.json", "give the folder itself"),
    }


def test_hostile_refiner_folders_are_refused_naming_the_file_within_budgets(corpus, tmp_path_factory, tmp_path, capsys):
    from dinomask.refine import random_refiner_dir

    folder = tmp_path_factory.mktemp("refiners")
    good = random_refiner_dir(folder / "good")
    results = {}
    for case, (path, phrase) in refiner_cases(folder, good).items():
        argv = ["remove", str(corpus["frame"]), "--ref", str(corpus["good"]), "-o", str(tmp_path / "out"),
                "--refiner", str(path), "--runtime", "torch"]
        results[case] = _refused(argv, path, phrase, capsys)
    _check_budgets(results)
