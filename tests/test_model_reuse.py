"""Model reuse and rescaling: checked metadata, fine-tuning from a checkpoint, inference at the training scale,
and the rule graphs of inference-only, reuse and fine-tuning runs."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import h5py
import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage
from torch import nn

from detachment import inference, io, metrics
from detachment.cnn.engine import epoch_order, make_batch, train, train_from_files
from detachment.cnn.reuse import check_model_meta, copy_model
from detachment.cnn.scale import restore_prediction, scale_factor, training_scale
from detachment.maskrcnn import CLASSES, ModelSettings, TrainSettings, build_model, load_model

from .conftest import dag_inputs, run_snakemake, write_tiny_workdir
from .test_maskrcnn import TINY, disks

TRAIN = dict(epochs=1, batch_size=2, lr_start=0.01, lr_end=0.001, warmup_iterations=0, device="cpu", threads=1,
             seed=0, max_iterations_per_epoch=1)


def _write_model(folder, settings=TINY, scale=None, state=None, **extra) -> tuple:
    """A model as the workflow writes it: weights maskrcnn.pt and metadata maskrcnn.json beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta = folder / "maskrcnn.pt", folder / "maskrcnn.json"
    torch.save(state if state is not None else build_model(settings).state_dict(), weights)
    meta.write_text(json.dumps({"classes": CLASSES, "model": asdict(settings), "scale": scale, **extra}))
    return weights, meta


def _edit_meta(meta, key, value):
    data = json.loads(meta.read_text())
    *path, last = key.split(".")
    node = data
    for k in path:
        node = node[k]
    node[last] = value
    meta.write_text(json.dumps(data))


