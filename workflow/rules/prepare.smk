rule prepare_data:
    input:
        params=params_stamp("prepare_data"),
        code=code_deps("prepare_data"),
    output:
        directory("data/prepared"),
    log:
        "logs/prepare_data.log",
    conda:
        "../envs/poseless.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        sections=stage_params("prepare_data"),
    shell:
        stage_cmd("prepare_data", "--out {output} 2> {log}")
