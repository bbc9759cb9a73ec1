# Perplexity of every pruned model on the evaluation windows of every evaluation corpus (one job).
# The job of an entry that keeps the base weights (dense) records every block's input on the
# windows; the others start from them where their first blocks are the base model's
# (prunebench.prefix_states: the same numbers), so they run after it.


def _base_weights_first(wc):
    """The perplexity of the entries that keep the base weights (dense), for the other
    entries' jobs to start after (ancient: a rerun of dense does not outdate them)."""
    name = pbconfig.split_variant(wc.method)[0]
    if name in config["methods"] and not declares(wc.method, "copies_weights"):
        return []
    return [f"{RESULTS}/perplexity/{wc.model}/{v['name']}.json" for v in pbconfig.variants(config, wc.model)
            if v["method"] in config["methods"] and not declares(v["method"], "copies_weights")]


rule perplexity:
    input:
        model=f"{RESULTS}/models/{{model}}/{{method}}/prunebench.json",
        data=lambda wc: list(eval_data(wc.model).values()),
        after=ancient(_base_weights_first),
    output:
        f"{RESULTS}/perplexity/{{model}}/{{method}}.json",
    params:
        data=lambda wc: J(eval_data(wc.model)),
        batch_size=config["perplexity"]["batch_size"],
        device=config["perplexity"]["device"],
        dtype=config["perplexity"]["dtype"],
        states_dir=f"{RESULTS}/cache/states",  # the base model's block inputs (prunebench.prefix_states)
    resources:
        gpu=lambda wc: gpu_resources(config["perplexity"]["device"]),
    log:
        f"{RESULTS}/logs/perplexity/{{model}}/{{method}}.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/perplexity/{{model}}/{{method}}.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} perplexity model_dir=$(dirname {input.model:q}) data_paths={params.data:q} out_path={output:q}"
        " model_name={wildcards.model} method={wildcards.method} batch_size={params.batch_size}"
        " device={params.device} dtype={params.dtype} states_dir={params.states_dir:q} > {log:q} 2>&1"
