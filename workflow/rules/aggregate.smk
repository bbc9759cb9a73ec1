# Tables: every cell -> benchmark.csv and speedups.csv; every perplexity + prune report -> quality.csv.
rule aggregate:
    input:
        cells=all_cells(),
        ppl=all_ppl(),
        reports=all_reports(),
    output:
        bench=report(f"{RESULTS}/tables/benchmark.csv", caption="../report/benchmark.rst", category="Tables"),
        quality=report(f"{RESULTS}/tables/quality.csv", caption="../report/quality.rst", category="Tables"),
        speedups=f"{RESULTS}/tables/speedups.csv",
    params:
        families=J(pbconfig.families(config)),
        variants=J(all_variants()),  # folder name -> method and budget columns
        expect=J(pbconfig.cell_expectations(config)),  # what every cell must record
        cells=lambda wc, input: J(list(input.cells)),
        ppl=lambda wc, input: J(list(input.ppl)),
        reports=lambda wc, input: J(list(input.reports)),
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/aggregate.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} aggregate cells={params.cells:q} ppls={params.ppl:q} reports={params.reports:q}"
        " bench_out={output.bench:q} quality_out={output.quality:q} speedups_out={output.speedups:q}"
        " families={params.families:q} expect={params.expect:q} variants={params.variants:q}"
        " > {log:q} 2>&1"
