# Validation of config and sample sheet, wildcard constraints, input functions.
import glob
import os
import re
import sys
import zlib

import pandas as pd
from snakemake.logging import logger
from snakemake.utils import validate

# the library (src/, two levels up from this file), also where it is not installed
sys.path.insert(0, os.path.normpath(os.path.join(workflow.current_basedir, "..", "..", "src")))
from detachment.presets import preset_params  # noqa: E402
from detachment.cnn.reuse import architecture_config, check_model_meta, meta_path_for  # noqa: E402


validate(config, "../schemas/config.schema.yaml", set_default=True)

SAMPLES = pd.read_csv(
    config["samples"], sep="\t", dtype=str, comment="#", keep_default_na=False
).set_index("sample", drop=False)
validate(SAMPLES, "../schemas/samples.schema.yaml")
if SAMPLES.index.duplicated().any():
    raise ValueError(
        f"{config['samples']}: duplicate sample name(s) "
        f"{sorted(set(SAMPLES.index[SAMPLES.index.duplicated()]))}"
    )

PHANTOM_SAMPLES = [s for s in SAMPLES.index if SAMPLES.loc[s, "volume"] == "phantom"]
IMPORTED_SAMPLES = [s for s in SAMPLES.index if s not in PHANTOM_SAMPLES]
for _s in IMPORTED_SAMPLES:
    if not SAMPLES.loc[_s, "voxel_size_um"].strip():
        raise ValueError(
            f"{config['samples']}: sample '{_s}', field 'voxel_size_um' is empty; "
            "an imported volume needs its voxel size in µm (one number or 'z y x')"
        )
COLLECTOR_SIDES = ("auto", "z0", "z1", "y0", "y1", "x0", "x1")
for _row, _s in enumerate(SAMPLES.index, start=1):
    _side = SAMPLES.loc[_s, "collector_side"].strip()
    if _side not in ("",) + COLLECTOR_SIDES:
        raise ValueError(
            f"{config['samples']}: row {_row} (sample '{_s}'), field 'collector_side' is '{_side}'; "
            f"expected one of {', '.join(COLLECTOR_SIDES)} (empty = auto)"
        )
    if _s in PHANTOM_SAMPLES and _side not in ("", "auto", "z0"):
        raise ValueError(
            f"{config['samples']}: row {_row} (sample '{_s}'), field 'collector_side' is '{_side}' for a "
            "phantom; phantoms are generated with the collector at z = 0 (empty, auto or z0)"
        )
NO_MATCH = "(?!x)x"  # a regex matching nothing, for an empty sample list


def sample_regex(names):
    names = list(names)
    return "|".join(re.escape(n) for n in names) if names else NO_MATCH


wildcard_constraints:
    sample=sample_regex(SAMPLES.index),
    scatteritem=r"\d+-of-\d+",


def sample_preset(sample):
    """The phantom preset of a sheet row: its `preset` column, else config phantom.preset."""
    return SAMPLES.loc[sample, "preset"].strip() or config["phantom"]["preset"]


def phantom_all_params(sample):
    """Phantom parameters of a sample: defaults, overlaid with its preset, then its C-rate's settings."""
    rate = SAMPLES.loc[sample, "c_rate"]
    params = preset_params(
        config["phantom"]["defaults"],
        sample_preset(sample),
        config["phantom"]["presets"],
        where=f"{config['samples']}: sample '{sample}', field 'preset'",
    )
    params.update(config["phantom"]["by_c_rate"].get(rate, {}))
    return params


def phantom_params(wildcards):
    """Parameters of the phantom itself: without the `valence_*` keys of its optional second map
    (detachment.phantom.VALENCE_KEYS), so that switching the map on or retuning it does not regenerate
    the phantom and everything downstream."""
    return {
        k: v
        for k, v in phantom_all_params(wildcards.sample).items()
        if not k.startswith("valence_")
    }


def second_map_phantom_params(wildcards):
    return phantom_all_params(wildcards.sample)


def phantom_seed(wildcards):
    """Per-sample seed: the config seed mixed with a stable hash of the sample name."""
    return (int(config["seed"]) * 1_000_003 + zlib.crc32(wildcards.sample.encode())) % 2**32


