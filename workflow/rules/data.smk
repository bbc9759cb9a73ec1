# Tokenisation: corpus -> calibration windows / evaluation windows for one model's tokenizer.
def _data_corpus(wc):
    """calibration: the calibration corpus; eval-<corpus>: that evaluation corpus."""
    return config["calibration"]["corpus"] if wc.split == "calibration" else wc.split[len("eval-"):]


def _data_input(wc):
    spec = config["models"][wc.model]
    if spec["weights"] == "random" and not spec.get("tokenizer"):
        return []  # random token ids: no corpus needed
    return f"{RESULTS}/corpora/{_data_corpus(wc)}.txt"


def _saved_tokenizer(wc):
    """GGUF weights: the base model folder, where the source stage saved the tokenizer it
    parsed from the file (parsing it again costs seconds per job)."""
    spec = config["models"][wc.model]
    return [f"{RESULTS}/models/{wc.model}/base/prunebench.json"] if spec["weights"] == "gguf" and not spec.get("tokenizer") else []


def _data_params(wc):
    if wc.split == "calibration":
        c = config["calibration"]
        return J({"n_samples": c["n_samples"], "seq_len": c["seq_len"], "seed": c["seed"], "max_windows": None})
    p, c = config["perplexity"], config["calibration"]
    # evaluation windows of the calibration corpus avoid every calibration window
    held_out = ({"n_samples": c["n_samples"], "seq_len": c["seq_len"], "seed": c["seed"]}
                if _data_corpus(wc) == c["corpus"] else None)
    return J({"n_samples": None, "seq_len": p["seq_len"], "seed": c["seed"],
              "max_windows": p["max_windows"], "held_out": held_out})


rule data:
    input:
        corpus=_data_input,
        tokenizer=_saved_tokenizer,
        local=lambda wc: local_files(wc.model, "data"),
    output:
        ids=f"{RESULTS}/data/{{model}}/{{split}}.safetensors",
        meta=f"{RESULTS}/data/{{model}}/{{split}}.json",
    params:
        spec=lambda wc: model_spec(wc.model, "data"),
        corpus=_data_corpus,
        settings=_data_params,
        tokenizer_dir=lambda wc, input: os.path.dirname(input.tokenizer[0]) if input.tokenizer else "",
    log:
        f"{RESULTS}/logs/data/{{model}}/{{split}}.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/data/{{model}}/{{split}}.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        "{PY} data split={wildcards.split} spec={params.spec:q} corpus_path={input.corpus:q}"
        " out_path={output.ids:q} model_name={wildcards.model} corpus_name={params.corpus}"
        " settings={params.settings:q} tokenizer_dir={params.tokenizer_dir:q} > {log:q} 2>&1"
