# Perplexity of every pruned model on the evaluation windows of every evaluation corpus.
# One job per methods entry of a model: every budget of the method scored in one process
# (one interpreter start for both budgets of the demo: 12 fewer jobs); rule perplexity_budgets
# writes the variants of a method that takes a budget when its model has several budgets,
# rule perplexity one folder (dense, or a model of one budget).  A budget pruned again is
# rescored with its method's other budgets: the same numbers for those, seconds each.
# The job of an entry that keeps the base weights (dense) records every block's input on the
# windows; the others start from them where their first blocks are the base model's
# (prunebench.prefix_states: the same numbers), so it is scheduled first.
import re as _re


def _base_weights_first(wc):
    """Scheduling priority: the entries that keep the base weights (dense) first, so that the
    other entries' jobs find the block inputs they record.  A priority, not an input edge:
    Snakemake skips the params check of a job whose input is rewritten in the same run, so an
    ordering edge to dense's perplexity would let a changed setting go unnoticed whenever
    dense reruns.  A job that starts before dense's has finished scores from the tokens: the
    same numbers, more time."""
    name = pbconfig.split_variant(wc.method)[0]
    return int(name in config["methods"] and not declares(wc.method, "copies_weights"))


def _budget_suffixes(model):
    """The folder-name suffixes of a budgeted method's variants of ``model``, in the order of
    prunebench.variants.variants ('' for ``budget``, '@<tag>' for each of ``budgets``)."""
    spec = config["models"][model]
    return tuple(([""] if spec.get("budget") else [])
                 + [pbconfig.VARIANT_SEP + pbconfig.budget_tag(b) for b in spec.get("budgets") or []])


def _ppl_params(wc, input, output):
    """{folder name: {model_dir, out_path}} for every model the job scores."""
    return J({os.path.basename(os.path.dirname(m)): {"model_dir": os.path.dirname(m), "out_path": o}
              for m, o in zip(input.models, output)})


_PPL_SHELL = (
    "{PY} perplexity models={params.models:q} data_paths={params.data:q}"
    " model_name={wildcards.model} batch_size={params.batch_size}"
    " device={params.device} dtype={params.dtype} states_dir={params.states_dir:q} > {log:q} 2>&1"
)
_BUDGETED = [m for m, spec in config["methods"].items() if pbconfig.takes_budget(spec)]
#: the models of several budgets that share the most common budgets (one rule, perplexity_budgets,
#: scores all of a method's variants of one of them; any other model's, one job per folder)
_PPL_GROUPS = {}
for _m in config["models"]:
    if len(_budget_suffixes(_m)) > 1 and _BUDGETED:
        _PPL_GROUPS.setdefault(_budget_suffixes(_m), []).append(_m)
_PPL_SFX, _PPL_MODELS = max(_PPL_GROUPS.items(), key=lambda kv: len(kv[1]), default=((), []))


def _alternatives(names):
    return "|".join(_re.escape(n) for n in sorted(names, key=len, reverse=True))


if _PPL_MODELS:

    rule perplexity_budgets:
        input:
            models=[f"{RESULTS}/models/{{model}}/{{method}}{s}/prunebench.json" for s in _PPL_SFX],
            data=lambda wc: list(eval_data(wc.model).values()),
        output:
            [f"{RESULTS}/perplexity/{{model}}/{{method}}{s}.json" for s in _PPL_SFX],
        wildcard_constraints:
            model=_alternatives(_PPL_MODELS),
            method=_alternatives(_BUDGETED),
        params:
            models=_ppl_params,
            data=lambda wc: J(eval_data(wc.model)),
            batch_size=config["perplexity"]["batch_size"],
            device=config["perplexity"]["device"],
            dtype=config["perplexity"]["dtype"],
            states_dir=f"{RESULTS}/cache/states",  # the base model's block inputs (prunebench.prefix_states)
        priority: _base_weights_first
        resources:
            gpu=lambda wc: gpu_resources(config["perplexity"]["device"]),
        log:
            f"{RESULTS}/logs/perplexity/{{model}}/{{method}}.log",
        benchmark:
            paths.job_cost(f"{RESULTS}/logs/perplexity/{{model}}/{{method}}.log"),
        conda:
            "../../envs/prunebench.yaml"
        shell:
            _PPL_SHELL

    ruleorder: perplexity_budgets > perplexity


rule perplexity:
    input:
        models=[f"{RESULTS}/models/{{model}}/{{method}}/prunebench.json"],
        data=lambda wc: list(eval_data(wc.model).values()),
    output:
        f"{RESULTS}/perplexity/{{model}}/{{method}}.json",
    params:
        models=_ppl_params,
        data=lambda wc: J(eval_data(wc.model)),
        batch_size=config["perplexity"]["batch_size"],
        device=config["perplexity"]["device"],
        dtype=config["perplexity"]["dtype"],
        states_dir=f"{RESULTS}/cache/states",  # the base model's block inputs (prunebench.prefix_states)
    priority: _base_weights_first
    resources:
        gpu=lambda wc: gpu_resources(config["perplexity"]["device"]),
    log:
        f"{RESULTS}/logs/perplexity/{{model}}/{{method}}.log",
    benchmark:
        paths.job_cost(f"{RESULTS}/logs/perplexity/{{model}}/{{method}}.log"),
    conda:
        "../../envs/prunebench.yaml"
    shell:
        _PPL_SHELL