def source_files(spec):
    """The files behind a sheet path: a glob of TIFF slices becomes its matches (a literal glob is
    no file Snakemake could find); a file or folder stays itself."""
    spec = spec.strip()
    if glob.has_magic(spec):
        return sorted(glob.glob(spec)) or [spec]  # no match: Snakemake names the pattern as missing
    return [spec]


def imported_volume(wildcards):
    return source_files(SAMPLES.loc[wildcards.sample, "volume"])


def threshold_settings(wildcards):
    """The `threshold` section without `on_implausible` (what to do on a failed plausibility check changes no
    phase map, so it is read by the script from the config and reruns nothing), with the sample's manual
    thresholds from the sheet where set."""
    s = {k: v for k, v in config["threshold"].items() if k != "on_implausible"}
    manual = sheet_thresholds(wildcards.sample)
    if manual:
        s["thresholds"] = manual
    return s


#: `science` keys the self-consistency check reads the particles with (as the particles rule does)
SELF_CONSISTENCY_KEYS = ("contact_probe_vox", "contact_gap_from_intensity", "contact_level", "contact_partial_volume",
                         "envelope_partition", "exclude_border")


def self_consistency_tables(samples):
    """The samples' self_consistency.csv, or none where science.self_consistency is skip."""
    if config["science"]["self_consistency"] == "skip":
        return []
    return expand("results/{sample}/self_consistency.csv", sample=samples)


def sheet_thresholds(sample):
    """The sample's manual thresholds from the sheet's `thresholds` column (grey levels; [] when empty)."""
    return [float(t) for t in re.split(r"[\s,]+", SAMPLES.loc[sample, "thresholds"].strip()) if t]


def link_settings():
    """The `link` section; min_track_score null = the inference's score_threshold (hysteresis)."""
    s = dict(config["link"])
    if s.get("min_track_score") is None:
        s["min_track_score"] = config["infer"]["score_threshold"]
    return s


def imported_fields(wildcards):
    row = SAMPLES.loc[wildcards.sample]
    return {
        "source": row["volume"].strip(),
        "dataset": row.get("dataset", "") or None,
        "voxel_size_um": row["voxel_size_um"],
        "collector_side": row["collector_side"].strip() or "auto",
        "sheet": config["samples"],
    }


def planted_valence_correlation(sample):
    """The phantom's planted density/valence Pearson r (None: no map, or not a phantom)."""
    if sample not in PHANTOM_SAMPLES:
        return None
    return phantom_all_params(sample).get("valence_density_correlation")


for _s in SAMPLES.index:
    _map, _ds = SAMPLES.loc[_s, "second_map"].strip(), SAMPLES.loc[_s, "second_map_dataset"].strip()
    if _map and _s in PHANTOM_SAMPLES:
        raise ValueError(
            f"{config['samples']}: sample '{_s}', field 'second_map' is set for a phantom; a phantom's "
            "second map is its Ni valence map, switched on by phantom.valence_density_correlation in the config"
        )
    if _ds and not _map:
        raise ValueError(
            f"{config['samples']}: sample '{_s}', field 'second_map_dataset' is set but 'second_map' is empty"
        )
PHANTOM_SECOND_MAP_SAMPLES = [
    s for s in PHANTOM_SAMPLES if planted_valence_correlation(s) is not None
]
IMPORTED_SECOND_MAP_SAMPLES = [
    s for s in IMPORTED_SAMPLES if SAMPLES.loc[s, "second_map"].strip()
]
SECOND_MAP_SAMPLES = [
    s
    for s in SAMPLES.index
    if s in PHANTOM_SECOND_MAP_SAMPLES or s in IMPORTED_SECOND_MAP_SAMPLES
]


def imported_second_map(wildcards):
    return source_files(SAMPLES.loc[wildcards.sample, "second_map"])


def imported_second_map_fields(wildcards):
    return {
        "source": SAMPLES.loc[wildcards.sample, "second_map"].strip(),
        "dataset": SAMPLES.loc[wildcards.sample, "second_map_dataset"].strip() or None,
        "sheet": config["samples"],
    }


def label_file(sample):
    """Instance labels of a labelled sample: a phantom's planted instances, or the sheet's `labels` column
    imported in the internal convention (rule import_labels)."""
    if sample in PHANTOM_SAMPLES:
        return f"results/{sample}/truth.h5"
    return f"results/{sample}/labels.h5"


def imported_labels(wildcards):
    return source_files(SAMPLES.loc[wildcards.sample, "labels"])


