# One job per cell: (model, method, backend, input length, output length, batch size).
rule benchmark:
    input:
        model=f"{RESULTS}/models/{{model}}/{{method}}/prunebench.json",
    output:
        paths.cell_path(RESULTS, paths.WILDCARDS),
    params:
        dtype=config["benchmark"]["dtype"],
        device=config["benchmark"]["device"],
        attn=config["benchmark"]["attn_implementation"],
        timing=J(config["benchmark"]["timing"]),
        seed=config["benchmark"]["seed"],
        cache_dir=CACHE,
    # a cell never shares its host with another job of the workflow (bench_threads)
    threads: lambda wc: bench_threads(config["benchmark"]["device"])
    resources:
        gpu=lambda wc: gpu_resources(config["benchmark"]["device"]),
    log:
        paths.cell_log(RESULTS, paths.WILDCARDS),
    benchmark:
        paths.job_cost(paths.cell_log(RESULTS, paths.WILDCARDS)),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} benchmark model_dir=$(dirname {input.model:q}) out_path={output:q}"
        " model_name={wildcards.model} method={wildcards.method} backend={wildcards.backend}"
        " in_len={wildcards.in_len} out_len={wildcards.out_len} batch={wildcards.batch}"
        " dtype={params.dtype} device={params.device} attn_implementation={params.attn}"
        " timing={params.timing:q} seed={params.seed} threads={threads}"
        " cache_dir={params.cache_dir:q} > {log:q} 2>&1"
