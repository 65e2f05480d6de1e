wildcard_constraints:
    dataset="[^/]+",
    paramset="[^/]+",
    sub="[^/]+",


def _dataset_input(wildcards):
    spec = DATASETS[wildcards.dataset]
    # built-in and registered (data:NAME, fetched into scclust's cache) inputs are no files here
    return [] if str(spec).startswith(("builtin:", "data:")) else [spec]


rule cluster:
    """One scclust run: a dataset with one parameter set."""
    input:
        data=_dataset_input,
        config=config["base_config"],
    output:
        manifest=f"{OUTDIR}/{{dataset}}/{{paramset}}/manifest.json",
        h5ad=f"{OUTDIR}/{{dataset}}/{{paramset}}/clustered.h5ad",
    params:
        spec=lambda wc: DATASETS[wc.dataset],
        sets=lambda wc: set_flags(PARAMSETS[wc.paramset]),
        outdir=lambda wc, output: str(Path(output.manifest).parent),
    log:
        f"{OUTDIR}/logs/cluster/{{dataset}}.{{paramset}}.log",
    shell:
        "scclust run {input.config} --input '{params.spec}' --outdir {params.outdir} {params.sets} > {log} 2>&1"


rule subcluster:
    """A named subclustering config run on a clustered result."""
    input:
        h5ad=f"{OUTDIR}/{{dataset}}/{{paramset}}/clustered.h5ad",
        config=lambda wc: SUBCLUSTERINGS[wc.sub]["config"],
    output:
        manifest=f"{OUTDIR}/{{dataset}}/{{paramset}}/sub_{{sub}}/manifest.json",
    params:
        sets=lambda wc: set_flags(SUBCLUSTERINGS[wc.sub].get("set")),
        outdir=lambda wc, output: str(Path(output.manifest).parent),
    log:
        f"{OUTDIR}/logs/subcluster/{{dataset}}.{{paramset}}.{{sub}}.log",
    shell:
        "scclust run {input.config} --input {input.h5ad} --outdir {params.outdir} {params.sets} > {log} 2>&1"
