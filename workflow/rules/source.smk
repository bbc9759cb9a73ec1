# Weight source -> results/models/<model>/base (GGUF dequantised once; random: config only).
rule source:
    input:
        lambda wc: local_files(wc.model, "source"),
    output:
        manifest=f"{RESULTS}/models/{{model}}/base/prunebench.json",
    params:
        spec=lambda wc: model_spec(wc.model, "source"),
        dtype=lambda wc: config["models"][wc.model]["dtype"],
    log:
        f"{RESULTS}/logs/source/{{model}}.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/source/{{model}}.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} source spec={params.spec:q} out_dir=$(dirname {output.manifest:q})"
        " model_name={wildcards.model} dtype={params.dtype} > {log:q} 2>&1"
