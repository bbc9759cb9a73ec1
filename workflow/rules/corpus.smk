# Corpus preparation: a named text corpus (config: corpora.<name>) -> plain text + metadata.
def _local_text(wc):
    """A ``files`` corpus's files (globs expanded): an edited or newly matched file reruns it."""
    spec = config["corpora"][wc.corpus]
    if spec.get("source") != "files":
        return []
    from prunebench.corpus.files import resolve_files

    return [literal(p) for p in resolve_files(spec["paths"])]


rule corpus:
    input:
        _local_text,
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