@pytest.mark.parametrize("field,value,expected", [
    ("classes", ["background", "crack"], "field 'classes'"),
    ("model.backbone", "resnet7", "field model.backbone: 'resnet7' is not one of"),
    ("model.context_slices", 2, "field model.context_slices: 2 is not 0 or 1"),
    ("model.head_count", 3, "field 'model.head_count' is not a model setting"),
    ("scale.voxel_size_um", [-0.5, 0.5], "field 'scale.voxel_size_um'"),
    ("scale.particle_diameter_px", "big", "field 'scale.particle_diameter_px'"),
])
def test_bad_input_checkpoint_with_a_wrong_field_is_refused_naming_file_and_field(tmp_path, field, value, expected):
    weights, meta = _write_model(tmp_path / "m", scale={"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 18.0})
    check_model_meta(meta)  # the unedited metadata passes
    _edit_meta(meta, field, value)
    with pytest.raises(io.InputError) as e:
        load_model(weights, meta, "cpu")
    assert str(meta) in str(e.value) and expected in str(e.value)


def test_bad_input_checkpoint_without_its_metadata_or_of_another_architecture(tmp_path):
    weights, meta = _write_model(tmp_path / "m")
    with pytest.raises(io.InputError, match=re.escape(f"{meta}: field 'model.fpn_channels' is 16 but the config")):
        check_model_meta(meta, expect_model={**asdict(TINY), "fpn_channels": 32, "checkpoint": str(weights)})
    # settings that do not shape the network may differ
    check_model_meta(meta, expect_model={**asdict(TINY), "rpn_batch_size_per_image": 64})
    # weights of another width than the metadata says: the first tensor that does not fit is named
    torch.save(build_model(ModelSettings(**{**asdict(TINY), "fpn_channels": 32})).state_dict(), weights)
    with pytest.raises(io.InputError, match=r"w*maskrcnn.pt: weights do not fit .* tensor 'backbone.fpn"):
        load_model(weights, meta, "cpu")
    meta.unlink()
    with pytest.raises(io.InputError, match=re.escape(f"{meta}: model metadata not found")):
        copy_model(weights, tmp_path / "out.pt", tmp_path / "out.json")
    assert not (tmp_path / "out.pt").exists()


def test_reused_model_is_copied_with_its_metadata_and_provenance(tmp_path):
    weights, _ = _write_model(tmp_path / "m", scale={"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 18.0})
    meta = copy_model(weights, tmp_path / "out.pt", tmp_path / "out.json")
    assert (tmp_path / "out.pt").read_bytes() == weights.read_bytes()
    assert json.loads((tmp_path / "out.json").read_text()) == meta
    assert meta["reused_from"]["weights"] == str(weights) and meta["scale"]["voxel_size_um"] == [0.5, 0.5]


def _first_step_loss(state, tiles, masks, seed, batch_size) -> float:
    """The summed training loss of a model with ``state`` on epoch 0's first batch, with the samplers seeded
    as train() seeds them: the oracle of where fine-tuning starts."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_model(TINY)
    model.load_state_dict(state)
    model.train()
    order = epoch_order(len(tiles), seed, 0)
    images, targets = make_batch(tiles, masks, order[:batch_size], torch.device("cpu"))
    with torch.no_grad():
        return float(sum(model(images, targets).values()))


def test_finetuning_starts_from_the_checkpoint_weights(tmp_path):
    tiles, masks = disks(8)
    t = TrainSettings(**{**TRAIN, "epochs": 2, "max_iterations_per_epoch": 3})
    trained, _ = train(tiles, masks, tiles[:2], masks[:2], TINY, t, tmp_path / "a", "pre", progress=False)
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    expected = _first_step_loss(state, tiles, masks, seed=0, batch_size=2)
    one = TrainSettings(**TRAIN)
    _, tuned = train(tiles, masks, tiles[:2], masks[:2], TINY, one, tmp_path / "b", "ft", progress=False,
                     init_state=state)
    _, scratch = train(tiles, masks, tiles[:2], masks[:2], TINY, one, tmp_path / "c", "sc", progress=False)
    # one step per epoch: the epoch's train loss is the first step's, taken before any update
    assert tuned.log_rows[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(scratch.log_rows[0]["train_loss"] - expected) > 0.05 * expected


def _split_file(path, masks, samples):
    with h5py.File(path, "w") as f:
        f["images"] = (masks > 0).astype(np.float32) * 0.8
        f["masks"] = masks
        f["sample"] = np.array(samples, dtype=h5py.string_dtype())
        f["z"] = np.arange(len(masks))


def test_finetuning_from_files_records_its_origin_and_scale_and_refuses_another_architecture(tmp_path):
    tiles, masks = disks(4)
    with h5py.File(tmp_path / "tiles.h5", "w") as f:
        f["images"], f["masks"] = tiles, masks
    _split_file(tmp_path / "val.h5", masks[:2], ["a", "a"])
    weights, _ = _write_model(tmp_path / "pre")
    arch = {k: v for k, v in asdict(TINY).items() if k not in ("tile", "image_mean", "image_std")}
    scale = {"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 12.0, "n_instances": 12}
    out = tmp_path / "model"
    train_from_files(tmp_path / "tiles.h5", tmp_path / "val.h5", out / "w.pt", out / "w.json", arch, TRAIN,
                     out / "ckpt", progress=False, scale=scale, init_from=weights)
    meta = json.loads((out / "w.json").read_text())
    assert meta["scale"] == scale and meta["finetuned_from"]["weights"] == str(weights)
    with pytest.raises(io.InputError, match="field 'model.mask_head_width' is 8 but the config sets"):
        train_from_files(tmp_path / "tiles.h5", tmp_path / "val.h5", out / "x.pt", out / "x.json",
                         {**arch, "mask_head_width": 16}, TRAIN, out / "ckpt2", progress=False, init_from=weights)


def _disk_scene(size, centres, radius) -> np.ndarray:
    """Instance labels of disks drawn analytically on a size x size grid (centres and radius in px)."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    labels = np.zeros((size, size), np.uint16)
    for k, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2] = k
    return labels


class DiskFinder(nn.Module):
    """An analytic stand-in for a trained Mask R-CNN: it finds bright blobs of about ``diameter`` px only
    (equivalent diameter within 25 %), as a network trained on particles of that size does."""

    def __init__(self, diameter: float):
        super().__init__()
        self.diameter = diameter
        self.transform = type("T", (), {"min_size": (64,), "max_size": 64})()

    def forward(self, images):
        out = []
        for im in images:
            lab, n = ndimage.label(im[0].numpy() > 0.5)
            keep = [k for k in range(1, n + 1)
                    if abs(2 * np.sqrt((lab == k).sum() / np.pi) / self.diameter - 1) <= 0.25]
            masks = torch.from_numpy(np.stack([lab == k for k in keep]).astype(np.float32)) if keep else \
                torch.zeros((0,) + tuple(im.shape[-2:]))
            out.append({"scores": torch.full((len(keep),), 0.9), "masks": masks[:, None],
                        "boxes": torch.zeros((len(keep), 4)), "labels": torch.ones(len(keep), dtype=torch.int64)})
        return out


CENTRES = [(20, 24), (22, 70), (64, 40), (70, 100), (104, 20), (100, 64)]


def test_a_volume_at_twice_the_training_voxel_size_is_segmented_at_the_training_scale(tmp_path, monkeypatch):
    """Training scale: 0.5 µm voxels, 16 px disks. The same scene at 1 µm voxels (8 px disks, drawn on its own
    grid) is found completely once rescaled, and the masks land on the coarse grid; at native scale nothing
    is found."""
    fine = _disk_scene(128, CENTRES, 8.0)
    coarse = _disk_scene(64, [(cy / 2, cx / 2) for cy, cx in CENTRES], 4.0)
    meta = {"model": {"context_slices": 0}, "scale": {"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 16.0}}
    monkeypatch.setattr(inference, "load_model", lambda w, m, d: (DiskFinder(16.0), meta))
    results = {}
    for name, truth, voxel, mode in [("training", fine, 0.5, "auto"), ("rescaled", coarse, 1.0, "auto"),
                                     ("native", coarse, 1.0, "off")]:
        vol = tmp_path / f"{name}.h5"
        io.write_volume(vol, np.stack([truth > 0] * 2).astype(np.float32), voxel, "test")
        inference.infer_slab(vol, "w.pt", "m.json", 0, 2, tmp_path / f"{name}_slab.h5", device="cpu",
                             progress=False, rescale=mode)
        pred = io.read_dataset(tmp_path / f"{name}_slab.h5", "labels")
        assert pred.shape == (2,) + truth.shape
        results[name] = metrics.instance_scores(truth, pred[0].astype(np.int64), 0.5)
    assert results["training"].f1 == 1.0 and results["rescaled"].f1 == 1.0
    assert results["native"].sensitivity == 0.0
    # the masks mapped back cover each coarse disk to within its outline
    pred = io.read_dataset(tmp_path / "rescaled_slab.h5", "labels")[0]
    for k in range(1, len(CENTRES) + 1):
        hit = np.bincount(pred[coarse == k]).argmax()
        inter = np.sum((pred == hit) & (coarse == k))
        assert hit > 0 and inter / np.sum((pred == hit) | (coarse == k)) > 0.8


def test_scale_factor_follows_the_voxel_sizes_and_refuses_extremes():
    meta = {"scale": {"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 16.0}}
    assert scale_factor((0.3, 1.0, 0.75), meta) == pytest.approx((2.0, 1.5))
    assert scale_factor((1.0, 1.0, 1.0), meta, "off") == (1.0, 1.0)
    assert scale_factor((1.0, 1.0, 1.0), meta, False) == (1.0, 1.0)  # YAML reads an unquoted off as false
    assert scale_factor((1.0, 0.5, 0.5), meta) == (1.0, 1.0)
    assert scale_factor((1.0, 1.0, 1.0), {"model": {}}) == (1.0, 1.0)  # no recorded scale: native
    with pytest.raises(io.InputError, match=r"v.h5: .*needs a rescale factor \[5.0, 5.0\], outside \[0.25, 4.0\]"):
        scale_factor((2.5, 2.5, 2.5), meta, where="v.h5")
    with pytest.raises(io.InputError, match="infer.rescale: off"):
        scale_factor((0.1, 0.1, 0.1), meta)


def test_restored_prediction_scales_boxes_and_masks_back():
    masks = torch.zeros((1, 1, 20, 40))
    masks[0, 0, 4:8, 10:20] = 1
    pred = {"scores": torch.tensor([0.9]), "masks": masks, "boxes": torch.tensor([[10.0, 4.0, 20.0, 8.0]])}
    back = restore_prediction(pred, (10, 20))
    assert back["masks"].shape == (1, 1, 10, 20)
    torch.testing.assert_close(back["boxes"], torch.tensor([[5.0, 2.0, 10.0, 4.0]]))
    binary = back["masks"][0, 0] >= 0.5
    ys, xs = torch.nonzero(binary, as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (2, 3, 5, 9)


def test_training_scale_is_the_median_instance_diameter_and_the_labelled_voxel_size(tmp_path):
    masks = np.stack([_disk_scene(96, [(20, 20), (60, 60)], 6.0), _disk_scene(96, [(30, 60)], 6.0),
                      _disk_scene(96, [(40, 40)], 10.0)])
    _split_file(tmp_path / "train.h5", masks, ["a", "a", "b"])
    scale = training_scale(tmp_path / "train.h5", {"a": (1.0, 0.5, 0.5), "b": "0.5 0.5 0.4"})
    assert scale["voxel_size_um"] == [0.5, 0.5]  # two of three slices at 0.5 µm
    assert scale["particle_diameter_px"] == pytest.approx(12.0, rel=0.03) and scale["n_instances"] == 4


# --- the rule graph of each way to get a model: dry runs only (cheap)

def _model_workdir(tmp_path, labels: bool, **model) -> tuple:
    work = write_tiny_workdir(tmp_path / "work")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    settings = ModelSettings(**{k: v for k, v in cfg["model"].items() if k not in
                                ("checkpoint", "finetune", "finetune_epochs", "finetune_lr_scale")})
    weights, _ = _write_model(work / "models" / "phantom", settings,
                              scale={"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 18.0})
    cfg["model"].update(checkpoint="models/phantom/maskrcnn.pt", **model)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    if not labels:
        sheet = (work / "samples.tsv").read_text().splitlines()
        head = sheet[0].split("\t")
        rows = [r for r in sheet[1:] if r and not r.startswith("#") and not r.split("\t")[head.index("labels")]]
        (work / "samples.tsv").write_text("\n".join([sheet[0], *rows]) + "\n")
    return work, weights


LABEL_RULES = {"annotations", "augment", "train", "tune_watershed", "compare", "activation_map", "evaluate_linking",
               "summarize_linking"}


def test_inference_only_run_has_no_training_annotation_or_comparison_job(tmp_path):
    work, weights = _model_workdir(tmp_path, labels=False)
    jobs = dag_inputs(work)
    assert not LABEL_RULES & set(jobs), LABEL_RULES & set(jobs)
    assert jobs["reuse_model"] == {"models/phantom/maskrcnn.pt", "models/phantom/maskrcnn.json"}
    assert {"infer_slab", "link_slices", "particles", "statistics", "robustness"} <= set(jobs)
    assert all("results/model/maskrcnn.pt" in files for rule, files in jobs.items() if rule == "infer_slab")


def test_reuse_with_labels_scores_the_model_without_training_and_finetuning_trains_from_it(tmp_path):
    work, _ = _model_workdir(tmp_path / "reuse", labels=True)
    jobs = dag_inputs(work)
    assert not {"augment", "train"} & set(jobs)
    assert {"reuse_model", "annotations", "compare", "tune_watershed", "infer_slab"} <= set(jobs)
    work, weights = _model_workdir(tmp_path / "ft", labels=True, finetune=True)
    jobs = dag_inputs(work)
    assert "reuse_model" not in jobs
    assert {"models/phantom/maskrcnn.pt", "models/phantom/maskrcnn.json"} <= jobs["train"]


@pytest.mark.parametrize("case,expected", [
    ("finetune_without_labels", "model.finetune is true but no sample"),
    ("other_architecture", "maskrcnn.json: field 'model.fpn_channels' is 16 but the config sets"),
    ("inside_results", "lies in results/model/, which this run writes"),
])
def test_bad_input_model_checkpoint_config_stops_before_any_job(tmp_path, case, expected):
    work, _ = _model_workdir(tmp_path, labels=case != "finetune_without_labels", finetune=True)
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    if case == "other_architecture":
        cfg["model"]["fpn_channels"] = 32
    if case == "inside_results":
        cfg["model"]["checkpoint"] = "results/model/maskrcnn.pt"
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_snakemake(work, "-n")
    assert r.returncode != 0 and expected in r.stdout + r.stderr


def test_inference_only_run_segments_with_the_reused_model_at_its_training_scale(tmp_path):
    """A real (small) inference-only run up to one sample's per-slice instances: the checkpoint is checked and
    copied with its provenance, and slices of the 0.5 µm phantom are resized x2 for a model trained at 0.25 µm."""
    work, weights = _model_workdir(tmp_path, labels=False)
    _edit_meta(work / "models" / "phantom" / "maskrcnn.json", "scale.voxel_size_um", [0.25, 0.25])
    r = run_snakemake(work, "results/unseen_1C/cnn/slices.h5")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((work / "results" / "model" / "maskrcnn.json").read_text())
    assert meta["reused_from"]["weights"] == "models/phantom/maskrcnn.pt"
    assert (work / "results" / "model" / "maskrcnn.pt").read_bytes() == weights.read_bytes()
    with h5py.File(work / "results" / "unseen_1C" / "cnn" / "slices.h5") as f, \
            h5py.File(work / "results" / "unseen_1C" / "volume.h5") as v:
        assert f["labels"].shape == v["volume"].shape
    logs = "".join(p.read_text() for p in (work / "logs" / "infer_slab" / "unseen_1C").glob("*.log"))
    assert "slices resized by (y, x) (2.0, 2.0)" in logs
    assert not (work / "results" / "annotations").exists() and not (work / "logs" / "train.log").exists()


GRID = [(18 + 30 * i, 18 + 30 * j) for i in range(4) for j in range(4)]  # 16 particles per slice


def _disk_volume(path, radius: float, voxel: float = 0.5, depth: int = 3) -> None:
    io.write_volume(path, np.stack([_disk_scene(128, GRID, radius) > 0] * depth).astype(np.float32), voxel, "test")


def _equivalent_diameter(radius: float) -> float:
    return 2 * np.sqrt((_disk_scene(32, [(16, 16)], radius) > 0).sum() / np.pi)


@pytest.mark.parametrize("radius, resized", [(6.5, True), (7.5, False), (12.0, False)])
def test_particles_smaller_than_trained_on_are_segmented_at_the_training_size(tmp_path, monkeypatch, radius,
                                                                               resized):
    """The stand-in model finds disks within 25 % of 16 px. Its training volumes (16 px disks) are measured
    by the probe; 13 px disks at the same voxel size are resized by the ratio of the digital disks'
    equivalent diameters (to 0.05); 15 px disks are within the tolerance; 24 px disks, which the model
    does not find at all, cannot be measured and are left at the voxel-size factor. A model without the
    training measurement is rescaled by voxel size only."""
    ratio = _equivalent_diameter(8.0) / _equivalent_diameter(radius)
    expected = round(ratio / 0.05) * 0.05 if resized else 1.0
    meta = {"model": {"context_slices": 0}, "scale": {"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 16.0}}
    meta_path = tmp_path / "m.json"
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setattr(inference, "load_model", lambda w, m, d: (DiskFinder(16.0), json.loads(meta_path.read_text())))
    _disk_volume(tmp_path / "train.h5", 8.0)
    recorded = inference.record_probe_diameter("w.pt", meta_path, [tmp_path / "train.h5"])
    assert recorded == pytest.approx(_equivalent_diameter(8.0))
    assert json.loads(meta_path.read_text())["scale"]["probe_diameter_px"] == recorded
    _disk_volume(tmp_path / "v.h5", radius)
    factor = inference._model_at_scale("w.pt", meta_path, tmp_path / "v.h5", "cpu", 1, "particle_size")[4]
    assert factor == pytest.approx((expected, expected))
    assert inference._model_at_scale("w.pt", meta_path, tmp_path / "v.h5", "cpu", 1, "auto")[4] == (1.0, 1.0)
    meta_path.write_text(json.dumps(meta))  # no probe_diameter_px: voxel size only
    assert inference._model_at_scale("w.pt", meta_path, tmp_path / "v.h5", "cpu", 1, "particle_size")[4] == (1.0, 1.0)


def test_probe_slices_lie_where_the_bright_particles_are():
    from detachment.cnn.scale import probe_slices

    vol = np.random.default_rng(0).normal(0.0, 0.02, (40, 64, 64)).astype(np.float32)
    vol[:4] = 0.5  # a collector, darker than the particles
    vol[10:20, 20:40, 20:40] = 0.8
    zs = probe_slices(vol)
    assert zs == sorted(set(zs)) and len(zs) >= 5 and all(10 <= z < 20 for z in zs)


def test_the_probe_measures_the_central_window_of_large_slices(tmp_path, monkeypatch):
    """A 384 px slice: 13 px disks in the central 192 px window the probe segments, 16 px disks (the
    training size, more of them) around it. Measured on the window alone the slices are resized; over the
    whole slice the median would be the training size and they would not be."""
    meta = {"model": {"context_slices": 0},
            "scale": {"voxel_size_um": [0.5, 0.5], "particle_diameter_px": 16.0,
                      "probe_diameter_px": _equivalent_diameter(8.0)}}
    monkeypatch.setattr(inference, "load_model", lambda w, m, d: (DiskFinder(16.0), meta))
    yy, xx = np.mgrid[:384, :384] + 0.5
    scene = np.zeros((384, 384), bool)
    centres = [(12 + 24 * i, 12 + 24 * j) for i in range(16) for j in range(16)]
    lo, hi = (384 - inference.PROBE_WINDOW_PX) // 2, (384 + inference.PROBE_WINDOW_PX) // 2
    inner = [(cy, cx) for cy, cx in centres if lo + 8 <= cy <= hi - 8 and lo + 8 <= cx <= hi - 8]
    outer = [(cy, cx) for cy, cx in centres if min(cy, cx) < lo - 8 or max(cy, cx) > hi + 8]
    assert len(outer) > len(inner)
    for (cy, cx), r in [(c, 6.5) for c in inner] + [(c, 8.0) for c in outer]:
        scene |= (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    io.write_volume(tmp_path / "v.h5", np.stack([scene] * 3).astype(np.float32), 0.5, "test")
    factor = inference._model_at_scale("w.pt", "m.json", tmp_path / "v.h5", "cpu", 1, "particle_size")[4]
    ratio = _equivalent_diameter(8.0) / _equivalent_diameter(6.5)
    assert factor == pytest.approx((round(ratio / 0.05) * 0.05,) * 2)


def test_a_size_factor_near_the_tolerance_is_warned_about(caplog):
    from detachment.cnn.scale import size_factor

    meta = {"scale": {"probe_diameter_px": 15.0}}
    with caplog.at_level("WARNING"):
        assert size_factor(15.0 / 1.17, 100, meta, "v.h5") == 1.0  # 1.17: not resized, but marginal
    assert "v.h5: the size factor 1.170 lies within 0.05 of the tolerance" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert size_factor(15.0 / 1.3, 100, meta, "v.h5") == pytest.approx(1.3)
        assert size_factor(15.0 / 1.02, 100, meta, "v.h5") == 1.0
    assert "tolerance" not in caplog.text
