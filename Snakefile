# prunebench: prune LLMs to a parameter budget, then measure speed and quality.
# The Snakefile only includes the stages, validates the config and names the targets.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/source.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/perplexity.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figure.smk"
include: "workflow/rules/frontier.smk"


localrules:
    all,
    aggregate,
    figure,
    frontier,


rule all:
    input:
        f"{RESULTS}/tables/benchmark.csv",
        f"{RESULTS}/tables/quality.csv",
        f"{RESULTS}/figures/throughput_latency.png",
        f"{RESULTS}/figures/throughput_latency.pdf",
        f"{RESULTS}/tables/frontier.csv",
        f"{RESULTS}/figures/quality_speed.png",
        f"{RESULTS}/figures/quality_speed.pdf",
    default_target: True
