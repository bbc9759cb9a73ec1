# Pruning: base model + calibration windows -> pruned model folder + JSON report.
# What a job needs (calibration windows, a GPU) is what its method declares (METHOD_NEEDS).


def declares(method, what):
    """A methods entry's declaration ``what`` (for ``<method>@<budget>``: the method's); a
    wildcard that names no entry (Snakemake tries every rule on a file, e.g. the base
    folder's) gets the defaults (true)."""
    return METHOD_NEEDS.get(pbconfig.split_variant(method)[0], {}).get(what, True)


def _previous_budget(wc):
    """The report of the same method's previous budget: the budgets of one method run one
    after the other, so that the calibration scores the first computed are read from the
    score cache by the next (ancient: a rerun of one does not outdate the other)."""
    name = pbconfig.split_variant(wc.method)[0]
    if name not in config["methods"]:
        return []
    names = [v["name"] for v in pbconfig.variants(config, wc.model, [name])]
    i = names.index(wc.method) if wc.method in names else 0
    return [f"{RESULTS}/prune/{wc.model}/{names[i - 1]}.json"] if i > 0 else []


rule prune:
    input:
        base=f"{RESULTS}/models/{{model}}/base/prunebench.json",
        calibration=lambda wc: [f"{RESULTS}/data/{wc.model}/calibration.safetensors"]
        if declares(wc.method, "needs_calibration") else [],
        after=ancient(_previous_budget),
    output:
        manifest=f"{RESULTS}/models/{{model}}/{{method}}/prunebench.json",
        report=f"{RESULTS}/prune/{{model}}/{{method}}.json",
    params:
        method=lambda wc: method_spec(wc.method),
        budget=lambda wc: variant_budget(wc.model, wc.method),
        device=config["pruning"]["device"],
        dtype=config["pruning"]["dtype"],
        seed=config["pruning"]["seed"],
        score_cache=f"{RESULTS}/cache/scores",  # calibration NLLs shared between jobs (prunebench.score_cache)
    resources:
        gpu=lambda wc: gpu_resources(config["pruning"]["device"]) if declares(wc.method, "wants_gpu") else 0,
    log:
        f"{RESULTS}/logs/prune/{{model}}/{{method}}.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/prune/{{model}}/{{method}}.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "PRUNEBENCH_SCORE_CACHE={params.score_cache:q} {PY} prune base_dir=$(dirname {input.base:q}) calibration_path={input.calibration:q}"
        " out_dir=$(dirname {output.manifest:q}) report_path={output.report:q}"
        " model_name={wildcards.model} method_name={wildcards.method} method_spec={params.method:q}"
        " budget_cfg={params.budget:q} device={params.device} dtype={params.dtype} seed={params.seed}"
        " > {log:q} 2>&1"