def imported_label_fields(wildcards):
    return {"source": SAMPLES.loc[wildcards.sample, "labels"].strip(), "sheet": config["samples"]}


for _s in PHANTOM_SAMPLES:
    sample_preset(_s)  # an unknown preset stops here, naming the sheet, sample and field
    if SAMPLES.loc[_s, "labels"].strip() not in ("", "truth"):
        raise ValueError(
            f"{config['samples']}: sample '{_s}', field 'labels' is "
            f"'{SAMPLES.loc[_s, 'labels'].strip()}'; a phantom takes 'truth' (train on its planted "
            "instances) or nothing (an unseen evaluation cell)"
        )
for _s in IMPORTED_SAMPLES:
    if SAMPLES.loc[_s, "preset"].strip():
        raise ValueError(
            f"{config['samples']}: sample '{_s}', field 'preset' is set for an imported volume; "
            "presets select phantom parameters only"
        )
for _s in SAMPLES.index:
    _t = sheet_thresholds(_s)
    if _t and any(b <= a for a, b in zip(_t, _t[1:])):
        raise ValueError(
            f"{config['samples']}: sample '{_s}', field 'thresholds' is {_t}; four increasing grey levels "
            f"are needed, one between each two phases of threshold.order {config['threshold']['order']}"
        )
# labelled samples feed annotations and training; every other sample is unseen by the model
LABELLED_SAMPLES = [s for s in SAMPLES.index if SAMPLES.loc[s, "labels"].strip()]
IMPORTED_LABELLED_SAMPLES = [s for s in LABELLED_SAMPLES if s in IMPORTED_SAMPLES]
#: phantoms no slice of which is labelled, trained on or tuned on: the out-of-sample evaluation cells
UNSEEN_PHANTOM_SAMPLES = [s for s in PHANTOM_SAMPLES if s not in LABELLED_SAMPLES]


def sample_split(sample):
    """`in_sample` for a labelled cell (its slices train the model), else `out_of_sample`."""
    return "in_sample" if sample in LABELLED_SAMPLES else "out_of_sample"


def preset_of(wildcards):
    return sample_preset(wildcards.sample)


def split_of(wildcards):
    return sample_split(wildcards.sample)


def robustness_figure_path():
    """The robustness figure: beside the table, same stem."""
    return re.sub(r"\.csv$", "", config["validation"]["table"]) + ".png"


#: the model every sample is segmented with, written by rule train or rule reuse_model
MODEL_WEIGHTS = "results/model/maskrcnn.pt"
MODEL_META = "results/model/maskrcnn.json"
MODEL_CHECKPOINT = config["model"]["checkpoint"]


def model_mode():
    """How the model comes about: `train` (from scratch on the labelled samples), `finetune` (from
    model.checkpoint on them), `reuse` (model.checkpoint as is) or `none` (no labels, no checkpoint: no CNN)."""
    if not MODEL_CHECKPOINT:
        return "train" if LABELLED_SAMPLES else "none"
    if config["model"]["finetune"]:
        if not LABELLED_SAMPLES:
            raise ValueError(
                f"config: model.finetune is true but no sample of {config['samples']} has labels "
                "(column 'labels'); add labelled samples or set model.finetune: false to apply "
                f"{MODEL_CHECKPOINT} as it is"
            )
        return "finetune"
    return "reuse"


MODEL_MODE = model_mode()
if MODEL_CHECKPOINT:
    if os.path.abspath(MODEL_CHECKPOINT).startswith(os.path.abspath(os.path.join("results", "model")) + os.sep):
        raise ValueError(
            f"config: model.checkpoint '{MODEL_CHECKPOINT}' lies in results/model/, which this run writes; "
            "copy the model's maskrcnn.pt and maskrcnn.json to another folder (e.g. models/) and name that"
        )
    if not os.path.isfile(MODEL_CHECKPOINT):
        raise ValueError(f"config: model.checkpoint '{MODEL_CHECKPOINT}' does not exist")
    # a model this code cannot rebuild, or (fine-tuning) of another architecture, stops here, naming the field
    check_model_meta(
        meta_path_for(MODEL_CHECKPOINT),
        expect_model=config["model"] if MODEL_MODE == "finetune" else None,
    )
