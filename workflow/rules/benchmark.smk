# One job per cell: (model, method, backend, input length, output length, batch size).
rule benchmark:
    input:
        model=f"{RESULTS}/models/{{model}}/{{method}}/prunebench.json",
    output:
        f"{RESULTS}/bench/{{model}}/{{method}}/{{backend}}/in{{in_len}}_out{{out_len}}_bs{{batch}}.json",
    params:
        dtype=config["benchmark"]["dtype"],
        device=config["benchmark"]["device"],
        attn=config["benchmark"]["attn_implementation"],
        warmup_runs=config["benchmark"]["warmup_runs"],
        warmup_new_tokens=J(config["benchmark"]["warmup_new_tokens"]),
        timed_runs=config["benchmark"]["timed_runs"],
        seed=config["benchmark"]["seed"],
    resources:
        gpu=lambda wc: gpu_resources(config["benchmark"]["device"]),
    log:
        f"{RESULTS}/logs/bench/{{model}}/{{method}}/{{backend}}/in{{in_len}}_out{{out_len}}_bs{{batch}}.log",
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} benchmark model_dir=$(dirname {input.model:q}) out_path={output:q}"
        " model_name={wildcards.model} method={wildcards.method} backend={wildcards.backend}"
        " in_len={wildcards.in_len} out_len={wildcards.out_len} batch={wildcards.batch}"
        " dtype={params.dtype} device={params.device} attn_implementation={params.attn}"
        " warmup_runs={params.warmup_runs} warmup_new_tokens={params.warmup_new_tokens}"
        " timed_runs={params.timed_runs} seed={params.seed} > {log:q} 2>&1"
