"""Mask R-CNN: a tiny model learns, resumes exactly, and refuses unsafe or mismatched checkpoints."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch

from detachment import io, maskrcnn
from detachment.inference import gather_slabs, infer_slab, scatter_range
from detachment.maskrcnn import (
    ModelSettings,
    TrainSettings,
    build_model,
    load_checkpoint,
    load_model,
    make_target,
    predictions_to_labels,
    select_device,
    settings_dict,
    train,
)

TINY = ModelSettings(fpn_channels=16, box_head_width=32, mask_head_width=8, tile=64,
                     anchor_sizes=(4, 8, 16, 32, 64), rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                     rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=32,
                     image_mean=0.3, image_std=0.3)


def disks(n, size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint16)
    for i in range(n):
        for k in range(1, 4):
            cy, cx, r = rng.integers(12, size - 12), rng.integers(12, size - 12), rng.integers(5, 9)
            d = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) & (masks[i] == 0)
            masks[i][d] = k
        imgs[i] = (masks[i] > 0) * 0.8 + rng.normal(0, 0.05, (size, size))
    return imgs, masks


def tiny_train(tmp_path, epochs=3, stop=None, run_id="r"):
    imgs, masks = disks(8)
    t = TrainSettings(epochs=epochs, batch_size=2, lr_start=0.01, lr_end=0.001, warmup_iterations=2,
                      device="cpu", threads=1, seed=0, max_iterations_per_epoch=4)
    return train(imgs, masks, imgs[:2], masks[:2], TINY, t, tmp_path, run_id, progress=False,
                 stop_after_epoch=stop)


def test_tiny_model_trains_and_its_loss_falls(tmp_path):
    _, result = tiny_train(tmp_path)
    losses = [r["train_loss"] for r in result.log_rows]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]
    for key in ("val_loss", "val_precision", "val_sensitivity", "lr"):
        assert key in result.log_rows[0]


def test_resume_after_interruption_continues_at_the_next_epoch_with_the_same_state(tmp_path):
    full, _ = tiny_train(tmp_path / "full")
    _, first = tiny_train(tmp_path / "cut", stop=0)
    assert len(first.log_rows) == 1
    ckpt = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert ckpt["epoch"] == 0 and ckpt["optimizer"]["state"]  # momentum buffers saved
    resumed, second = tiny_train(tmp_path / "cut")
    assert second.resumed_from_epoch == 1
    assert [r["epoch"] for r in second.log_rows] == [1, 2, 3]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # a checkpoint of another configuration or data is not resumed
    _, other = tiny_train(tmp_path / "cut", run_id="different")
    assert other.resumed_from_epoch == 0


def test_bad_input_corrupted_checkpoint_is_refused_with_the_file_name(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"\x80\x04this is not a checkpoint")
    with pytest.raises(io.InputError, match="model.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(p)
    with pytest.raises(io.InputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_bad_input_malicious_pickle_checkpoint_is_refused_and_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, p)
    with pytest.raises(io.InputError, match="refused to load"):
        load_checkpoint(p)
    p2 = tmp_path / "evil2.pt"
    p2.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(io.InputError):
        load_checkpoint(p2)
    assert not (tmp_path / "PWNED").exists()


def test_bad_input_checkpoint_of_another_architecture_is_refused(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(build_model(TINY).state_dict(), weights)
    meta = tmp_path / "m.json"
    other = ModelSettings(**{**TINY.__dict__, "fpn_channels": 32})
    meta.write_text(json.dumps(settings_dict(other, TrainSettings())))
    with pytest.raises(io.InputError, match="do not fit the architecture"):
        load_model(weights, meta, torch.device("cpu"))


def test_bad_input_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        select_device("cuda")
    assert select_device("auto").type == "cpu"


def test_targets_and_painting_round_trip():
    _, masks = disks(1)
    t = make_target(masks[0])
    assert t["boxes"].shape == (3, 4) and t["masks"].shape == (3, 64, 64)
    # painting the true masks as perfect predictions returns the same instances
    pred = {"scores": torch.tensor([0.9, 0.8, 0.7]), "masks": t["masks"][:, None].float()}
    labels, rows = predictions_to_labels(pred, (64, 64), 0.5, 0.5)
    assert len(rows) == 3
    for k in range(1, 4):
        assert len(np.unique(labels[masks[0] == k])) == 1


def test_painting_drops_a_duplicate_mostly_covered_by_a_higher_score():
    a = np.zeros((32, 32), np.float32)
    a[4:16, 4:16] = 1  # 144 px
    dup = np.zeros_like(a)
    dup[6:18, 4:16] = 1  # same particle shifted by 2: 24 of 144 px free
    other = np.zeros_like(a)
    other[20:30, 20:30] = 1
    pred = {"scores": torch.tensor([0.9, 0.8, 0.7]), "masks": torch.from_numpy(np.stack([a, dup, other]))[:, None]}
    labels, rows = predictions_to_labels(pred, (32, 32), 0.5, 0.5, min_visible_fraction=0.5)
    assert [r["score"] for r in rows] == pytest.approx([0.9, 0.7])  # the duplicate's fragment is not an instance
    assert labels.max() == 2 and (labels == 1).sum() == 144
    labels, rows = predictions_to_labels(pred, (32, 32), 0.5, 0.5, min_visible_fraction=0.0)
    assert len(rows) == 3 and (labels == 2).sum() == 24  # without mask NMS the fragment survives


def test_scatter_ranges_tile_the_volume():
    for depth in (1, 7, 40):
        for n in (1, 2, 3, 5):
            ranges = [scatter_range(f"{k}-of-{n}", depth) for k in range(1, n + 1)]
            assert ranges[0][0] == 0 and ranges[-1][1] == depth
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    with pytest.raises(ValueError):
        scatter_range("3-of-2", 10)


def test_slab_inference_gathers_to_the_whole_volume_result(tmp_path):
    model = build_model(TINY)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "m.json").write_text(json.dumps(settings_dict(TINY, TrainSettings())))
    imgs, _ = disks(5)
    vol = tmp_path / "volume.h5"
    io.write_volume(vol, np.concatenate([imgs, imgs]).astype(np.float32), 0.5, "test")
    kw = {"score_threshold": 0.0, "device": "cpu", "progress": False}
    parts = []
    for k, (z0, z1) in enumerate([(0, 3), (3, 10)]):
        parts.append(tmp_path / f"s{k}.h5")
        infer_slab(vol, tmp_path / "w.pt", tmp_path / "m.json", z0, z1, parts[-1], **kw)
    infer_slab(vol, tmp_path / "w.pt", tmp_path / "m.json", 0, 10, tmp_path / "whole.h5", **kw)
    table = gather_slabs(parts, vol, tmp_path / "slices.h5", tmp_path / "slices.csv")
    np.testing.assert_array_equal(io.read_dataset(tmp_path / "slices.h5", "labels"),
                                  io.read_dataset(tmp_path / "whole.h5", "labels"))
    assert set(table.columns) >= {"z", "label", "score", "y0", "x0", "y1", "x1"}
    with pytest.raises(ValueError, match="slab is missing"):
        gather_slabs(parts[1:], vol, tmp_path / "x.h5", tmp_path / "x.csv")


def test_detections_are_the_candidates_above_the_score_threshold(tmp_path):
    torch.manual_seed(1)
    model = build_model(TINY)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    (tmp_path / "m.json").write_text(json.dumps(settings_dict(TINY, TrainSettings())))
    imgs, _ = disks(4)
    vol = tmp_path / "volume.h5"
    io.write_volume(vol, imgs.astype(np.float32), 0.5, "test")
    run = {"device": "cpu", "progress": False}
    infer_slab(vol, tmp_path / "w.pt", tmp_path / "m.json", 0, 4, tmp_path / "all.h5", score_threshold=0.0, **run)
    with h5py.File(tmp_path / "all.h5") as f:
        scores = f["table"][:, 2]
    mid = float(np.median(scores))
    assert (scores < mid).any() and (scores >= mid).any()
    infer_slab(vol, tmp_path / "w.pt", tmp_path / "m.json", 0, 4, tmp_path / "hyst.h5", score_threshold=mid,
               candidate_threshold=0.0, **run)
    infer_slab(vol, tmp_path / "w.pt", tmp_path / "m.json", 0, 4, tmp_path / "high.h5", score_threshold=mid, **run)
    # the detections equal painting at the high threshold alone; the candidates equal painting at the low one
    np.testing.assert_array_equal(io.read_dataset(tmp_path / "hyst.h5", "labels"),
                                  io.read_dataset(tmp_path / "high.h5", "labels"))
    np.testing.assert_array_equal(io.read_dataset(tmp_path / "hyst.h5", "candidates"),
                                  io.read_dataset(tmp_path / "all.h5", "labels"))
    table = gather_slabs([tmp_path / "hyst.h5"], vol, tmp_path / "slices.h5", tmp_path / "slices.csv")
    assert table.detection.sum() == (scores >= mid).sum() and len(table) == len(scores)


def test_prediction_on_whole_slices_leaves_the_training_scale_alone():
    from detachment.maskrcnn import predict

    model = build_model(TINY)
    model.train()
    imgs, _ = disks(2, size=96)
    predict(model, imgs, torch.device("cpu"), 2, 0.5, 0.5)
    assert model.transform.min_size == (64,) and model.transform.max_size == 64
    assert model.training


def test_a_2_5d_model_sees_slices_z_minus_1_z_z_plus_1_in_every_slab(tmp_path, monkeypatch):
    from detachment import inference
    from detachment.maskrcnn import to_tensor

    rng = np.random.default_rng(4)
    vol = rng.random((7, 24, 24)).astype(np.float32)
    io.write_volume(tmp_path / "v.h5", vol, 0.5, "test")
    with h5py.File(tmp_path / "v.h5", "r") as f:
        for z0, z1 in [(0, 3), (3, 7), (2, 5)]:
            got = inference.model_slices(f[io.VOLUME_DATASET], z0, z1, 1)
            for i, z in enumerate(range(z0, z1)):
                np.testing.assert_array_equal(got[i], vol[[max(z - 1, 0), z, min(z + 1, 6)]])
            np.testing.assert_array_equal(inference.model_slices(f[io.VOLUME_DATASET], z0, z1, 0), vol[z0:z1])
    # the network gets those three slices as its channels, and a plain slice repeated
    assert torch.equal(to_tensor(vol[:3]), torch.from_numpy(vol[:3]))
    assert torch.equal(to_tensor(vol[0]), torch.from_numpy(vol[0])[None].expand(3, -1, -1))
    with pytest.raises(ValueError, match="shape"):
        to_tensor(vol[:2])
    with pytest.raises(ValueError, match="context_slices"):
        ModelSettings(context_slices=2)
    # slab inference with a context model hands predict the stacked slices
    ctx = ModelSettings(**{**TINY.__dict__, "context_slices": 1})
    torch.save(build_model(ctx).state_dict(), tmp_path / "w.pt")
    (tmp_path / "m.json").write_text(json.dumps(settings_dict(ctx, TrainSettings())))
    seen = []
    real = inference.predict
    monkeypatch.setattr(inference, "predict", lambda model, images, *a, **k: (seen.append(images), real(
        model, images, *a, **k))[1])
    infer_slab(tmp_path / "v.h5", tmp_path / "w.pt", tmp_path / "m.json", 2, 6, tmp_path / "s.h5", device="cpu",
               progress=False)
    np.testing.assert_array_equal(np.concatenate(seen), np.stack([vol[[z - 1, z, min(z + 1, 6)]]
                                                                  for z in range(2, 6)]))
    assert io.read_dataset(tmp_path / "s.h5", "labels").shape == (4, 24, 24)


def test_a_2_5d_model_trains_on_three_channel_tiles(tmp_path):
    imgs, masks = disks(6)
    stacked = np.stack([np.roll(imgs, 1, 0), imgs, np.roll(imgs, -1, 0)], axis=1)  # (n, 3, y, x)
    ctx = ModelSettings(**{**TINY.__dict__, "context_slices": 1})
    t = TrainSettings(epochs=2, batch_size=2, lr_start=0.01, lr_end=0.001, warmup_iterations=2, device="cpu",
                      threads=1, seed=0, max_iterations_per_epoch=3)
    model, result = train(stacked, masks, stacked[:2], masks[:2], ctx, t, tmp_path, "ctx", progress=False)
    assert len(result.log_rows) == 2 and all(np.isfinite(r["train_loss"]) for r in result.log_rows)
    assert 0 <= result.log_rows[-1]["val_precision"] <= 1


def test_bf16_training_with_one_roi_sample_learns_and_is_deterministic(tmp_path):
    # the faster CPU settings (bf16 autocast, RoIAlign sampling ratio 1) still learn the disks, give the
    # same weights on a rerun, and change nothing when left at their defaults
    imgs, masks = disks(8)
    fast = ModelSettings(**{**TINY.__dict__, "roi_sampling_ratio": 1})
    t = TrainSettings(epochs=3, batch_size=2, lr_start=0.01, lr_end=0.001, warmup_iterations=2, device="cpu",
                      threads=1, seed=0, max_iterations_per_epoch=4, precision="bf16")
    runs = [train(imgs, masks, imgs[:2], masks[:2], fast, t, tmp_path / f"run{i}", "bf16", progress=False)
            for i in range(2)]
    model = runs[0][0]
    assert model.roi_heads.box_roi_pool.sampling_ratio == 1 and model.roi_heads.mask_roi_pool.sampling_ratio == 1
    losses = [r["train_loss"] for r in runs[0][1].log_rows]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]
    for a, b in zip(runs[0][0].state_dict().values(), runs[1][0].state_dict().values()):
        assert torch.equal(a, b)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights float32
    default = build_model(TINY)
    assert default.roi_heads.box_roi_pool.sampling_ratio == 2  # torchvision's value


def test_auto_precision_takes_bf16_only_where_the_device_runs_it_natively(monkeypatch):
    import detachment.cnn.model as mr

    cpu = torch.device("cpu")
    assert mr.training_dtype("fp32", cpu) == torch.float32 and mr.training_dtype("bf16", cpu) == torch.bfloat16
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(mr, "bf16_native", lambda device, native=native: native)
        assert mr.training_dtype("auto", cpu) == expected
        assert mr.training_dtype("fp32", cpu) == torch.float32  # forcing wins


def test_native_bf16_needs_the_cpu_flags_not_only_avx512():
    from detachment.maskrcnn import cpu_has_bf16_instructions

    xeon_avx512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
    assert not cpu_has_bf16_instructions(xeon_avx512)
    assert cpu_has_bf16_instructions(xeon_avx512.replace("avx512_vnni", "avx512_vnni avx512_bf16"))
    assert cpu_has_bf16_instructions("flags : fpu avx512f amx_tile amx_bf16 amx_int8\n")
    assert not cpu_has_bf16_instructions("")  # nothing to tell: float32, the safe choice


def test_bad_input_unknown_training_precision_is_refused():
    with pytest.raises(ValueError, match="train.precision"):
        TrainSettings(precision="fp16")


def _pred(scores, masks):
    return {"scores": torch.tensor(scores, dtype=torch.float32),
            "masks": torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]}


def test_flip_fusion_averages_matched_passes_and_discounts_detections_seen_once():
    from detachment.maskrcnn import fuse_flips

    a = np.zeros((32, 32), np.float32)
    a[4:16, 4:16] = 0.9
    a_shift = np.zeros_like(a)
    a_shift[5:17, 4:16] = 0.7  # the same particle in another pass, one pixel lower
    b = np.zeros_like(a)
    b[20:30, 20:30] = 0.8
    passes = [_pred([0.9, 0.6], [a, b]), _pred([0.8], [a_shift]), _pred([0.7], [a]), _pred([0.6], [a])]
    fused = fuse_flips(passes, mask_threshold=0.5)
    assert fused["scores"].tolist() == pytest.approx([(0.9 + 0.8 + 0.7 + 0.6) / 4, 0.6 / 4])
    mean_a = (3 * a + a_shift) / 4  # mean over the four passes that saw it
    np.testing.assert_allclose(fused["masks"][0, 0].numpy(), mean_a, atol=1e-6)
    np.testing.assert_allclose(fused["masks"][1, 0].numpy(), b)  # seen once: its own probabilities
    same = fuse_flips([_pred([0.9, 0.6], [a, b])] * 4, mask_threshold=0.5)
    assert same["scores"].tolist() == pytest.approx([0.9, 0.6])
    empty = {"scores": torch.zeros(0), "masks": torch.zeros((0, 1, 8, 8))}
    assert fuse_flips([empty] * 4, mask_threshold=0.5)["masks"].shape == (0, 1, 8, 8)


def random_detections(rng, n: int, shape=(64, 80)) -> dict[str, torch.Tensor]:
    """``n`` overlapping detections: ellipses of random probabilities, some empty, scores with ties."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    masks = np.zeros((n, 1) + shape, np.float32)
    for k in range(n):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(2, 12, 2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        if rng.random() > 0.05:
            masks[k, 0][inside] = rng.uniform(0.2, 1.0, inside.sum())
    scores = rng.choice([0.02, 0.3, 0.5, 0.7, 0.9], n) + rng.choice([0.0, 0.01], n)
    return {"scores": torch.tensor(scores, dtype=torch.float32), "masks": torch.from_numpy(masks)}


def fuse_flips_all_pairs(preds, mask_threshold, match_iou=0.5):
    """Brute-force flip fusion, as fuse_flips was before its box prefilter: each detection, by score, gathers
    every later unused one of another pass whose whole binary mask overlaps it at IoU ≥ match_iou."""
    dets = [(float(sc), v, m) for v, p in enumerate(preds)
            for sc, m in zip(p["scores"].tolist(), p["masks"][:, 0]) if sc >= 0.05]
    dets.sort(key=lambda d: -d[0])
    binary = [d[2] >= mask_threshold for d in dets]
    used = [False] * len(dets)
    scores, masks = [], []
    for i, (sc, v, m) in enumerate(dets):
        if used[i]:
            continue
        used[i] = True
        group = {v: (sc, m)}
        for j in range(i + 1, len(dets)):
            union = (binary[i] | binary[j]).sum().item()
            if not used[j] and dets[j][1] not in group and union and \
                    (binary[i] & binary[j]).sum().item() / union >= match_iou:
                group[dets[j][1]] = dets[j][0], dets[j][2]
                used[j] = True
        scores.append(sum(g[0] for g in group.values()) / len(preds))
        masks.append(torch.stack([g[1] for g in group.values()]).mean(0))
    return {"scores": torch.tensor(scores), "masks": torch.stack(masks)[:, None]}


@pytest.mark.parametrize("seed", range(6))
def test_flip_fusion_equals_the_all_pairs_fusion(seed):
    rng = np.random.default_rng(seed)
    base = random_detections(rng, 50)
    passes = []
    for _ in range(4):  # each pass: the base detections jittered, some dropped, some new
        keep = rng.random(50) > 0.2
        shifted = torch.roll(base["masks"][keep], shifts=tuple(rng.integers(-2, 3, 2)), dims=(2, 3))
        extra = random_detections(rng, 10)
        passes.append({"scores": torch.cat([base["scores"][keep] * 0.9, extra["scores"]]),
                       "masks": torch.cat([shifted, extra["masks"]])})
    for iou in (0.3, 0.5, 0.8):
        expect, got = fuse_flips_all_pairs(passes, 0.5, iou), maskrcnn.fuse_flips(passes, 0.5, iou)
        assert torch.equal(expect["scores"], got["scores"]) and torch.equal(expect["masks"], got["masks"])
    assert len(got["scores"]) < sum(len(p["scores"]) for p in passes)  # detections were fused


class _ThresholdModel(torch.nn.Module):
    """Stands in for Mask R-CNN: one detection per image, its mask where the image is bright."""

    def __init__(self):
        super().__init__()
        import types

        self.transform = types.SimpleNamespace(min_size=(64,), max_size=64)

    def forward(self, batch):
        return [{"scores": torch.tensor([0.9]), "masks": (x[0] > 0.5).float()[None, None]} for x in batch]


def test_test_time_augmentation_maps_every_flip_back_onto_the_slice():
    from detachment.maskrcnn import predict

    img = np.zeros((1, 40, 48), np.float32)
    img[0, 5:30, 6:12] = 1  # an L: no flip maps it onto itself
    img[0, 24:30, 6:30] = 1
    for tta in (False, True):
        labels, rows = predict(_ThresholdModel(), img, torch.device("cpu"), 1, 0.5, 0.5, tta=tta)
        # all four passes agree only if each was flipped back: else the fused score falls to 0.9 / 4
        assert [r["score"] for r in rows] == pytest.approx([0.9])
        np.testing.assert_array_equal(labels[0] > 0, img[0] > 0.5)


def test_the_facade_re_exports_the_cnn_modules_and_their_functions_stay_short():
    import ast
    import importlib
    from pathlib import Path

    import detachment.maskrcnn as facade

    modules = [importlib.import_module(f"detachment.cnn.{m}")
               for m in ("model", "engine", "predict", "checkpoint", "activation", "reuse", "scale", "tiles",
                          "caps")]
    for name in facade.__all__:
        assert any(getattr(mod, name, None) is getattr(facade, name) for mod in modules), name
    for mod in modules:
        tree = ast.parse(Path(mod.__file__).read_text())
        assert len((ast.get_docstring(tree) or "x" * 11).splitlines()) <= 10, mod.__name__
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                assert ast.get_docstring(node), f"{mod.__name__}.{node.name} has no docstring"
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 60, f"{mod.__name__}.{node.name} is over 60 lines"


def test_a_non_finite_training_loss_stops_naming_epoch_and_iteration():
    from detachment.cnn.engine import make_batch, train_one_epoch

    imgs, masks = disks(2)
    torch.manual_seed(0)
    model = build_model(TINY)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.fill_(float("nan"))
    before = model.roi_heads.box_predictor.bbox_pred.weight.clone()
    batches = [make_batch(imgs, masks, [0, 1], torch.device("cpu"))] * 2
    t = TrainSettings(epochs=3)
    with pytest.raises(FloatingPointError, match=r"epoch 2, iteration 0: non-finite training loss"):
        train_one_epoch(model, opt, batches, [0.01, 0.01], t, torch.float32, epoch=2)
    assert torch.equal(model.roi_heads.box_predictor.bbox_pred.weight, before)  # no step was taken


def test_the_raised_cap_reaches_torchvision_and_is_undone():
    """An untrained model scores its many proposals alike, so it fills any cap: at 10 it returns 10, under
    detection_budget(40) 40 (the RPN keeping 4x the proposals), and after it 10 again, RPN restored; the
    score floor lets through only what scores at least the floor."""
    from detachment.cnn.caps import detection_budget, score_floor

    torch.manual_seed(0)
    model = build_model(ModelSettings(**{**TINY.__dict__, "box_detections_per_img": 10})).eval()
    image = [torch.rand(3, 64, 64)]
    before = dict(model.rpn._post_nms_top_n), dict(model.rpn._pre_nms_top_n)
    with torch.inference_mode():
        assert len(model(image)[0]["scores"]) == 10
        with detection_budget(model, 40):
            assert model.rpn.post_nms_top_n() == 4 * before[0]["testing"]
            assert model.rpn.pre_nms_top_n() == 4 * before[1]["testing"]
            assert len(model(image)[0]["scores"]) == 40
        assert (dict(model.rpn._post_nms_top_n), dict(model.rpn._pre_nms_top_n)) == before
        scores = model(image)[0]["scores"]
        assert len(scores) == 10 and model.roi_heads.detections_per_img == 10
        floor = float(scores[4])
        with score_floor(model, floor):
            kept = model(image)[0]["scores"]
        assert model.roi_heads.score_thresh == 0.05
        assert len(kept) >= 5 and float(kept.min()) >= floor