if not LABELLED_SAMPLES and MODEL_MODE == "none":
    logger.warning(
        f"{config['samples']}: no sample has label slices (column 'labels'; 'truth' for a phantom): "
        "only import and phase thresholding can run; add labels to train the Mask R-CNN, or name a "
        "trained model in model.checkpoint"
    )


def labelled_volumes(wildcards):
    """The labelled samples' volumes (rule annotations). Without any, a target that needs the Mask R-CNN is
    refused here, while the DAG is built: a job started without inputs would fail and, failing, remove the
    splits an earlier run wrote in results/annotations/ (and so retrain its model on the next run)."""
    if not LABELLED_SAMPLES:
        raise ValueError(
            f"{config['samples']}: no sample has label slices (column 'labels'; 'truth' for a phantom), so the "
            "Mask R-CNN cannot be trained and the outputs asked for, which need it, cannot be made; add "
            "labelled samples or name a trained model in model.checkpoint"
        )
    return expand("results/{sample}/volume.h5", sample=LABELLED_SAMPLES)


def model_settings():
    """The `model` section as the architecture (ModelSettings): without checkpoint and fine-tuning keys, so
    that these leave a from-scratch training's parameters as they are."""
    return architecture_config(config["model"])


def train_settings():
    """The `train` section; when fine-tuning, with model.finetune_epochs and the learning rates scaled by
    model.finetune_lr_scale."""
    s = dict(config["train"])
    if MODEL_MODE == "finetune":
        m = config["model"]
        s["epochs"] = m["finetune_epochs"]
        s["lr_start"] = s["lr_start"] * m["finetune_lr_scale"]
        s["lr_end"] = s["lr_end"] * m["finetune_lr_scale"]
    return s


def finetune_inputs():
    """The checkpoint's files as inputs of rule train when fine-tuning, else none."""
    if MODEL_MODE != "finetune":
        return {}
    return {"init": MODEL_CHECKPOINT, "init_meta": str(meta_path_for(MODEL_CHECKPOINT))}


def final_targets():
    """Everything `all` builds: thresholding always; the CNN and science when there is a model (labels or
    model.checkpoint); the training figures when training; the activation maps, the CNN-vs-watershed
    comparison and the linking evaluation (which needs the tuned watershed) when labels exist; the
    second-map correlation when, in addition, some sample has a second map."""
    targets = expand("results/{sample}/phases.h5", sample=SAMPLES.index)
    targets += expand("results/{sample}/fig1_phases.png", sample=SAMPLES.index)
    if MODEL_MODE != "none":
        targets += [
            "results/statistics/fig4.png",
            "results/statistics/detachment_by_cell.csv",
        ]
        targets += expand("results/{sample}/damage_profile.csv", sample=SAMPLES.index)
        if MODEL_MODE in ("train", "finetune"):
            targets.append("results/model/loss_curve.png")
        if LABELLED_SAMPLES:
            targets += ["results/model/fig9a_activation.png", "results/comparison/metrics_summary.csv"]
            if PHANTOM_SAMPLES:
                targets.append("results/linking/summary.csv")
        if PHANTOM_SAMPLES:
            targets.append("results/statistics/validation.csv")
            targets.append(config["validation"]["table"])
        if SECOND_MAP_SAMPLES:
            targets.append("results/statistics/second_map_correlation.csv")
            targets.append("results/statistics/fig7_second_map.png")
    targets += export_targets()
    return targets


#: exported layer -> (HDF5 file, dataset) (rules export_tiff, export_ome_zarr)
EXPORT_SOURCES = {
    "phases": ("results/{sample}/phases.h5", "phases"),
    "particles": ("results/{sample}/cnn/particles.h5", "labels"),
}
EXPORT_SUFFIXES = {"tiff": "tif", "ome-zarr": "ome.zarr"}


def export_targets():
    """The export files of config export.formats: the phase map always, the particles when the CNN runs."""
    layers = ["phases"] + (["particles"] if LABELLED_SAMPLES else [])
    suffixes = [EXPORT_SUFFIXES[f] for f in config["export"]["formats"]]
    return expand(
        "results/{sample}/export/{layer}.{suffix}",
        sample=SAMPLES.index,
        layer=layers,
        suffix=suffixes,
    )


def export_source(wildcards):
    return EXPORT_SOURCES[wildcards.layer][0].format(sample=wildcards.sample)


def export_dataset(wildcards):
    return EXPORT_SOURCES[wildcards.layer][1]
