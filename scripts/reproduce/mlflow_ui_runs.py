"""The experiment id and the run ids of the screenshots' suite, for scripts/reproduce/mlflow_ui.sh."""

import json

import mlflow

mlflow.set_tracking_uri("sqlite:///mlflow.db")
exp = mlflow.get_experiment_by_name("attention-ui")
runs = mlflow.search_runs([exp.experiment_id], "tags.kind = 'suite-run'")
print(exp.experiment_id, json.dumps(list(runs["run_id"])).replace(" ", ""))
