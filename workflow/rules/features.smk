rule embed_images:
    input:
        dataset="data/prepared",
        params=params_stamp("embed_images"),
        code=code_deps("embed_images"),
    output:
        directory("data/features/embeddings"),
    log:
        "logs/embed_images.log",
    conda:
        "../envs/poseless.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=gpus("embed_images"),
    params:
        sections=stage_params("embed_images"),
    shell:
        stage_cmd("embed_images", "--dataset {input.dataset} --out {output} 2> {log}")


rule build_knn:
    input:
        embeddings="data/features/embeddings",
        dataset="data/prepared",
        params=params_stamp("build_knn"),
        code=code_deps("build_knn"),
    output:
        directory("data/features/knn"),
    log:
        "logs/build_knn.log",
    conda:
        "../envs/poseless.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        sections=stage_params("build_knn"),
    shell:
        stage_cmd(
            "build_knn",
            "--embeddings {input.embeddings} --dataset {input.dataset} --out {output} 2> {log}",
        )


rule estimate_normals:
    input:
        dataset="data/prepared",
        params=params_stamp("estimate_normals"),
        code=code_deps("estimate_normals"),
    output:
        directory("data/features/normals"),
    log:
        "logs/estimate_normals.log",
    conda:
        "../envs/poseless.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=gpus("estimate_normals"),
    params:
        sections=stage_params("estimate_normals"),
    shell:
        stage_cmd(
            "estimate_normals", "--dataset {input.dataset} --out {output} 2> {log}"
        )
