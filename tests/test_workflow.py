"""End to end: the workflow on a tiny config, its caching, and its refusal of bad config and input."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import dag_inputs, run_snakemake, write_tiny_workdir


@pytest.fixture
def finished_run(tiny_run):
    return tiny_run


def _jobs(proc) -> set[str]:
    """Rule names scheduled in a dry run (from the job-stats table)."""
    out = proc.stdout + proc.stderr
    names = set()
    for rule in ("make_phantom", "import_volume", "threshold_phases", "all", "default"):
        if f"rule {rule}:" in out or f"localrule {rule}:" in out:
            names.add(rule)
    return names


def test_outputs_follow_the_contract(finished_run):
    from detachment.rings import measure_file
    from detachment.shading import contrast_from_fwhm

    for sample in ("cell_1C", "cell_C10"):
        d = finished_run / "results" / sample
        with h5py.File(d / "volume.h5") as f:
            assert f["volume"].dtype == np.float32 and f["volume"].ndim == 3
            np.testing.assert_allclose(f["volume"].attrs["voxel_size_um"], [0.5] * 3)
        with h5py.File(d / "truth.h5") as f:
            labels, truth = f["labels"][...], f["phases"][...]
            assert f["labels"].dtype == np.uint32 and f["phases"].dtype == np.uint8
        with h5py.File(d / "phases.h5") as f:
            pred = f["phases"][...]
        assert pred.shape == truth.shape
        assert (pred == truth).mean() > 0.9
        table = pd.read_csv(d / "truth_particles.csv")
        assert set(table.label) == set(np.unique(labels)) - {0}
        fwhm = pd.read_csv(d / "phase_fwhm.csv")
        assert list(fwhm.phase) == ["void", "cbd", "nmc_low", "nmc_high", "al"]
        hist = pd.read_csv(d / "histogram.csv")
        assert hist["count"].sum() == truth.size
        assert (d / "fig1_phases.png").read_bytes()[:4] == b"\x89PNG"
        # the ring check ran on the volume, as the library reads it, and passed on the ring-free phantom
        qc = pd.read_csv(d / "phase_qc.csv").set_index("check")
        ring = measure_file(d / "volume.h5", contrast_from_fwhm(fwhm))
        assert qc.value["ring_ratio"] == pytest.approx(ring.ratio) and bool(qc.passed["ring_ratio"])
        assert ring.ratio < 0.5 * qc.bound["ring_ratio"]
        # the reading finds itself again on its own map, rendered at the σ the map was refined with
        check = pd.read_csv(d / "self_consistency.csv").iloc[0]
        with h5py.File(d / "phases.h5") as f:
            assert check.sigma_vox == pytest.approx(f["phases"].attrs["psf_refine_sigma_vox"])
        assert check.n_particles > 0 and bool(check.consistent) and abs(check["shift"]) <= check.bound
        # rendered with the textures measured on the sample's volume: the phantom's electrolyte is planted
        # white, its CBD with a third of its variance smooth (FWHM 0.064 over white noise of FWHM 0.053)
        assert "void white" in check.textures and "cbd 0." in check.textures, check.textures
        cbd_share = float(check.textures.split("cbd ")[1].split(" ")[0])
        assert cbd_share == pytest.approx(1 - (0.053 / 0.064) ** 2, abs=0.1), check.textures
        assert not list(d.glob(".*.tmp-*"))  # no temporary leftovers


def test_second_run_has_nothing_to_do(finished_run):
    r = run_snakemake(finished_run, "-n")
    assert r.returncode == 0
    assert "Nothing to be done" in r.stdout + r.stderr


def test_threshold_parameter_change_reruns_thresholding_not_the_phantom(finished_run):
    r = run_snakemake(finished_run, "-n", "--config", "threshold={method: multiotsu}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _jobs(r) == {"threshold_phases", "default"}  # the top-level Snakefile's target
    r = run_snakemake(finished_run, "-n", "--config", "seed=7")
    assert {"make_phantom", "threshold_phases"} <= _jobs(r)


def test_lost_output_is_rebuilt_without_touching_upstream(finished_run, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(finished_run, work, symlinks=True)
    volume = work / "results" / "cell_1C" / "volume.h5"
    before = volume.stat().st_mtime
    (work / "results" / "cell_1C" / "phases.h5").unlink()
    r = run_snakemake(work, "--rerun-incomplete")
    assert r.returncode == 0, r.stderr[-2000:]
    assert volume.stat().st_mtime == before
    assert (work / "results" / "cell_1C" / "phases.h5").exists()


def test_a_newer_contact_level_reruns_the_particles_read_on_it(finished_run, tmp_path):
    """A contact level remade on its own (a forced rule, a file edited by hand) is newer than the particles
    read on it: the next run reads them again, through the temporary per-part tables in between, and
    rebuilds nothing upstream; the same for a model newer than the slices it segmented. (Snakemake takes a
    small input newer but with the checksum it recorded as unchanged, so the level is edited, not touched.)"""
    import os

    work = tmp_path / "copy"
    shutil.copytree(finished_run, work, symlinks=True)
    level = work / "results" / "cell_1C" / "contact_level.csv"
    later = (work / "results" / "cell_1C" / "particles.csv").stat().st_mtime + 10
    table = pd.read_csv(level)
    table["level"] += 0.001
    table.to_csv(level, index=False)
    os.utime(level, (later, later))
    r = run_snakemake(work, "-n")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-2000:]
    assert "rule particles_part:" in out and "rule particles:" in out, out[-3000:]
    assert "results/cell_1C/parts/particles_" in out and "results/cell_C10/parts/" not in out
    assert not {"make_phantom", "import_volume", "threshold_phases"} & _jobs(r)
    # a model newer than the slices it segmented: the slices are segmented again through their slabs
    shutil.copy2(finished_run / "results" / "cell_1C" / "contact_level.csv", level)
    model = work / "results" / "model" / "maskrcnn.pt"
    os.utime(model, (later, later))
    r = run_snakemake(work, "-n")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "rule infer_slab:" in out and "rule gather_slices:" in out, out[-3000:]
    assert not {"make_phantom", "import_volume", "threshold_phases"} & _jobs(r)


def test_bad_input_a_sheet_without_labels_refuses_the_cnn_before_any_job_and_keeps_the_earlier_splits(
        finished_run, tmp_path):
    """The finished run's sheet with its labels removed and no model.checkpoint: asking for slices the
    Mask R-CNN would segment stops while the DAG is built, naming the sheet and the ways out; the earlier
    run's splits in results/annotations/ are still there, unchanged (a job started without inputs would
    fail and remove them, and the next run would retrain the model); thresholding alone still runs."""
    work = tmp_path / "copy"
    shutil.copytree(finished_run, work, symlinks=True)
    sheet = pd.read_csv(work / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    sheet["labels"] = ""
    sheet.to_csv(work / "samples.tsv", sep="\t", index=False)
    splits = sorted((work / "results" / "annotations").glob("*"))
    before = {f.name: (f.stat().st_mtime, f.stat().st_size) for f in splits}
    r = run_snakemake(work, "--forcerun", "infer_slab", "--", "results/unseen_1C/cnn/slices.h5")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "samples.tsv: no sample has label slices" in out and "model.checkpoint" in out, out[-2000:]
    assert {f.name: (f.stat().st_mtime, f.stat().st_size) for f in splits} == before and before
    r = run_snakemake(work, "-n", "results/unseen_1C/phases.h5")
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]


def _config_error(tmp_path, mutate) -> str:
    work = write_tiny_workdir(tmp_path / "bad")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    mutate(cfg, work)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_snakemake(work, "-n")
    assert r.returncode != 0
    assert not (work / "results").exists()
    return r.stdout + r.stderr


def test_bad_input_config_misspelled_key(tmp_path):
    out = _config_error(tmp_path, lambda c, w: c["threshold"].update(methd="gmm"))
    assert "methd" in out and "Additional properties are not allowed" in out


def test_bad_input_config_unknown_method(tmp_path):
    out = _config_error(tmp_path, lambda c, w: c["threshold"].update(method="kmeans"))
    assert "'kmeans' is not one of ['informed', 'gmm', 'multiotsu']" in out


def test_bad_input_config_wrong_type_and_range(tmp_path):
    out = _config_error(tmp_path, lambda c, w: c["threshold"].update(bins="many"))
    assert "'many' is not of type 'integer'" in out
    out = _config_error(tmp_path, lambda c, w: c["phantom"]["defaults"].update(voxel_size_um=-0.5))
    assert "voxel_size_um" in out and "-0.5" in out


@pytest.mark.parametrize("name", ["../evil", "a/b", "with space", "x;rm -rf", ".hidden"])
def test_bad_input_sample_name(tmp_path, name):
    def mutate(cfg, work):
        (work / "samples.tsv").write_text(f"sample\tcell\tc_rate\tvolume\n{name}\tc\t1C\tphantom\n")

    out = _config_error(tmp_path, mutate)
    assert "does not match" in out and "sample" in out


def test_bad_input_duplicate_sample(tmp_path):
    def mutate(cfg, work):
        (work / "samples.tsv").write_text("sample\tcell\tc_rate\tvolume\na\tc\t1C\tphantom\na\tc\tC/10\tphantom\n")

    assert "duplicate sample name(s) ['a']" in _config_error(tmp_path, mutate)


def test_bad_input_imported_sample_without_voxel_size(tmp_path):
    def mutate(cfg, work):
        (work / "samples.tsv").write_text("sample\tcell\tc_rate\tvolume\tdataset\nr1\tc\t1C\tvol.h5\tdata\n")

    out = _config_error(tmp_path, mutate)
    assert "sample 'r1', field 'voxel_size_um' is empty" in out


@pytest.mark.parametrize("case", ["2d", "nan", "missing_dataset"])
def test_bad_input_imported_volume_fails_with_named_file(tmp_path, case):
    work = write_tiny_workdir(tmp_path / "imp")
    src = work / "tomo.h5"
    arr = np.random.default_rng(0).normal(size=(8, 32, 32)).astype(np.float32)
    if case == "2d":
        arr = arr[0]
    if case == "nan":
        arr[3, 4, 5] = np.nan
    with h5py.File(src, "w") as f:
        f["other" if case == "missing_dataset" else "data"] = arr
    (work / "samples.tsv").write_text("sample\tcell\tc_rate\tvolume\tdataset\tvoxel_size_um\n"
                                      f"real\tc\t1C\t{src}\tdata\t0.05\n")
    r = run_snakemake(work)
    assert r.returncode != 0
    log = (work / "logs" / "import_volume" / "real.log").read_text()
    expected = {"2d": "has 2 dimensions", "nan": "(z=3, y=4, x=5) is nan", "missing_dataset": "no dataset 'data'"}
    assert str(src) in log and expected[case] in log
    assert not (work / "results" / "real" / "volume.h5").exists()


@pytest.mark.slow
def test_imported_volumes_on_any_face_are_oriented_thresholded_and_exported(tmp_path):
    """Two TIFF imports of one phantom: `conv`, 2D slices named by a glob, in the convention; `rot`, a
    multi-page TIFF with the collector on y1 and its labels likewise. `auto` finds both faces; both imports
    equal the phantom bitwise, so do their phase maps; the labels arrive in the convention; the exports
    equal the HDF5."""
    import tifffile

    from detachment.phantom import PhantomParams, generate_phantom

    from .conftest import TINY_PHANTOM
    from .test_export import read_ome_zarr

    work = write_tiny_workdir(tmp_path / "imp", export={"formats": ["tiff", "ome-zarr"]})
    ph = generate_phantom(PhantomParams(**TINY_PHANTOM), 3)
    grey = (ph.volume * 10000).astype(np.int32)
    (work / "slices").mkdir()
    for z, sl in enumerate(grey):  # one 2D TIFF per slice, zero-padded names: sorted = z order
        tifffile.imwrite(work / "slices" / f"z{z:04d}.tif", sl)
    # collector on the last y slice: file axis 1 runs towards the collector; numpy's own swapaxes
    tifffile.imwrite(work / "tomo_y1.tif", np.swapaxes(grey[::-1], 0, 1))
    tifffile.imwrite(work / "labels_y1.tif", np.swapaxes(ph.labels[::-1], 0, 1).astype(np.uint16))
    (work / "samples.tsv").write_text(
        "sample\tcell\tc_rate\tvolume\tdataset\tvoxel_size_um\tlabels\tcollector_side\n"
        "conv\tc\t1C\tslices/z*.tif\t\t0.5 0.5 0.5\t\t\n"
        "rot\tr\t1C\ttomo_y1.tif\t\t0.5\tlabels_y1.tif\tauto\n")
    targets = [f"results/{s}/{f}" for s in ("conv", "rot")
               for f in ("phases.h5", "export/phases.tif", "export/phases.ome.zarr")] + ["results/rot/labels.h5"]
    r = run_snakemake(work, *targets)
    assert r.returncode == 0, r.stderr[-2000:]
    res = work / "results"
    phases = {}
    for s, side in (("conv", "z0"), ("rot", "y1")):
        with h5py.File(res / s / "volume.h5") as f:
            assert f["volume"].attrs["collector_side"] == side
            np.testing.assert_array_equal(f["volume"][...], grey.astype(np.float32))
        with h5py.File(res / s / "phases.h5") as f:
            phases[s] = f["phases"][...]
        np.testing.assert_array_equal(tifffile.imread(res / s / "export" / "phases.tif"), phases[s])
        np.testing.assert_array_equal(read_ome_zarr(res / s / "export" / "phases.ome.zarr")[0], phases[s])
    np.testing.assert_array_equal(phases["rot"], phases["conv"])
    assert (phases["conv"] == ph.phases).mean() > 0.9
    with h5py.File(res / "rot" / "labels.h5") as f:
        np.testing.assert_array_equal(f["labels"][...], ph.labels)
    # training reads the imported labels, in the convention, never the user's file (left to import_labels)
    inputs = dag_inputs(work)
    assert {"results/rot/volume.h5", "results/rot/labels.h5"} <= inputs["annotations"]
    assert not any("labels_y1.tif" in f for files in inputs.values() for f in files)


def test_a_reused_model_segments_a_tiff_volume_with_the_collector_on_y1(tmp_path, finished_run):
    """The walkthrough's model step on its TIFF volume: the tiny run's model, copied out of results/model/
    and named by model.checkpoint, is applied as is to an unlabelled TIFF whose collector is on y1 (turned on
    import): no annotation or training job runs, the model is copied with its provenance, and the per-slice
    instances lie on the volume's grid in the convention."""
    import tifffile

    from detachment.phantom import PhantomParams, generate_phantom

    from .conftest import TINY_PHANTOM

    work = tmp_path / "reuse"
    (work / "models").mkdir(parents=True)
    for name in ("maskrcnn.pt", "maskrcnn.json"):
        shutil.copy(finished_run / "results" / "model" / name, work / "models" / name)
    model = yaml.safe_load((finished_run / "config.yaml").read_text())["model"]
    write_tiny_workdir(work, model={**model, "checkpoint": "models/maskrcnn.pt"})
    ph = generate_phantom(PhantomParams(**TINY_PHANTOM), 5)
    tifffile.imwrite(work / "tomo_y1.tif", np.swapaxes(ph.volume[::-1], 0, 1))
    (work / "samples.tsv").write_text("sample\tcell\tc_rate\tvolume\tdataset\tvoxel_size_um\tcollector_side\n"
                                      "rot\tr\t1C\ttomo_y1.tif\t\t0.5\tauto\n")
    r = run_snakemake(work, "results/rot/cnn/slices.h5")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (work / "results" / "annotations").exists() and not (work / "logs" / "train.log").exists()
    meta = json.loads((work / "results" / "model" / "maskrcnn.json").read_text())
    assert meta["reused_from"]["weights"] == "models/maskrcnn.pt"
    with h5py.File(work / "results" / "rot" / "volume.h5") as v, \
            h5py.File(work / "results" / "rot" / "cnn" / "slices.h5") as f:
        assert v["volume"].attrs["collector_side"] == "y1"
        np.testing.assert_array_equal(v["volume"][...], ph.volume)
        assert f["labels"].shape == v["volume"].shape


