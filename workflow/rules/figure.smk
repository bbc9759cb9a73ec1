# The paper's throughput-latency grid (one row per model family, and per backend if several).
rule figure:
    input:
        f"{RESULTS}/tables/benchmark.csv",
    output:
        png=report(f"{RESULTS}/figures/throughput_latency.png", caption="../report/figure.rst", category="Figures"),
        pdf=f"{RESULTS}/figures/throughput_latency.pdf",
    log:
        f"{RESULTS}/logs/figure.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/figure.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} figure bench_csv={input:q} out_png={output.png:q} out_pdf={output.pdf:q} > {log:q} 2>&1"
