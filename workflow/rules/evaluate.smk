rule evaluate:
    input:
        dataset="data/prepared",
        recon="data/recon/{exp}/seed{seed}",
        params=params_stamp("evaluate"),
        code=code_deps("evaluate"),
    output:
        evaluation=directory("data/eval/{exp}/seed{seed}"),
        metrics="data/metrics/evaluate/{exp}-seed{seed}.json",
    log:
        "logs/evaluate/{exp}-seed{seed}.log",
    conda:
        "../envs/poseless.yaml"
    threads: EVAL_THREADS
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        sections=stage_params("evaluate"),
    shell:
        stage_cmd(
            "evaluate",
            "--dataset {input.dataset} --recon {input.recon} --out {output.evaluation}"
            " --metrics {output.metrics} 2> {log}",
        )


rule report:
    input:
        unpack(report_inputs),
    output:
        directory("data/report"),
    log:
        "logs/report.log",
    conda:
        "../envs/poseless.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        sections=stage_params("report"),
        extra=report_extra_args,
    shell:
        stage_cmd(
            "report",
            "--dataset {input.dataset} --eval data/eval {params.extra} --out {output} 2> {log}",
        )
