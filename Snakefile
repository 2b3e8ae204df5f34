# The workflow lives in workflow/Snakefile (the Snakemake catalog's layout); this file lets
# `snakemake` run from the top level find it (an included file's default target does not carry over).
include: "workflow/Snakefile"


localrules:
    default,


rule default:
    default_target: True
    input:
        rules.all.input,
