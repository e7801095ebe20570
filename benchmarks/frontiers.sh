#!/usr/bin/env bash
# The privacy/utility frontiers of docs/frontiers.md (issue 11): every defense swept over its strength.
#
#   benchmarks/frontiers.sh SETTING [OUT_ROOT [TFMI OPTIONS...]]
#       SETTING: location30-defaults | location30-paper | location30-paper-dp30 | cifar10
#
# Options after OUT_ROOT go to `tfmi benchmark` as they are: `--shard 0/2` and `--shard 1/2` in two
# processes share the cache (then run once without --shard to write the results), `--executor ray`
# spreads the cells over a Ray cluster.
#
# Each setting is one `tfmi benchmark` command; finished cells are cached under OUT_ROOT/SETTING, so
# re-running continues where a run stopped. Data come from TFMI_DATA_DIR (default ../shared/data).
# Cost on 2 CPU cores: results.json records each cell's seconds and the total.
set -euo pipefail
setting=${1:?usage: benchmarks/frontiers.sh location30-defaults|location30-paper|location30-paper-dp30|cifar10 [OUT_ROOT]}
root=${2:-tfmi-frontiers}
here=$(cd "$(dirname "$0")/.." && pwd)
tfmi=${TFMI:-$here/.venv/bin/tfmi}
export TFMI_DATA_DIR=${TFMI_DATA_DIR:-$here/../shared/data}

common=(--attacks all --defenses none)
case $setting in
  location30-defaults)
    args=(--dataset location30 --seeds 3 --shadows 8
          --sweep mmd:mmd-weight=0.5,2,6.5,20 --sweep mmd-mixup:mmd-weight=0.5,2,6.5,20
          --sweep dp-sgd:noise-multiplier=0.3,0.5,1,2 --sweep advreg:adv-weight=0.3,1,3
          --sweep relaxloss:relax-alpha=0.5,1,2) ;;
  location30-paper)
    # lambda 10 between the authors' 6.5 (the gap stays at 0.40) and 20 (2 of 3 targets diverge); no 0.1,
    # which trains like lambda 0.5 and the undefended model
    args=(--dataset location30 --preset paper --seeds 3 --shadows 8
          --sweep mmd:mmd-weight=0.5,2,6.5,10,20 --sweep mmd-mixup:mmd-weight=0.5,2,6.5,10,20
          --sweep dp-sgd:noise-multiplier=0.3,0.5,1,2 --sweep advreg:adv-weight=0.3,1,3
          --sweep relaxloss:relax-alpha=0.5,1,2) ;;
  location30-paper-dp30)
    # DP-SGD on the authors' network and optimizer, with a third of their epochs: 100 epochs of SGD 0.1
    # with momentum memorize through noise 0.3 (train 0.998, epsilon 493); compare with `tfmi compare`
    args=(--dataset location30 --preset paper --epochs 30 --seeds 3 --shadows 8
          --sweep dp-sgd:noise-multiplier=0.3,0.5,1,2) ;;
  cifar10)
    # reduced for 2 CPU cores (about 4.5 h on two shards): per epoch on 2,500 members, the small CNN
    # takes ~3.5 s, DP-SGD ~12 s, so 5,000 members and 30 epochs would take ~11 h
    args=(--dataset cifar10 --model cnn --target-size 2500 --epochs 20 --seeds 2 --shadows 4
          --sweep mmd:mmd-weight=0.05,0.25,1,4 --sweep mmd-mixup:mmd-weight=0.05,0.25,1,4
          --sweep dp-sgd:noise-multiplier=0.3,0.5,1,2 --sweep advreg:adv-weight=0.3,1,3
          --sweep relaxloss:relax-alpha=0.5,1,2) ;;
  *) echo "unknown setting $setting" >&2; exit 2 ;;
esac
exec "$tfmi" benchmark "${common[@]}" "${args[@]}" --out "$root/$setting" "${@:3}"
