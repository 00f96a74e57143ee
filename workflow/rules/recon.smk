rule train_recon:
    input:
        unpack(recon_inputs),
    output:
        directory("data/recon/{exp}/seed{seed}"),
    log:
        "logs/train_recon/{exp}-seed{seed}.log",
    conda:
        "../envs/poseless.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=720,
        gpu=gpus("train_recon"),
    params:
        sections=recon_sections,
        extra=recon_extra_args,
    shell:
        stage_cmd(
            "train_recon",
            "--experiment {wildcards.exp} --seed {wildcards.seed} --dataset {input.dataset}"
            " {params.extra} --out {output}"
            " --resume-dir data/.resume/train_recon/{wildcards.exp}/seed{wildcards.seed} 2> {log}",
        )
