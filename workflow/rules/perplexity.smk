# Perplexity of every pruned model on the evaluation windows of every evaluation corpus (one job).
rule perplexity:
    input:
        model=f"{RESULTS}/models/{{model}}/{{method}}/prunebench.json",
        data=lambda wc: list(eval_data(wc.model).values()),
    output:
        f"{RESULTS}/perplexity/{{model}}/{{method}}.json",
    params:
        data=lambda wc: J(eval_data(wc.model)),
        batch_size=config["perplexity"]["batch_size"],
        device=config["perplexity"]["device"],
        dtype=config["perplexity"]["dtype"],
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
        " device={params.device} dtype={params.dtype} > {log:q} 2>&1"
