# Poseless: one workflow of reproducible stages. Thin on purpose: the rules live
# in workflow/rules/, the computation in src/poseless/, the stage CLIs in stages/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


validate(config, "workflow/schemas/params.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/ura.smk"
include: "workflow/rules/recon.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
