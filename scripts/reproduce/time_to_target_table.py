"""The table of results/time_to_target.md from its store: python3 time_to_target_table.py URI."""

import sys

import mlflow

mlflow.set_tracking_uri(sys.argv[1])
print("| seed | time to 98 % (s) | steps | stopped by | test accuracy | SM clock MHz (min-mean) | power W (mean, max) "
      "| GPU throttled |")
print("|---:|---:|---:|---|---:|---|---|---|")
for r in mlflow.search_runs(experiment_names=["vitbench-mnist"], output_format="list", order_by=["start_time"]):
    m, t = r.data.metrics, r.data.tags
    print(f"| {r.data.params['train.seed']} | {m.get('time_to_target', float('nan')):.3f} | "
          f"{m.get('steps_to_target', float('nan')):.0f} | {t['stopped_by']} | {m['final_val_acc']:.2%} | "
          f"{m.get('cond_gpu_sm_clock_mhz_min', 0):.0f}-{m.get('cond_gpu_sm_clock_mhz_mean', 0):.0f} | "
          f"{m.get('cond_gpu_power_w_mean', 0):.0f}, {m.get('cond_gpu_power_w_max', 0):.0f} | {t.get('gpu_throttled')} |")
