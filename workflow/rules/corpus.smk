# Corpus preparation: a named text corpus (config: corpora.<name>) -> plain text + metadata.
rule corpus:
    output:
        text=f"{RESULTS}/corpora/{{corpus}}.txt",
        meta=f"{RESULTS}/corpora/{{corpus}}.json",
    params:
        spec=lambda wc: J(config["corpora"][wc.corpus]),
    log:
        f"{RESULTS}/logs/corpus/{{corpus}}.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/corpus/{{corpus}}.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} corpus spec={params.spec:q} out_text={output.text:q} out_meta={output.meta:q}"
        " cache_dir={CACHE}/corpora > {log:q} 2>&1"
