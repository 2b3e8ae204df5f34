# Validation of config and sample sheet, wildcard constraints, input functions.
import re
import zlib

import pandas as pd
from snakemake.logging import logger
from snakemake.utils import validate


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
NO_MATCH = "(?!x)x"  # a regex matching nothing, for an empty sample list


def sample_regex(names):
    names = list(names)
    return "|".join(re.escape(n) for n in names) if names else NO_MATCH


wildcard_constraints:
    sample=sample_regex(SAMPLES.index),
    scatteritem=r"\d+-of-\d+",


def phantom_params(wildcards):
    """Phantom parameters of a sample: defaults overlaid with its C-rate's settings."""
    rate = SAMPLES.loc[wildcards.sample, "c_rate"]
    params = dict(config["phantom"]["defaults"])
    params.update(config["phantom"]["by_c_rate"].get(rate, {}))
    return params


def phantom_seed(wildcards):
    """Per-sample seed: the config seed mixed with a stable hash of the sample name."""
    return (int(config["seed"]) * 1_000_003 + zlib.crc32(wildcards.sample.encode())) % 2**32


def imported_volume(wildcards):
    return SAMPLES.loc[wildcards.sample, "volume"]


def imported_fields(wildcards):
    row = SAMPLES.loc[wildcards.sample]
    return {
        "dataset": row.get("dataset", "") or None,
        "voxel_size_um": row["voxel_size_um"],
        "sheet": config["samples"],
    }


def label_file(sample):
    """Instance labels of a sample: the phantom's truth, or the sheet's `labels` column."""
    if sample in PHANTOM_SAMPLES:
        return f"results/{sample}/truth.h5"
    return SAMPLES.loc[sample, "labels"]


LABELLED_SAMPLES = [
    s for s in SAMPLES.index if s in PHANTOM_SAMPLES or SAMPLES.loc[s, "labels"].strip()
]
if not LABELLED_SAMPLES:
    logger.warning(
        f"{config['samples']}: no sample has label slices (column 'labels') and none is a phantom: "
        "only import and phase thresholding can run; add labels to train the Mask R-CNN"
    )


def final_targets():
    """Everything `all` builds: thresholding always; the CNN, comparison and science when labels exist."""
    targets = expand("results/{sample}/phases.h5", sample=SAMPLES.index)
    targets += expand("results/{sample}/fig1_phases.png", sample=SAMPLES.index)
    if LABELLED_SAMPLES:
        targets += [
            "results/model/loss_curve.png",
            "results/model/fig9a_activation.png",
            "results/comparison/metrics_summary.csv",
            "results/statistics/fig4.png",
        ]
        targets += expand("results/{sample}/damage_profile.csv", sample=SAMPLES.index)
        if PHANTOM_SAMPLES:
            targets.append("results/linking/summary.csv")
            targets.append("results/statistics/validation.csv")
    return targets
