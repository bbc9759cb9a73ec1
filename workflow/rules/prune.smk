# Pruning: base model + calibration windows -> pruned model folder + JSON report.
rule prune:
    input:
        base=f"{RESULTS}/models/{{model}}/base/prunebench.json",
        calibration=f"{RESULTS}/data/{{model}}/calibration.safetensors",
    output:
        manifest=f"{RESULTS}/models/{{model}}/{{method}}/prunebench.json",
        report=f"{RESULTS}/prune/{{model}}/{{method}}.json",
    params:
        method=lambda wc: method_spec(wc.method),
        budget=lambda wc: variant_budget(wc.model, wc.method),
        device=config["pruning"]["device"],
        dtype=config["pruning"]["dtype"],
        seed=config["pruning"]["seed"],
    resources:
        gpu=lambda wc: gpu_resources(config["pruning"]["device"]) if pbconfig.variant(config, wc.model, wc.method)["budget"] else 0,
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
