"""Train one MuMo stage with DeepSpeed (a thin shim over ``mumo_ds.training.trainer``).

    OMP_NUM_THREADS=1 deepspeed --num_gpus 2 train.py --stage 1 --data data/sample
    OMP_NUM_THREADS=1 deepspeed --num_gpus 2 train.py --stage 2 --data data/sample
    torchrun --nproc_per_node 2 train.py --stage 2 --ds-config ds_configs/zero3.json --resume

`python train.py --help` lists every option.
"""

import sys

if __name__ == "__main__":
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        from mumo_ds.training.config import build_parser

        build_parser().print_help()
        sys.exit(0)
    from mumo_ds.training.preemption import Preemption

    preemption = Preemption()  # before the heavy imports below: a preemption signal during them still requeues
    from mumo_ds.training.trainer import main

    main(preemption=preemption)
