#!/usr/bin/env bash
# DDP (2 CPU processes, gloo) against 1 process at the same global batch, and a 2-job submitit_local
# multirun; each command recorded by record_run.py. Run from the repository root:
#   bash experiments/sweeps/ddp_and_submitit.sh [ddp|submitit]
# Both DDP runs are pinned to the same core set as the caller (taskset): on one core DDP cannot be
# faster, it shows that the processes agree; the wall-time ratio is recorded either way.
set -euo pipefail
PY=${PYTHON:-python}
REC="$PY experiments/sweeps/record_run.py"
COMMON=(+experiment=omniglot/protonet_5w1s data.pools.split=vinyals data.train.way=20 model.hidden=32
        trainer.max_epochs=1 data.val_episodes=20 'data.test=[5w1s]' data.test_episodes=200 cpu_threads=1
        callbacks.progress_bar.refresh_rate=0 seed=0)
if [[ "${1:-ddp}" == ddp ]]; then
  # global batch 2 episodes a step, 30 steps: one process draws 2 a step; two processes 1 each
  $REC ddp_1proc -- $PY train.py "${COMMON[@]}" trainer=cpu data.tasks_per_batch=2 data.train_episodes=30 \
      test=false optimized_metric=null hydra.run.dir=logs/ddp_check/one_process
  $REC ddp_2proc -- $PY train.py "${COMMON[@]}" trainer=ddp_cpu data.tasks_per_batch=1 data.train_episodes=60 \
      test=false optimized_metric=null hydra.run.dir=logs/ddp_check/two_processes
  # both tested in one process on the same 200 test episodes, from their final checkpoints
  for run in one_process two_processes; do
    $REC ddp_test_$run -- $PY train.py "${COMMON[@]}" trainer=cpu train=false \
        ckpt_path=logs/ddp_check/$run/checkpoints/last.ckpt hydra.run.dir=logs/ddp_check/test_$run
  done
else
  $REC submitit_local_2jobs -- $PY train.py -m hydra/launcher=submitit_local +experiment=split_mnist/ewc \
      seed=0,1 data.train_examples_per_task=200 data.test_examples_per_task=200 learner.plot=false \
      cpu_threads=1 callbacks.progress_bar.refresh_rate=0 hydra.sweep.dir=logs/submitit_check
fi
