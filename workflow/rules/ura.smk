rule train_gan:
    input:
        dataset="data/prepared",
        params=params_stamp("train_gan"),
        code=code_deps("train_gan"),
    output:
        gan=directory("data/gan"),
        metrics="data/metrics/train_gan.json",
    log:
        "logs/train_gan.log",
    priority: URA_PRIORITY
    conda:
        "../envs/poseless.yaml"
    threads: GROUP_THREADS
    resources:
        mem_mb=8000,
        runtime=1440,
        gpu=gpus("train_gan"),
    params:
        sections=stage_params("train_gan"),
    shell:
        stage_cmd(
            "train_gan",
            "--dataset {input.dataset} --out {output.gan} --metrics {output.metrics}"
            " --resume-dir data/.resume/train_gan --workers {threads} 2> {log}",
        )


rule train_pose:
    input:
        gan="data/gan",
        dataset="data/prepared",
        params=params_stamp("train_pose"),
        code=code_deps("train_pose"),
    output:
        directory("data/pose"),
    log:
        "logs/train_pose.log",
    priority: URA_PRIORITY
    conda:
        "../envs/poseless.yaml"
    threads: GROUP_THREADS
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=gpus("train_pose"),
    params:
        sections=stage_params("train_pose"),
    shell:
        stage_cmd(
            "train_pose",
            "--gan {input.gan} --dataset {input.dataset} --out {output}"
            " --resume-dir data/.resume/train_pose --workers {threads} 2> {log}",
        )


rule predict_poses:
    input:
        unpack(predict_poses_inputs),
    output:
        poses=directory("data/poses"),
        metrics="data/metrics/predict_poses.json",
    log:
        "logs/predict_poses.log",
    priority: URA_PRIORITY
    conda:
        "../envs/poseless.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        sections=stage_params("predict_poses"),
        pose=predict_poses_pose_arg(),
    shell:
        stage_cmd(
            "predict_poses",
            "{params.pose}--gan {input.gan} --dataset {input.dataset}"
            " --out {output.poses}"
            " --metrics {output.metrics} 2> {log}",
        )
