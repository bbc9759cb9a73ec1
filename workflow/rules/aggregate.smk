# Tables: every cell -> benchmark.csv; every perplexity + prune report -> quality.csv.
rule aggregate:
    input:
        cells=all_cells(),
        ppl=all_ppl(),
        reports=all_reports(),
    output:
        bench=report(f"{RESULTS}/tables/benchmark.csv", caption="../report/benchmark.rst", category="Tables"),
        quality=report(f"{RESULTS}/tables/quality.csv", caption="../report/quality.rst", category="Tables"),
    params:
        families=J(pbconfig.families(config)),
    log:
        f"{RESULTS}/logs/aggregate.log",
    conda:
        "../../envs/prunebench.yaml"
    run:
        import contextlib
        from prunebench import aggregate

        with open(log[0], "w") as fh, contextlib.redirect_stderr(fh):
            aggregate.run(list(input.cells), list(input.ppl), list(input.reports), output.bench,
                          output.quality, json.loads(params.families))
