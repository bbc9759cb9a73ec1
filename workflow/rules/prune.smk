# Pruning: base model + calibration windows -> pruned model folder + JSON report.
# What a job needs (calibration windows, a GPU) is what its method declares (METHOD_NEEDS).


def declares(method, what):
    """A methods entry's declaration ``what`` (for ``<method>@<budget>``: the method's); a
    wildcard that names no entry (Snakemake tries every rule on a file, e.g. the base
    folder's) gets the defaults (true)."""
    return METHOD_NEEDS.get(pbconfig.split_variant(method)[0], {}).get(what, True)


def _budget_order(wc):
    """Scheduling priority: the budgets of one method in order (the first highest); started at
    once, those of a method that scores on calibration data still prune one after the other
    (one lock per method, prunebench.score_cache.one_at_a_time), so that the calibration scores the first computes
    are read from the score cache by the next.  A priority and a lock, not an input edge: Snakemake skips the params check of a job whose input is
    rewritten in the same run, so an ordering edge to the previous budget would let a changed
    setting of this job go unnoticed whenever that budget reruns."""
    name = pbconfig.split_variant(wc.method)[0]
    if name not in config["methods"]:
        return 0
    names = [v["name"] for v in pbconfig.variants(config, wc.model, [name])]
    return -names.index(wc.method) if wc.method in names else 0


def _pruning(wc, key):
    """``pruning.<key>`` for a job whose method reads it; for one that does not, the value it
    runs with anyway (a method that keeps the base weights loads nothing, one that does not ask
    for a GPU runs on the CPU), so that changing the setting reruns only the jobs it changes."""
    copies = declares(wc.method, "copies_weights")
    if key == "device":
        return config["pruning"]["device"] if copies and declares(wc.method, "wants_gpu") else "cpu"
    return config["pruning"][key] if copies else {"dtype": "float32", "seed": 0}[key]


rule prune:
    input:
        base=f"{RESULTS}/models/{{model}}/base/prunebench.json",
        calibration=lambda wc: [f"{RESULTS}/data/{wc.model}/calibration.safetensors"]
        if declares(wc.method, "needs_calibration") else [],
    output:
        manifest=f"{RESULTS}/models/{{model}}/{{method}}/prunebench.json",
        report=f"{RESULTS}/prune/{{model}}/{{method}}.json",
    params:
        method=lambda wc: method_spec(wc.method),
        budget=lambda wc: variant_budget(wc.model, wc.method),
        device=lambda wc: _pruning(wc, "device"),
        dtype=lambda wc: _pruning(wc, "dtype"),
        seed=lambda wc: _pruning(wc, "seed"),
        score_cache=f"{RESULTS}/cache/scores",  # calibration NLLs shared between jobs (prunebench.score_cache)
    priority: _budget_order
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
