# The quality-speed frontier: perplexity against speed-up over dense at one cell (config: frontier).
rule frontier:
    input:
        quality=f"{RESULTS}/tables/quality.csv",
        speedups=f"{RESULTS}/tables/speedups.csv",
        reports=all_reports(),
    output:
        table=f"{RESULTS}/tables/frontier.csv",
        png=report(f"{RESULTS}/figures/quality_speed.png", caption="../report/frontier.rst", category="Figures"),
        pdf=f"{RESULTS}/figures/quality_speed.pdf",
    params:
        cell=J(pbconfig.frontier_cell(config)),
        variants=J(all_variants()),
        reports=lambda wc, input: J(list(input.reports)),
    log:
        f"{RESULTS}/logs/frontier.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/frontier.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} frontier quality_csv={input.quality:q} speedups_csv={input.speedups:q} reports={params.reports:q}"
        " cell={params.cell:q} variants={params.variants:q} table_out={output.table:q} out_png={output.png:q} out_pdf={output.pdf:q}"
        " > {log:q} 2>&1"
