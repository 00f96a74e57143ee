rule prepare_data:
    input:
        params=params_stamp("prepare_data"),
        code=code_deps("prepare_data"),
    output:
        directory("data/prepared"),
    params:
        sections=stage_params("prepare_data"),
    log:
        "logs/prepare_data.log",
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        stage_cmd("prepare_data", "--out {output} 2> {log}")
