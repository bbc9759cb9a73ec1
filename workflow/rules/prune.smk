# Pruning: base model + calibration windows -> pruned model folder + JSON report.
# What a job needs (calibration windows, a GPU) is what its method declares (METHOD_NEEDS).


def declares(method, what):
    """A methods entry's declaration ``what``; a wildcard that names no entry (Snakemake tries
    every rule on a file, e.g. the base folder's) gets the defaults (true)."""
    return METHOD_NEEDS.get(method, {}).get(what, True)


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
        budget=lambda wc: J(config["models"][wc.model]["budget"]),
        device=config["pruning"]["device"],
        dtype=config["pruning"]["dtype"],
        seed=config["pruning"]["seed"],
    resources:
        gpu=lambda wc: gpu_resources(config["pruning"]["device"]) if declares(wc.method, "wants_gpu") else 0,
    log:
        f"{RESULTS}/logs/prune/{{model}}/{{method}}.log",
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} prune base_dir=$(dirname {input.base:q}) calibration_path={input.calibration:q}"
        " out_dir=$(dirname {output.manifest:q}) report_path={output.report:q}"
        " model_name={wildcards.model} method_name={wildcards.method} method_spec={params.method:q}"
        " budget_cfg={params.budget:q} device={params.device} dtype={params.dtype} seed={params.seed}"
        " > {log:q} 2>&1"