@pytest.mark.parametrize("row, expected", [
    ("a\tc\t1C\tv.h5\td\t0.5\ttop", "row 1 (sample 'a'), field 'collector_side' is 'top'; expected one of"),
    ("a\tc\t1C\tphantom\t\t\ty1", "row 1 (sample 'a'), field 'collector_side' is 'y1' for a phantom"),
])
def test_bad_input_sheet_collector_side(tmp_path, row, expected):
    def mutate(cfg, work):
        (work / "samples.tsv").write_text(
            f"sample\tcell\tc_rate\tvolume\tdataset\tvoxel_size_um\tcollector_side\n{row}\n")

    out = _config_error(tmp_path, mutate)
    assert "samples.tsv: " + expected in out


@pytest.mark.slow
def test_particles_export_of_the_tiny_run_equals_its_hdf5(finished_run, tmp_path):
    """The copy's cnn/particles.h5 /labels is overwritten with the planted instances first (same file,
    dataset, type and attrs), so the exports carry known particles; only the exports run."""
    import tifffile

    from .test_export import read_ome_zarr

    work = tmp_path / "copy"
    shutil.copytree(finished_run, work, symlinks=True)
    res = work / "results" / "cell_1C"
    with h5py.File(res / "truth.h5") as t, h5py.File(res / "cnn" / "particles.h5", "r+") as f:
        f["labels"][...] = t["labels"][...]
        particles = f["labels"][...]
    assert particles.max() > 0
    exports = ["results/cell_1C/export/particles.tif", "results/cell_1C/export/particles.ome.zarr"]
    r = run_snakemake(work, *exports, "--config", "export={formats: [tiff, ome-zarr]}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rule link_slices" not in r.stdout + r.stderr  # only the exports ran
    np.testing.assert_array_equal(tifffile.imread(work / exports[0]), particles)
    np.testing.assert_array_equal(read_ome_zarr(work / exports[1])[0], particles)


def test_bad_input_volume_upside_down_stops_at_the_phase_checks_naming_the_sample(tmp_path):
    """A volume with the collector at the top, declared `collector_side` z0 (not z1, which `auto` finds): the
    informed phase model finds no collector slab and the rule stops, naming the sample, the reason and the ways
    out; with gmm the map fails the plausibility checks and the rule stops, keeping the figure beside the log;
    told to warn, it goes on."""
    from detachment.phantom import PhantomParams, generate_phantom

    from .conftest import TINY_PHANTOM

    work = write_tiny_workdir(tmp_path / "flip")
    ph = generate_phantom(PhantomParams(**TINY_PHANTOM), 3)
    with h5py.File(work / "tomo.h5", "w") as f:
        f["data"] = ph.volume[::-1]
    (work / "samples.tsv").write_text("sample\tcell\tc_rate\tvolume\tdataset\tvoxel_size_um\tcollector_side\n"
                                      "real\tc\t1C\ttomo.h5\tdata\t0.5\tz0\n")
    target = "results/real/phases.h5"
    r = run_snakemake(work, target)
    assert r.returncode != 0
    log = (work / "logs" / "threshold_phases" / "real.log").read_text()
    assert "sample 'real': the phase model does not fit this volume: no Al collector slab at z = 0" in log
    assert "collector must be at z = 0" in log and "`thresholds` column" in log
    assert not (work / target).exists()
    r = run_snakemake(work, target, "--config", "threshold={method: gmm}")
    assert r.returncode != 0
    log = (work / "logs" / "threshold_phases" / "real.log").read_text()
    assert "sample 'real': implausible phase map: al_fraction_first_slice" in log
    assert "threshold.on_implausible: warn" in log and "collector must be at z = 0" in log
    assert (work / "logs" / "threshold_phases" / "real.png").read_bytes()[:4] == b"\x89PNG"
    assert not (work / target).exists()
    r = run_snakemake(work, target, "--config", "threshold={on_implausible: warn}")
    assert r.returncode == 0, r.stderr[-2000:]
    qc = pd.read_csv(work / "results" / "real" / "phase_qc.csv").set_index("check")
    assert not qc.loc["al_fraction_first_slice", "passed"]


@pytest.mark.parametrize("section,key,value,expected", [
    ("watershed", "iou_threshold", 1.5, "1.5 is greater than the maximum of 1"),
    ("link", "min_iou", 0, "0 is less than or equal to the minimum of 0"),
    ("train", "device", "tpu", "'tpu' does not match"),
    ("train", "precision", "fp16", "'fp16' is not one of"),
    ("infer", "slabs", 0, "0 is less than the minimum of 1"),
    ("augment", "scale_range", [0.8], "is too short"),
])
def test_bad_input_config_out_of_range(tmp_path, section, key, value, expected):
    out = _config_error(tmp_path, lambda c, w: c[section].update({key: value}))
    assert expected in out and key in out


#: Rules that may read a phantom's truth: generating it (its second map), the labelled cells' training labels
#: (annotations, as a user's hand labels), and evaluation against it. Nothing that measures may.
TRUTH_READERS = {"phantom_second_map", "annotations", "evaluate_linking", "validate_science", "evaluate_sample",
                 "summarize_science_validation", "robustness"}


def test_only_evaluation_rules_read_the_truth_and_unseen_cells_never_reach_training(tiny_workdir):
    sheet = pd.read_csv(tiny_workdir / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    unseen = set(sheet[sheet.labels == ""]["sample"])
    assert unseen, "the default sheet has unseen evaluation cells"
    inputs = dag_inputs(tiny_workdir)
    readers = {rule for rule, files in inputs.items() if any("/truth" in f for f in files)}
    assert readers and readers <= TRUTH_READERS, readers - TRUTH_READERS
    # the training labels are the labelled cells' only; unseen cells reach no training step in any form
    for rule in ("annotations", "augment", "train", "tune_watershed"):
        assert not any(f"results/{s}/" in f for f in inputs.get(rule, ()) for s in unseen), rule
    assert inputs["augment"] == {"results/annotations/train.h5"}
    assert "results/annotations/test.h5" not in inputs["train"]


def test_no_test_slice_and_no_unseen_cell_reaches_training(finished_run):
    from detachment.annotations import read_split

    splits = {name: read_split(finished_run / "results" / "annotations" / f"{name}.h5")
              for name in ("train", "val", "test")}
    sheet = pd.read_csv(finished_run / "samples.tsv", sep="\t", dtype=str, keep_default_na=False)
    unseen = set(sheet[sheet.labels == ""]["sample"])
    test = {(s, int(z)) for s, z in zip(splits["test"][2], splits["test"][3])}
    margin = yaml.safe_load((finished_run / "config.yaml").read_text())["annotations"]["margin_slices"]
    for name in ("train", "val"):
        assert not unseen & set(splits[name][2]), name
        assert not test & {(s, int(z)) for s, z in zip(splits[name][2], splits[name][3])}, name
    # training slices (val sits beside the test range by design) keep the margin from every test slice
    for s, z in zip(splits["train"][2], splits["train"][3]):
        assert all(not (s == ts and abs(int(z) - tz) <= margin) for ts, tz in test), (s, z)
    assert not unseen & set(splits["test"][2])
    # every phantom cell is scored, the unseen ones as out-of-sample
    table = pd.read_csv(finished_run / "results" / "validation" / "robustness_default.csv")
    split_of = dict(zip(table["sample"], table["split"]))
    assert {s for s in unseen} <= set(split_of) and all(split_of[s] == "out_of_sample" for s in unseen)
    assert all(split_of[s] == "in_sample" for s in sheet["sample"] if s not in unseen)


SHEET_HEAD = "sample\tcell\tc_rate\tvolume\tvoxel_size_um\tlabels\tpreset\n"


@pytest.mark.parametrize("row, expected", [
    ("a\tc\t1C\tphantom\t\t\tblury", "samples.tsv: sample 'a', field 'preset': unknown phantom preset 'blury'"),
    ("a\tc\t1C\tphantom\t\tlabels.h5\t", "sample 'a', field 'labels' is 'labels.h5'; a phantom takes 'truth'"),
    ("a\tc\t1C\ttomo.h5\t0.5\t\tblurry", "sample 'a', field 'preset' is set for an imported volume"),
])
def test_bad_input_sheet_presets_and_phantom_labels_are_refused(tmp_path, row, expected):
    work = write_tiny_workdir(tmp_path / "bad")
    (work / "samples.tsv").write_text(SHEET_HEAD + row + "\n")
    r = run_snakemake(work, "-n")
    assert r.returncode != 0
    assert expected in r.stdout + r.stderr


@pytest.mark.parametrize("value, expected", [
    ("0.5 0.4 0.6 0.8", "sample 'a', field 'thresholds' is [0.5, 0.4, 0.6, 0.8]; four increasing grey levels"),
    ("0.1 0.4 0.6", "'0.1 0.4 0.6' does not match"),
])
def test_bad_input_sheet_manual_thresholds_are_refused(tmp_path, value, expected):
    work = write_tiny_workdir(tmp_path / "bad")
    (work / "samples.tsv").write_text(SHEET_HEAD.replace("\n", "\tthresholds\n") + f"a\tc\t1C\tphantom\t\t\t\t{value}\n")
    r = run_snakemake(work, "-n")
    assert r.returncode != 0
    assert expected in r.stdout + r.stderr


def test_a_sheets_manual_thresholds_reach_its_phase_map(tmp_path):
    work = write_tiny_workdir(tmp_path / "manual")
    (work / "samples.tsv").write_text(SHEET_HEAD.replace("\n", "\tthresholds\n")
                                      + "a\tc\t1C\tphantom\t\t\t\t0.14, 0.41 0.6 0.8\n"
                                      + "b\tc\t1C\tphantom\t\t\t\t\n")
    r = run_snakemake(work, "results/a/phases.h5", "results/b/phases.h5")
    assert r.returncode == 0, r.stderr[-2000:]
    for sample, method in (("a", "manual"), ("b", "informed")):
        with h5py.File(work / "results" / sample / "phases.h5") as f:
            assert f["phases"].attrs["method"] == method
            if method == "manual":
                np.testing.assert_array_equal(f["phases"].attrs["thresholds"], [0.14, 0.41, 0.6, 0.8])


def test_tiny_run_linking_watershed_and_science_against_the_truth(finished_run):
    """Loose bounds on the tiny run's steps, each against the phantom's truth, that a broken step would
    fail: its CNN (about 500 training steps on the two labelled cells, scored on their test slices), the
    linking of its slices into particles on all four cells, and the science on those particles."""
    results = finished_run / "results"
    samples = ("cell_1C", "cell_C10", "unseen_1C", "unseen_C10")
    score_threshold = yaml.safe_load((finished_run / "config.yaml").read_text())["infer"]["score_threshold"]
    linking = pd.read_csv(results / "linking" / "summary.csv")
    true_input = linking[linking.input == "true_slices"]
    assert set(true_input["sample"]) == set(samples)
    # the linker on the truth's own slices rebuilds every particle
    hungarian = true_input[true_input.method == "hungarian"]
    assert (hungarian.recovered >= 0.99).all() and (hungarian.mean_iou > 0.95).all()
    # the 3D watershed baseline finds most particles
    assert (linking[linking.method == "watershed_3d"].recovered >= 0.4).all()
    summary = pd.read_csv(results / "comparison" / "metrics_summary.csv").set_index(["method", "metric"])
    assert summary.loc[("watershed", "precision"), "mean"] > 0.5
    assert summary.loc[("watershed", "sensitivity"), "mean"] > 0.5
    # the CNN finds most sections on the test slices, and the linker makes particles of them
    assert summary.loc[("cnn", "precision"), "mean"] > 0.4
    assert summary.loc[("cnn", "sensitivity"), "mean"] > 0.5
    cnn_linked = linking[(linking.input == "cnn_slices") & (linking.method == "hungarian")]
    assert set(cnn_linked["sample"]) == set(samples) and cnn_linked.recovered.mean() >= 0.3
    # science on the truth's envelopes measured on the pipeline's phase map: every particle matched,
    # detachment within 0.3 (planted means 0.45 / 0.20) and the crack surface within 30 %
    science = pd.read_csv(results / "statistics" / "validation.csv")
    true_env = science[(science.source.astype(str).str.lower() == "true") & science["sample"].isin(samples)]
    assert set(true_env["sample"]) == set(samples)
    assert (true_env.n_matched == true_env.n_truth).all() and (true_env.n_truth > 0).all()
    assert (true_env.detachment_mae < 0.3).all()
    assert (true_env.crack_surface_rel_error_of_mean.abs() < 0.3).all()
    # and on the CNN's own particles: at least 40 % of the true particles matched, detachment within 0.15
    pipeline = science[(science.source == "pipeline") & (science["sample"] == "all")].dropna(subset=["n_truth"])
    assert len(pipeline) == 1 and pipeline.n_matched.iloc[0] >= 0.4 * pipeline.n_truth.iloc[0]
    assert pipeline.detachment_mae.iloc[0] < 0.15
    for sample in samples:
        truth = pd.read_csv(results / sample / "truth_particles.csv")
        assert len(truth) > 0 and truth.detachment.between(0, 1).all()
        with h5py.File(results / sample / "cnn" / "slices.h5") as f, h5py.File(results / sample / "volume.h5") as v:
            assert f["labels"].shape == v["volume"].shape
        slices = pd.read_csv(results / sample / "cnn" / "slices.csv")
        assert {"z", "label", "score", "detection"} <= set(slices.columns)
        assert slices.score.between(0, 1).all()
        with h5py.File(results / sample / "cnn" / "slices.h5") as f:
            candidates, labels = f["candidates"][...], f["labels"][...]
        # the table describes the candidate maps: every row's area is its pixels, and detections alone are
        # painted into the labels, at or above the score threshold
        for z, rows in slices.groupby("z"):
            area = np.bincount(candidates[z].ravel(), minlength=int(rows.label.max()) + 1)
            assert (area[rows.label.to_numpy()] == rows.area_px.to_numpy()).all(), (sample, z)
        kept = slices[slices.detection]
        assert (kept.score >= score_threshold).all()
        assert bool(labels.any()) == bool(len(kept))


def test_the_trained_model_records_its_training_scale(finished_run):
    """maskrcnn.json carries the labelled volumes' in-plane voxel size and the training sections' median
    diameter, against the tiny phantom's 0.5 µm voxels and the truth's own sections on the training slices."""
    meta = json.loads((finished_run / "results" / "model" / "maskrcnn.json").read_text())
    assert meta["scale"]["voxel_size_um"] == [0.5, 0.5]
    split = pd.read_csv(finished_run / "results" / "annotations" / "split.csv")
    train = split[split.split == "train"]
    areas = []
    for sample, rows in train.groupby("sample"):
        with h5py.File(finished_run / "results" / sample / "truth.h5") as f:
            for z in rows.z:
                ids, counts = np.unique(f["labels"][z], return_counts=True)
                areas += list(counts[ids > 0])
    # the split drops sections (and their pieces) below annotations.min_instance_area_px
    min_area = yaml.safe_load((finished_run / "config.yaml").read_text())["annotations"]["min_instance_area_px"]
    areas = np.array(areas)
    expected = np.median(2 * np.sqrt(areas[areas >= min_area] / np.pi))
    assert meta["scale"]["particle_diameter_px"] == pytest.approx(expected, rel=0.05)
    assert meta["finetuned_from"] is None and "detachment" in meta["versions"]


def test_an_ambiguous_contact_reading_stops_naming_the_sample_or_is_flagged(finished_run, tmp_path):
    """The tiny run with science.contact_max_ambiguity 0 (any disagreement of the two contact readings is
    too much): contact_level stops, naming the sample and keeping its figure beside the log; told to warn it
    goes on, contact_level.csv says the reading was ambiguous and the robustness metric reads it; it records
    the edge width the reading followed and whether that warns; the statistics' table and log name each cell
    that went on so."""
    from detachment.contact_level import edge_width_from_map
    from detachment.plausibility import MAX_CHECKED_EDGE_WIDTH
    from detachment.robustness import contact_reading_plausible

    work = tmp_path / "copy"
    shutil.copytree(finished_run, work, symlinks=True)
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["science"]["contact_max_ambiguity"] = 0.0
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/cell_1C/contact_level.csv"
    spread = pd.read_csv(work / target).spread.iloc[0]
    assert abs(spread) > 0  # the tiny run's CNN particles give both readings
    r = run_snakemake(work, target)
    assert r.returncode != 0
    log = (work / "logs" / "contact_level" / "cell_1C.log").read_text()
    assert "sample 'cell_1C': the contacts cannot be read" in log and "on_ambiguous_contacts: warn" in log
    assert (work / "logs" / "contact_level" / "cell_1C.png").exists()
    cfg["science"]["on_ambiguous_contacts"] = "warn"
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_snakemake(work, target)
    assert r.returncode == 0, r.stderr[-2000:]
    level = pd.read_csv(work / target)
    assert bool(level.ambiguous.iloc[0]) and level.spread.iloc[0] == spread
    assert contact_reading_plausible(work / target) == 0.0
    assert contact_reading_plausible(finished_run / target) == 1.0  # the default bound passes the tiny run
    # the edge width the reading follows, as the phase map records it, and whether it warns on it
    width = edge_width_from_map(work / "results/cell_1C/phases.h5", work / "results/cell_1C/phase_qc.csv")
    assert np.isfinite(width) and level.edge_width.iloc[0] == pytest.approx(width)
    assert bool(level.edges_wide.iloc[0]) == (width > MAX_CHECKED_EDGE_WIDTH)
    # the statistics name each cell that went on past it, with the sample and the check
    r = run_snakemake(work, "results/statistics/detachment_by_cell.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    cells = pd.read_csv(work / "results/statistics/detachment_by_cell.csv", keep_default_na=False).set_index("cell")
    sheet = pd.read_csv(work / "samples.tsv", sep="\t")
    ambiguous = {s: bool(pd.read_csv(work / f"results/{s}/contact_level.csv").ambiguous.iloc[0]) for s in sheet["sample"]}
    assert ambiguous["cell_1C"]
    log = (work / "logs" / "statistics.log").read_text()
    for sample, cell in zip(sheet["sample"], sheet["cell"]):
        assert (f"{sample}: contacts" in cells.checks_failed[cell]) == ambiguous[sample], (sample, cells.checks_failed)
        assert (f"{cell} ({sample}: contacts" in log) == ambiguous[sample]
