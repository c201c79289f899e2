#!/usr/bin/env bash
# Everything behind experiments/continual/README.md, in two niced one-thread streams (2 shared cores),
# seed 0 of everything first, then more seeds while time allows. Logs: /work/runs/continual/*.log.
# Re-running skips finished runs (run_suite.py) and finished side-by-side pairs; benchmarks are redone.
set -uo pipefail
cd "$(dirname "$0")/../.."
source .venv/bin/activate
export OMP_NUM_THREADS=1
R=/work/runs/continual
mkdir -p $R

(  # stream A: Split CIFAR-10 at the suite's budget (conf/experiment/split_cifar10/base.yaml), then the
   # one-epoch fp32 budget it replaced (fine-tune and EWC; bf16 vs fp32 for fine-tune and ER-500)
  C=$R/e5bf16/lambda100
  python experiments/continual/run_suite.py --suite split_cifar10 --seeds 0 --root $C
  python experiments/continual/run_suite.py --suite split_cifar10 --seeds 1 2 --root $C
  E1="data.epochs_per_task=1"
  python experiments/continual/run_suite.py --suite split_cifar10 --seeds 0 1 2 --methods finetune --root $R/proximal \
      $E1 trainer.precision=32-true
  python experiments/continual/run_suite.py --suite split_cifar10 --seeds 0 1 2 --methods ewc online_ewc --root $R/proximal \
      $E1 trainer.precision=32-true learner.method.ewc_lambda=1000
  python experiments/continual/run_suite.py --suite split_cifar10 --seeds 0 1 2 --methods finetune er_500 --root $R/bf16 \
      $E1 trainer.precision=bf16-mixed
) > $R/stream_a.log 2>&1 &

(  # stream B: Split MNIST, speed benchmarks, Avalanche side by side
  python experiments/continual/run_suite.py --suite split_mnist --seeds 0
  cd benchmarks/continual
  nice -n 10 python fisher_speed.py --images 1000 --repeats 5 > $R/fisher_speed.log 2>&1
  nice -n 10 python avalanche_side_by_side.py --suite split_cifar10 --seeds 0 1 2 --out $R/avalanche_side_by_side_cifar_e5 \
      > $R/avalanche_split_cifar10.log 2>&1
  nice -n 10 python loop_overhead.py --batches 16 --repeats 2 --methods finetune ewc er_500 derpp_500 lwf progressive \
      > $R/loop_overhead_fp32.log 2>&1
  nice -n 10 python loop_overhead.py --batches 16 --repeats 2 --methods finetune ewc er_500 derpp_500 lwf progressive \
      --precision bf16-mixed --out $R/loop_overhead_bf16.json > $R/loop_overhead_bf16.log 2>&1
  nice -n 10 python avalanche_side_by_side.py --suite split_mnist --seeds 0 1 2 > $R/avalanche_split_mnist.log 2>&1
  cd ../..
  python experiments/continual/run_suite.py --suite split_mnist --seeds 1 2
) > $R/stream_b.log 2>&1 &
wait
